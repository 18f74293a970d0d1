"""Stage 1: the U-Net autoencoder that latent Refusion diffuses in (method page, section 3)."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from refusion_pl.lit.base import RestorationModule
from refusion_pl.lit.metrics import RestorationMetrics, crop_border, psnr_per_image
from refusion_pl.models import UNetAutoencoder
from refusion_pl.models.unet_ae import AEHidden

log = logging.getLogger(__name__)

#: How a fresh stage-1 network starts: ``signal_preserving`` (see ``UNetAutoencoder.init_signal_preserving``)
#: or PyTorch's ``default`` (the original's; its latent path starts dead and revives slowly, if at all).
AUTOENCODER_INITS = ("signal_preserving", "default")


def drop_skips(hidden: AEHidden, probability: float) -> AEHidden:
    """Zero every skip map of a random subset of the batch (each image with ``probability``).

    Those images must then be decoded from their latent alone, so the latent has to hold the image's coarse
    content and the decoder has to read it. Without this, L1 finds the easy optimum first: copy the LQ through
    the skips and ignore the latent (GT equals LQ on most pixels of a crop).
    """
    if probability <= 0:
        return hidden
    keep = (torch.rand(hidden[0].shape[0], 1, 1, 1, device=hidden[0].device) >= probability).to(
        hidden[0].dtype
    )
    return AEHidden([h * keep for h in hidden], image_size=hidden.image_size)


def perturb_latent(latent: torch.Tensor, scale: float) -> torch.Tensor:
    """``latent`` plus Gaussian noise of ``scale`` times its (batch) standard deviation.

    Decoding perturbed latents to the clean targets makes the decoder forgiving around the latents it was
    trained on: the diffusion stage never lands exactly on them, and a decoder that has only seen exact
    latents turns the remaining error into coloured blotches at latent scale.
    """
    if scale <= 0:
        return latent
    return latent + scale * latent.detach().std() * torch.randn_like(latent)


def autoencoder_losses(
    autoencoder: UNetAutoencoder,
    lq: torch.Tensor,
    gt: torch.Tensor,
    reg_weight: float,
    skip_dropout: float = 0.0,
    latent_noise: float = 0.0,
    residual_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The stage-1 objective: reconstruct LQ, decode the GT latent through the LQ skips, keep latents image-like.

    ``skip_dropout`` (training only) decodes some images without their skips; see ``drop_skips``.
    ``latent_noise`` (training only) decodes perturbed latents; see ``perturb_latent``.
    ``residual_weight`` adds the L1 of residual decoding, ``lq + decode(gt latent) - decode(lq latent)`` vs GT:
    what a ``decode_mode=residual`` autoencoder restores with. The two direct terms alone leave the difference of
    their errors in it.
    """
    latent_lq, hidden_lq = autoencoder.encode(lq)
    latent_gt, _ = autoencoder.encode(gt)
    hidden_lq = drop_skips(hidden_lq, skip_dropout)
    decoded_lq = autoencoder.decode(perturb_latent(latent_lq, latent_noise), hidden_lq)
    decoded_gt = autoencoder.decode(perturb_latent(latent_gt, latent_noise), hidden_lq)
    loss_rec = F.l1_loss(decoded_lq, lq)
    loss_rep = F.l1_loss(decoded_gt, gt)
    loss_reg = (latent_lq.mean() - lq.mean()).abs() + (latent_lq.std() - 0.5 * lq.std()).abs()
    losses = {"loss_rec": loss_rec, "loss_rep": loss_rep, "loss_reg": loss_reg}
    loss = loss_rec + loss_rep + reg_weight * loss_reg
    if residual_weight > 0:
        losses["loss_residual"] = F.l1_loss(lq + decoded_gt - decoded_lq, gt)
        loss = loss + residual_weight * losses["loss_residual"]
    return {"loss": loss, **losses}


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
        init: str = "signal_preserving",
        skip_dropout: float = 0.0,
        skip_dropout_until: float | None = None,
        dead_latent_db: float = 0.5,
        latent_noise: float = 0.0,
        residual_loss: float = 0.0,
    ) -> None:
        super().__init__(crop_border)
        self.save_hyperparameters()
        if init not in AUTOENCODER_INITS:
            raise ValueError(f"autoencoder.init={init!r}; choose one of: {', '.join(AUTOENCODER_INITS)}")
        self.autoencoder = UNetAutoencoder(in_ch=channels, out_ch=channels, **net)
        if init == "signal_preserving":
            self.autoencoder.init_signal_preserving()
        self.val_metrics_lq = RestorationMetrics(crop=crop_border, use_lpips=False)
        self._latent_use: dict[str, list[torch.Tensor]] = {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        lq, gt = self.split_batch(batch)
        losses = autoencoder_losses(
            self.autoencoder,
            lq,
            gt,
            self.hparams.reg_weight,
            self.skip_dropout_now(),
            float(self.hparams.get("latent_noise", 0.0)),
            float(self.hparams.get("residual_loss", 0.0)),
        )
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=lq.shape[0])
        return losses["loss"]

    def skip_dropout_now(self, step: int | None = None) -> float:
        """``skip_dropout``, fading linearly to zero at ``skip_dropout_until`` (a fraction of ``max_steps``).

        Dropping skips wakes the latent up early; once the latent is used, the rest of the schedule trains the full
        decoder on every image, which is what reconstructs fine detail (``val_lq/psnr``).
        """
        rate = float(self.hparams.get("skip_dropout", 0.0))
        until = self.hparams.get("skip_dropout_until")
        if not until:
            return rate
        step = self.global_step if step is None else step
        return rate * max(0.0, 1.0 - step / (float(until) * self.hparams.max_steps))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.val_metrics_lq.reset()
        self._latent_use = {"input": [], "lq_latent": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lq, gt = self.split_batch(batch)
        latent_lq, hidden_lq = self.autoencoder.encode(lq)
        latent_gt, _ = self.autoencoder.encode(gt)
        gt_through_lq_skips = self.autoencoder.decode(latent_gt, hidden_lq)
        lq_reconstruction = self.autoencoder.decode(latent_lq, hidden_lq)
        self.val_metrics.update(gt_through_lq_skips, gt)
        self.val_metrics_lq.update(lq_reconstruction, lq)
        crop = self.hparams.crop_border
        self._latent_use["input"].append(psnr_per_image(crop_border(lq, crop), crop_border(gt, crop)))
        self._latent_use["lq_latent"].append(
            psnr_per_image(crop_border(lq_reconstruction.clamp(0, 1), crop), crop_border(gt, crop))
        )
        for index in range(lq.shape[0]):
            self.add_panel(lq[index], gt_through_lq_skips[index], gt[index])

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.count == 0:
            return
        # val/psnr: decode(latent_gt, hidden_lq) vs GT; val_lq/psnr: decode(latent_lq, hidden_lq) vs LQ.
        ceiling = self.val_metrics.compute()
        self.log_metrics("val", self.val_metrics)
        self.log_metrics("val_lq", self.val_metrics_lq)
        self.log_panels("val/panels")
        self.check_latent_use(ceiling["psnr"])

    def check_latent_use(self, ceiling_psnr: float) -> float:
        """Log ``val/latent_gain``: how much the GT latent lifts the decoded image over the LQ latent (dB).

        Both decode through the LQ's skips, so the gain is all the latent can carry; zero means the decoder ignores
        its latent, and then no diffusion in that latent space can restore anything. Warns when it is dead.
        """
        input_psnr = float(torch.cat(self._latent_use["input"]).mean())
        lq_latent_psnr = float(torch.cat(self._latent_use["lq_latent"]).mean())
        gain = ceiling_psnr - lq_latent_psnr
        self.log("val/psnr_input", input_psnr, sync_dist=True)
        self.log("val/latent_gain", gain, prog_bar=True, sync_dist=True)
        if gain < self.hparams.dead_latent_db and not self.trainer.sanity_checking:
            log.warning(
                "stage 1 at step %d barely uses its latent: decode(latent_gt, hidden_lq) is only %.2f dB better "
                "than decode(latent_lq, hidden_lq) (val/latent_gain < %.2f dB), so diffusion in this latent "
                "space cannot restore; train stage 1 longer, raise autoencoder.lr, or use autoencoder.init="
                "signal_preserving",
                self.global_step,
                gain,
                self.hparams.dead_latent_db,
            )
        return gain
