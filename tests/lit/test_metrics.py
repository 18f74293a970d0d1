"""Metrics cross-checked against an independent implementation (scikit-image) on real photographs."""

from __future__ import annotations

import csv
import sys
import types

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.lit.metrics import (
    LPIPS_WEIGHT_FILES,
    RestorationMetrics,
    crop_border,
    lpips_status,
    rgb_to_y,
)
from tests.conftest import FAST_SMOKE


def _pair():
    clean = torch.from_numpy(skdata.astronaut()[:128, 100:228].astype(np.float32) / 255).permute(2, 0, 1)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return noisy[None], clean[None]


def test_psnr_ssim_match_scikit_image():
    pred, target = _pair()
    metrics = RestorationMetrics(crop=0, use_lpips=False)
    metrics.update(pred, target)
    values = metrics.compute()
    p, t = pred[0].permute(1, 2, 0).double().numpy(), target[0].permute(1, 2, 0).double().numpy()
    assert values["psnr"] == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0), abs=1e-3)
    ssim_ref = structural_similarity(
        t, p, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert values["ssim"] == pytest.approx(ssim_ref, abs=5e-3)
    y_p, y_t = rgb_to_y(pred)[0, 0].double().numpy(), rgb_to_y(target)[0, 0].double().numpy()
    assert values["psnr_y"] == pytest.approx(peak_signal_noise_ratio(y_t, y_p, data_range=1.0), abs=1e-3)


def test_psnr_is_averaged_per_image():
    pred, target = _pair()
    metrics = RestorationMetrics(use_lpips=False)
    metrics.update(pred, target)
    metrics.update(target.clone().add_(0.2).clamp_(0, 1), target)
    per_image = [
        peak_signal_noise_ratio(target[0].numpy(), x[0].numpy(), data_range=1.0)
        for x in (pred, target.clone().add_(0.2).clamp_(0, 1))
    ]
    assert metrics.compute()["psnr"] == pytest.approx(np.mean(per_image), abs=1e-3)


def test_y_channel_and_border_crop():
    white = torch.ones(1, 3, 8, 8)
    assert rgb_to_y(white).flatten()[0].item() == pytest.approx(235 / 255, abs=1e-4)
    assert rgb_to_y(torch.zeros(1, 3, 2, 2)).flatten()[0].item() == pytest.approx(16 / 255)
    assert crop_border(torch.zeros(1, 3, 10, 12), 2).shape[-2:] == (6, 8)


def test_lpips_status_names_what_is_missing(monkeypatch, tmp_path):
    """Without torchvision: the extra to install; without the local weights: where they were looked for."""
    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it raises ImportError
    enabled, message = lpips_status()
    assert not enabled and "torchvision is not importable" in message and "refusion_pl[lpips]" in message
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    enabled, message = lpips_status()
    assert not enabled and f"not found locally in {tmp_path / 'checkpoints'}" in message
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / LPIPS_WEIGHT_FILES[0]).write_bytes(b"weights")
    assert lpips_status() == (True, "LPIPS enabled (AlexNet backbone from the local torch hub cache)")


def test_lpips_is_the_mean_over_images_of_clamped_cropped_pairs(stand_in_lpips):
    pred, target = _pair()
    metrics = RestorationMetrics(crop=4)
    brighter = (target * 1.3 - 0.1).clamp(-0.2, 1.2)  # outside [0, 1]: LPIPS sees the clamped image
    metrics.update(pred, target)
    metrics.update(brighter, target)
    expected = [
        stand_in_lpips(crop_border(x.clamp(0, 1), 4), crop_border(target, 4)).item() for x in (pred, brighter)
    ]
    assert "lpips" in metrics.updated()
    assert metrics.compute()["lpips"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert not any("lpips" in key for key in metrics.state_dict())  # never stored in checkpoints
    grey = RestorationMetrics()
    grey.update(pred[:, :1], target[:, :1])
    assert "lpips" not in grey.compute()  # LPIPS is defined on RGB only


def test_lpips_is_logged_and_its_best_checkpoint_is_the_lowest(compose_config, stand_in_lpips, tmp_path):
    """Training logs val/lpips, and ``optimized_metric=val/lpips`` keeps the lowest (mode auto = min)."""
    from refusion_pl.train import train

    run = tmp_path / "run"
    overrides = [
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "callbacks.ema=null",
        "optimized_metric=val/lpips",
    ]
    train(compose_config(*FAST_SMOKE, *overrides, output_dir=run))
    with next((run / "diffusion" / "csv").rglob("metrics.csv")).open() as handle:
        logged = {
            int(row["step"]): float(row["val/lpips"]) for row in csv.DictReader(handle) if row["val/lpips"]
        }
    assert len(logged) == 2 and len(set(logged.values())) == 2, logged  # two validations, different scores
    last = safe_torch_load(run / "diffusion" / "checkpoints" / "last.ckpt")  # the callback's final state
    state = next(v for k, v in last["callbacks"].items() if k.startswith("RunCheckpoint"))
    assert state["monitor"] == "val/lpips"
    best_score, lowest, highest = float(state["best_model_score"]), min(logged.values()), max(logged.values())
    assert abs(best_score - lowest) < abs(best_score - highest)  # the scores differ by ~1e-5 relative
