"""What both training stages share: optimiser set-up, batch preparation, metrics, image panels, and what a
checkpoint needs beyond the weights to resume bit-exactly (RNG states) and safely (the run's settings)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from refusion_pl.config import ConfigError
from refusion_pl.lit.metrics import RestorationMetrics, lpips_status
from refusion_pl.lit.optim import build_optimizer, build_scheduler

CHECKPOINT_KEY = "refusion_pl"
RNG_KEY = "rng_states"
# Settings a resumed run must share with its checkpoint (the SDE is checked by the diffusion stage).
RESUME_KEYS = ("task", "model", "net")
DEFAULT_OPTIM = {"name": "adamw", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0}
DEFAULT_SCHEDULER = {"name": "constant"}


def match_size(lq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample an LQ image to the GT size (super-resolution: the SDE's mean must have the target's size)."""
    if tuple(lq.shape[-2:]) == tuple(size):
        return lq
    return F.interpolate(lq, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def panel(*images: torch.Tensor) -> torch.Tensor:
    """Side-by-side panel (C,H,sum W) of same-height images, for loggers and figures."""
    height = images[-1].shape[-2:]
    return torch.cat([match_size(img[None], height)[0] for img in images], dim=-1).clamp(0, 1)


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}.{key}"))
        return out
    return {prefix: list(node) if isinstance(node, tuple) else node}


def run_config_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key=wanted (checkpoint: stored)`` for every task/model/network setting on which two run configs differ."""
    differences = []
    for group in RESUME_KEYS:
        old, new = _leaves(stored.get(group), group), _leaves(wanted.get(group), group)
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                differences.append(f"{key}={new.get(key)!r} (checkpoint: {old.get(key)!r})")
    return differences


def capture_rng_states() -> dict[str, Any]:
    """Every global random state, as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": [int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    has_gauss, cached = states["numpy_gauss"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], has_gauss, cached)
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RestorationModule(pl.LightningModule):
    """Base class: plain-dict hyper-parameters only (checkpoints load with ``weights_only=True``)."""

    flops_per_batch: int | None = None  # not measured: Lightning's ThroughputMonitor then logs no FLOP rates

    def __init__(self, crop_border: int) -> None:
        super().__init__()
        self.val_metrics = RestorationMetrics(crop=crop_border)
        self.run_config: dict[str, Any] | None = None
        self.validation_panels: list[torch.Tensor] = []
        self.panel_key = "val/panels"
        self._rng_to_restore: dict[str, Any] | None = None

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        scaled = self._trainer is not None and str(self.trainer.precision).startswith("16")  # fp16 GradScaler
        optimizer = build_optimizer(params, hp.optim or DEFAULT_OPTIM, lr=hp.get("lr"), grad_scaling=scaled)
        scheduler = build_scheduler(optimizer, hp.scheduler or DEFAULT_SCHEDULER, hp.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @staticmethod
    def split_batch(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        gt = batch["gt"]
        return match_size(batch["lq"], gt.shape[-2:]), gt

    def on_fit_start(self) -> None:
        enabled, message = lpips_status()
        if self.trainer.is_global_zero and not enabled:
            print(message)

    def on_train_start(self) -> None:
        """Put back the random states of the checkpoint, after the data loaders were built, so a resumed run
        draws the same timesteps and noise as an uninterrupted one."""
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self.validation_panels = []

    def log_metrics(self, prefix: str, metrics: RestorationMetrics) -> None:
        """Log the torchmetrics objects themselves: Lightning computes each (one sync across devices; a value
        already computed this epoch comes from torchmetrics' cache) and resets it after the epoch."""
        for name, metric in metrics.updated().items():
            self.log(f"{prefix}/{name}", metric, prog_bar=name == "psnr")

    def add_panel(self, *images: torch.Tensor) -> None:
        if len(self.validation_panels) < 4:
            self.validation_panels.append(panel(*(img.detach().float().cpu() for img in images)))

    def log_panels(self, key: str) -> None:
        """Name this validation's LQ | restored | GT panels; the ``ImagePanels`` callback sends them to loggers."""
        self.panel_key = key

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the composed run config (plain containers) and the random states next to the weights."""
        checkpoint[CHECKPOINT_KEY] = {"kind": self.kind, "config": self.run_config}
        checkpoint[RNG_KEY] = capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: refuse a checkpoint of another task, model or network (unless ``resume_strict=false``)."""
        self._rng_to_restore = checkpoint.get(RNG_KEY)
        stored = (checkpoint.get(CHECKPOINT_KEY) or {}).get("config")
        wanted = self.run_config
        if not stored or not wanted or not wanted.get("resume_strict", True):
            return
        differences = run_config_differences(stored, wanted)
        if differences:
            raise ConfigError(
                f"cannot resume from a checkpoint of another run: {', '.join(differences)}; "
                "pass matching settings, another ckpt_path, or resume_strict=false to resume anyway"
            )

    kind = "base"
