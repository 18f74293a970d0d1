"""What both stages share: validation metrics are logged as torchmetrics objects, which Lightning computes."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from refusion_pl.lit.base import RestorationModule
from refusion_pl.lit.metrics import psnr_per_image


class _FixedRestorer(RestorationModule):
    """Validation 'restores' each target plus a known offset, so the expected PSNR is known."""

    def __init__(self) -> None:
        super().__init__(crop_border=0)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # Lightning wants parameters

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.val_metrics.update((batch + 0.1 * (batch_idx + 1)).clamp(0, 1), batch)

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val", self.val_metrics)


def test_metrics_are_logged_as_torchmetrics_objects(tmp_path):
    targets = [torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.5)]
    expected = torch.cat([psnr_per_image((t + 0.1 * (i + 1)).clamp(0, 1), t) for i, t in enumerate(targets)])
    module = _FixedRestorer()
    trainer = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path
    )
    trainer.validate(module, dataloaders=torch.utils.data.DataLoader(torch.cat(targets), batch_size=1))
    assert float(trainer.callback_metrics["val/psnr"]) == pytest.approx(float(expected.mean()), abs=1e-4)
    assert {"val/ssim", "val/psnr_y", "val/ssim_y"} <= set(trainer.callback_metrics)
    # Lightning computed the metric objects and reset them after the epoch: it managed them, not a float
    assert all(metric.update_count == 0 for metric in module.val_metrics.means.values())
