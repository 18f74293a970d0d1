"""What both training stages share: optimiser set-up, batch preparation, metric and image-panel logging."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from refusion_pl.lit.metrics import RestorationMetrics, lpips_status
from refusion_pl.lit.optim import build_optimizer, build_scheduler

CHECKPOINT_KEY = "refusion_pl"
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


class RestorationModule(pl.LightningModule):
    """Base class: plain-dict hyper-parameters only (checkpoints load with ``weights_only=True``)."""

    def __init__(self, crop_border: int) -> None:
        super().__init__()
        self.val_metrics = RestorationMetrics(crop=crop_border)
        self.run_config: dict[str, Any] | None = None
        self._panels: list[torch.Tensor] = []

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, hp.optim or DEFAULT_OPTIM, lr=hp.get("lr"))
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

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self._panels = []

    def log_metrics(self, prefix: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.log(f"{prefix}/{name}", value, prog_bar=name == "psnr", sync_dist=True)

    def add_panel(self, *images: torch.Tensor) -> None:
        if len(self._panels) < 4:
            self._panels.append(panel(*(img.detach().float().cpu() for img in images)))

    def log_panels(self, key: str) -> None:
        """Send LQ | restored | GT panels to every logger that takes images (W&B, TensorBoard)."""
        if not self._panels or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        for logger in self.trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(key=key, images=list(self._panels), step=self.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                for index, image in enumerate(self._panels):
                    logger.experiment.add_image(f"{key}/{index}", image, self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the composed run config (plain containers) next to the weights."""
        checkpoint[CHECKPOINT_KEY] = {"kind": self.kind, "config": self.run_config}

    kind = "base"
