"""Stage 1: the U-Net autoencoder that latent Refusion diffuses in (method page, section 3)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from refusion_pl.lit.base import RestorationModule
from refusion_pl.lit.metrics import RestorationMetrics
from refusion_pl.models import UNetAutoencoder


def autoencoder_losses(
    autoencoder: UNetAutoencoder, lq: torch.Tensor, gt: torch.Tensor, reg_weight: float
) -> dict[str, torch.Tensor]:
    """The stage-1 objective: reconstruct LQ, decode the GT latent through the LQ skips, keep latents image-like."""
    latent_lq, hidden_lq = autoencoder.encode(lq)
    latent_gt, _ = autoencoder.encode(gt)
    loss_rec = F.l1_loss(autoencoder.decode(latent_lq, hidden_lq), lq)
    loss_rep = F.l1_loss(autoencoder.decode(latent_gt, hidden_lq), gt)
    loss_reg = (latent_lq.mean() - lq.mean()).abs() + (latent_lq.std() - 0.5 * lq.std()).abs()
    loss = loss_rec + loss_rep + reg_weight * loss_reg
    return {"loss": loss, "loss_rec": loss_rec, "loss_rep": loss_rep, "loss_reg": loss_reg}


class AutoencoderModule(RestorationModule):
    """Trains ``UNetAutoencoder``; validation measures the ceiling of the latent pipeline."""

    kind = "autoencoder"

    def __init__(
        self,
        net: dict[str, Any],
        channels: int = 3,
        optim: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        lr: float | None = None,
        max_steps: int = 1000,
        reg_weight: float = 0.001,
        crop_border: int = 0,
    ) -> None:
        super().__init__(crop_border)
        self.save_hyperparameters()
        self.autoencoder = UNetAutoencoder(in_ch=channels, out_ch=channels, **net)
        self.val_metrics_lq = RestorationMetrics(crop=crop_border, use_lpips=False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        lq, gt = self.split_batch(batch)
        losses = autoencoder_losses(self.autoencoder, lq, gt, self.hparams.reg_weight)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=lq.shape[0])
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.val_metrics_lq.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lq, gt = self.split_batch(batch)
        latent_lq, hidden_lq = self.autoencoder.encode(lq)
        latent_gt, _ = self.autoencoder.encode(gt)
        gt_through_lq_skips = self.autoencoder.decode(latent_gt, hidden_lq)
        lq_reconstruction = self.autoencoder.decode(latent_lq, hidden_lq)
        self.val_metrics.update(gt_through_lq_skips, gt)
        self.val_metrics_lq.update(lq_reconstruction, lq)
        for index in range(lq.shape[0]):
            self.add_panel(lq[index], gt_through_lq_skips[index], gt[index])

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.count == 0:
            return
        # val/psnr: decode(latent_gt, hidden_lq) vs GT; val_lq/psnr: decode(latent_lq, hidden_lq) vs LQ.
        self.log_metrics("val", self.val_metrics.compute())
        self.log_metrics("val_lq", self.val_metrics_lq.compute())
        self.log_panels("val/panels")
