"""Restoration metrics as papers report them: PSNR/SSIM on RGB and on Y (with a border crop), LPIPS if possible.

PSNR and SSIM come from torchmetrics. Y is the ITU-R BT.601 luma in studio range (16-235), the convention of
MATLAB's ``rgb2ycbcr`` that restoration papers use, so numbers are comparable with published tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.functional.image import structural_similarity_index_measure

from refusion_pl.extras import install_line

LPIPS_WEIGHT_FILES = ("alexnet-owt-7be5be79.pth",)


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-range luma of an RGB image in [0, 1], returned in [0, 1] (shape B,1,H,W)."""
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def crop_border(image: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on every side (papers do this for SR, where borders are ill-posed)."""
    if border <= 0:
        return image
    return image[..., border:-border, border:-border]


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can run offline here, and why not. Nothing is ever downloaded."""
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # torchvision from PyPI may fail to import next to a CPU torch build
        return False, (
            f"LPIPS disabled: torchvision is not importable ({type(err).__name__}: {err}); install the "
            f"torchvision build of your torch ({install_line('lpips')}, or see the README's optional features)"
        )
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not any((checkpoints / name).is_file() for name in LPIPS_WEIGHT_FILES):
        return (
            False,
            f"LPIPS disabled: backbone weights not found locally in {checkpoints} (no download at run time)",
        )
    return True, "LPIPS enabled (AlexNet backbone from the local torch hub cache)"


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of each image in the batch (data range 1), shape (B,)."""
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1).clamp_min(1e-20)
    return (-10.0 * torch.log10(mse)).float()


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image (Gaussian 11x11, sigma 1.5), averaged over the valid region as in Wang et al.

    torchmetrics averages its SSIM map over the reflect-padded border too; cropping the 5-pixel half window
    gives the reference definition (and scikit-image's value).
    """
    _, ssim_map = structural_similarity_index_measure(
        pred.double(), target.double(), data_range=1.0, reduction="none", return_full_image=True
    )
    half = 5
    if min(ssim_map.shape[-2:]) > 2 * half:
        ssim_map = ssim_map[..., half:-half, half:-half]
    return ssim_map.flatten(1).mean(1).float()


def image_metrics(pred: torch.Tensor, target: torch.Tensor, crop: int = 0) -> dict[str, torch.Tensor]:
    """Per-image PSNR/SSIM on RGB and (for colour images) on Y, after a ``crop`` border crop."""
    pred = crop_border(pred.float().clamp(0, 1), crop)
    target = crop_border(target.float().clamp(0, 1), crop)
    out = {"psnr": psnr_per_image(pred, target), "ssim": ssim_per_image(pred, target)}
    if pred.shape[1] == 3:
        pred_y, target_y = rgb_to_y(pred), rgb_to_y(target)
        out["psnr_y"] = psnr_per_image(pred_y, target_y)
        out["ssim_y"] = ssim_per_image(pred_y, target_y)
    return out


#: Names of the two views of a stereo sample (left, then right on channels), for per-view metrics.
VIEW_NAMES = ("left", "right")


def split_views(image: torch.Tensor, views: int) -> list[torch.Tensor]:
    """``[B, V*C, H, W]`` -> V tensors ``[B, C, H, W]`` (stereo samples stack their views on channels)."""
    return list(image.chunk(views, dim=1)) if views > 1 else [image]


def side_by_side(image: torch.Tensor, views: int) -> torch.Tensor:
    """``[V*C, H, W]`` -> ``[C, H, V*W]``: a stereo sample shown as its views next to each other."""
    return torch.cat(image.chunk(views, dim=0), dim=-1) if views > 1 else image


def view_metrics(
    pred: torch.Tensor, target: torch.Tensor, crop: int = 0, views: int = 1
) -> dict[str, torch.Tensor]:
    """``image_metrics`` per image; for stereo samples the mean over both views (what the stereo SR challenge
    reports) plus ``psnr_left``, ``ssim_left``, ``psnr_right``, ``ssim_right``."""
    if views == 1:
        return image_metrics(pred, target, crop)
    per_view = [
        image_metrics(p, t, crop) for p, t in zip(split_views(pred, views), split_views(target, views))
    ]
    out = {name: torch.stack([m[name] for m in per_view]).mean(0) for name in per_view[0]}
    for view, metrics in zip(VIEW_NAMES, per_view):
        out[f"psnr_{view}"], out[f"ssim_{view}"] = metrics["psnr"], metrics["ssim"]
    return out


LPIPS_CHILD = "lpips."


def _drop_lpips_weights(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook: the LPIPS backbone is a fixed metric network, never part of a checkpoint."""
    for key in [k for k in state_dict if k.startswith(prefix + LPIPS_CHILD)]:
        del state_dict[key]


def _ignore_lpips_keys(module: nn.Module, incompatible: Any) -> None:
    """Load post-hook: neither a missing LPIPS backbone nor one stored by an older checkpoint is an error, so
    checkpoints load with ``strict=True`` whether LPIPS was available where they were made or not."""
    for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
        keys[:] = [k for k in keys if not (k.startswith(LPIPS_CHILD) or f".{LPIPS_CHILD}" in k)]


class RestorationMetrics(nn.Module):
    """Means over images of PSNR/SSIM (RGB and Y, after ``crop``) and optional LPIPS; synced across devices.

    The LPIPS network stays out of ``state_dict()`` and is ignored when loading one.
    """

    NAMES = ("psnr", "ssim", "psnr_y", "ssim_y")

    def __init__(self, crop: int = 0, use_lpips: bool = True, views: int = 1) -> None:
        super().__init__()
        self.crop, self.views = crop, views
        names = self.NAMES + tuple(
            f"{m}_{v}" for v in VIEW_NAMES[:views] for m in ("psnr", "ssim") if views > 1
        )
        self.means = nn.ModuleDict({name: MeanMetric() for name in names})
        self.lpips = None
        if use_lpips and lpips_status()[0]:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
        self.register_state_dict_post_hook(_drop_lpips_weights)
        self.register_load_state_dict_post_hook(_ignore_lpips_keys)

    @property
    def count(self) -> int:
        return int(self.means["psnr"].update_count)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        values = view_metrics(pred, target, self.crop, self.views)
        for name, value in values.items():
            self.means[name].update(value)
        pred, target = torch.cat(split_views(pred, self.views)), torch.cat(split_views(target, self.views))
        if self.lpips is not None and pred.shape[1] == 3:
            self.lpips.update(
                crop_border(pred.clamp(0, 1), self.crop), crop_border(target.clamp(0, 1), self.crop)
            )
        return values

    def updated(self) -> dict[str, Metric]:
        """The torchmetrics objects that saw images, by name: log these (each syncs across devices once)."""
        out: dict[str, Metric] = {name: metric for name, metric in self.means.items() if metric.update_count}
        if self.lpips is not None and self.lpips.update_count:
            out["lpips"] = self.lpips
        return out

    def compute(self) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in self.updated().items()}

    def reset(self) -> None:
        for metric in self.means.values():
            metric.reset()
        if self.lpips is not None:
            self.lpips.reset()
