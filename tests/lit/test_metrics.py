"""Metrics cross-checked against an independent implementation (scikit-image) on real photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from refusion_pl.lit.metrics import RestorationMetrics, crop_border, lpips_status, rgb_to_y


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


def test_lpips_status_is_explicit():
    enabled, message = lpips_status()
    assert message.startswith("LPIPS enabled" if enabled else "LPIPS disabled")
