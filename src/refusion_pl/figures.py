"""Figures a person can open: degraded | restored | target rows with their PSNR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from refusion_pl.files import atomic_write
from refusion_pl.lit.base import match_size
from refusion_pl.lit.metrics import side_by_side, view_metrics


def _psnr(a: torch.Tensor, b: torch.Tensor, views: int = 1) -> float:
    """PSNR of one image; for stereo samples the mean over both views."""
    return float(view_metrics(a[None], b[None], views=views)["psnr"][0])


def _to_numpy(image: torch.Tensor) -> Any:
    image = image.detach().float().clamp(0, 1).cpu()
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


@torch.no_grad()
def save_restoration_figure(module: Any, datamodule: Any, path: Path, cfg: Any) -> Path:
    """Restore up to ``cfg.num_images`` held-out test images and save a before | after | target grid (PNG).

    Stereo samples show their views side by side; bokeh samples are restored with their lens scalars.
    """
    views = int(getattr(module, "views", 1))
    datamodule.setup("test")
    module.eval()
    rows = []
    for batch in datamodule.test_dataloader():
        gt = batch["gt"].to(module.device)
        lq = match_size(batch["lq"].to(module.device), gt.shape[-2:])
        generator = torch.Generator(device=module.device).manual_seed(len(rows))
        scalars = batch.get("cond_scalars")
        restored = module.restore(
            lq,
            steps=cfg.sample_steps,
            generator=generator,
            cond_scalars=None if scalars is None else scalars.to(module.device),
        )
        for index in range(gt.shape[0]):
            rows.append((batch["name"][index], lq[index], restored[index], gt[index]))
        if len(rows) >= cfg.num_images:
            break
    rows = rows[: cfg.num_images]
    fig = Figure(figsize=(9, 3 * len(rows)))  # no pyplot: no GUI backend, no global state
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for row, (name, lq, restored, gt) in zip(axes, rows):
        titles = (
            f"degraded {name}\nPSNR {_psnr(lq, gt, views):.2f} dB",
            f"restored\nPSNR {_psnr(restored, gt, views):.2f} dB",
            "target",
        )
        for ax, image, title in zip(row, (lq, restored, gt), titles):
            image = side_by_side(image, views)
            ax.imshow(_to_numpy(image), cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path
