"""Stage 1 learns to carry the restoration in its latent, and a dead latent path is visible and warned about."""

from __future__ import annotations

import logging
import statistics

import pytest
import torch

from refusion_pl.lit.autoencoder import autoencoder_losses, drop_skips, perturb_latent
from refusion_pl.models import AEHidden
from refusion_pl.train import train

# A short stage-1 run on the bundled shadow task, validated on the three held-out photos.
SHORT_STAGE1 = [
    "stage=autoencoder",
    "experiment=demo",
    "net.autoencoder.ch=4",  # the tiny net's autoencoder: fast, and the margins below were measured on it
    "net.autoencoder.embed_dim=4",
    "autoencoder.max_steps=200",
    "autoencoder.crop_size=96",
    "data.dark_prob=0.1",  # the margins below were measured with 10% darkened scenes (shadow's demo now has 30%)
    "trainer.val_check_interval=200",
    "data.val_size=128",
    "figure.enabled=false",
    "callbacks.progress_bar=null",
    "logger=none",
]


def test_drop_skips_zeroes_whole_images() -> None:
    torch.manual_seed(0)
    hidden = AEHidden([torch.ones(64, 2, 4, 4), torch.ones(64, 3, 2, 2)], image_size=(4, 4))
    assert drop_skips(hidden, 0.0) is hidden
    dropped = drop_skips(hidden, 0.5)
    assert dropped.image_size == (4, 4)
    kept = dropped[0].flatten(1).amax(1)
    assert torch.equal(kept, dropped[1].flatten(1).amax(1))  # the same images lose every skip
    assert set(kept.tolist()) == {0.0, 1.0}
    assert 16 < int(kept.sum()) < 48


def test_perturb_latent_scales_with_the_latents_spread() -> None:
    torch.manual_seed(0)
    latent = 3.0 * torch.randn(8, 4, 16, 16)
    assert perturb_latent(latent, 0.0) is latent
    noise = perturb_latent(latent, 0.2) - latent
    assert noise.std().item() == pytest.approx(0.2 * latent.std().item(), rel=0.05)


def test_latent_noise_reaches_the_decoder(compose_config):
    """With ``autoencoder.latent_noise`` the stage-1 losses decode perturbed latents (a different loss)."""
    from refusion_pl.train import build_module

    cfg = compose_config("experiment=demo", "autoencoder.latent_noise=0.5")
    module = build_module(cfg, "autoencoder", None)
    assert module.hparams.latent_noise == 0.5
    torch.manual_seed(0)
    lq, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    exact = autoencoder_losses(module.autoencoder, lq, gt, 0.0)
    noisy = autoencoder_losses(module.autoencoder, lq, gt, 0.0, latent_noise=0.5)
    assert noisy["loss_reg"] == exact["loss_reg"]  # same latents
    assert abs(noisy["loss_rep"] - exact["loss_rep"]) > 1e-4


def test_short_stage1_run_uses_its_latent(compose_config, tmp_path):
    """The GT latent lifts the decoded image far above the input, by a margin well above the seed spread.

    Measured (200 steps, 96-pixel crops, 128-pixel centres of the held-out photos): ceiling minus input 3.24 and
    2.53 dB for seeds 0 and 1 (spread 0.71 dB); with PyTorch's default init and no skip dropout the margin stays
    near zero or below (see the next test). With the shadow demo's 30% darkened scenes: 3.08 and 2.31 dB.
    """
    margins = []
    for seed in (0, 1):
        metrics = train(compose_config(*SHORT_STAGE1, f"seed={seed}", output_dir=tmp_path / str(seed)))
        margins.append(metrics["val/psnr"] - metrics["val/psnr_input"])
        assert metrics["val/latent_gain"] > 1.0, metrics
    spread = max(margins) - min(margins)
    assert statistics.mean(margins) > 2.0, margins
    assert min(margins) > 3 * spread, margins


def test_dead_latent_is_logged_and_warned(compose_config, tmp_path, caplog):
    """PyTorch's default init without skip dropout: after a few steps the latent does nothing, and the run says so."""
    cfg = compose_config(
        *SHORT_STAGE1,
        "autoencoder.max_steps=20",
        "trainer.val_check_interval=20",
        "autoencoder.init=default",
        "autoencoder.skip_dropout=0",
        output_dir=tmp_path / "dead",
    )
    with caplog.at_level(logging.WARNING, logger="refusion_pl.lit.autoencoder"):
        metrics = train(cfg)
    assert abs(metrics["val/latent_gain"]) < 0.5, metrics
    assert "barely uses its latent" in caplog.text


def test_bad_stage1_settings_are_named(compose_config):
    from hydra.errors import ConfigCompositionException

    from refusion_pl.config import ConfigError, validate_config

    with pytest.raises(ConfigCompositionException, match=r"autoencoder\.init=kaiming"):
        compose_config("autoencoder.init=kaiming")  # a choice (Enum): refused while composing
    with pytest.raises(ConfigError, match=r"autoencoder\.skip_dropout=1\.5"):
        validate_config(compose_config("autoencoder.skip_dropout=1.5"))
    with pytest.raises(ConfigError, match=r"autoencoder\.latent_noise=-0\.1"):
        validate_config(compose_config("autoencoder.latent_noise=-0.1"))


def test_stage1_learning_rate_is_used_as_given(compose_config):
    """optim.lr_scale raises the diffusion stage's rate only; autoencoder.optim picks stage 1's optimiser."""
    from refusion_pl.train import build_module

    cfg = compose_config("experiment=demo", "optim=lion", "autoencoder.lr=2e-3")
    stage1 = build_module(cfg, "autoencoder", None).configure_optimizers()["optimizer"]
    assert isinstance(stage1, torch.optim.AdamW)
    assert stage1.param_groups[0]["lr"] == pytest.approx(2e-3)
    plain = compose_config("optim=lion", "optim.lr_scale=10", "autoencoder.lr=3e-5")
    stage1 = build_module(plain, "autoencoder", None).configure_optimizers()["optimizer"]
    assert type(stage1).__name__ == "Lion" and stage1.param_groups[0]["lr"] == pytest.approx(3e-5)


def test_skip_dropout_fades_out(compose_config):
    from refusion_pl.train import build_module

    module = build_module(compose_config("experiment=demo", "autoencoder.max_steps=100"), "autoencoder", None)
    rates = []
    for step in (0, 25, 50, 99):
        rates.append(module.skip_dropout_now(step))
    assert rates == pytest.approx([0.25, 0.125, 0.0, 0.0])


def test_init_choices_match_the_config():
    from refusion_pl.config import AUTOENCODER_INITS as CONFIG_INITS
    from refusion_pl.lit.autoencoder import AUTOENCODER_INITS

    assert CONFIG_INITS == AUTOENCODER_INITS


def test_residual_loss_scores_what_residual_decoding_restores() -> None:
    """``residual_weight`` adds the L1 of ``lq + decode(z_gt) - decode(z_lq)`` against GT to the stage-1 loss."""
    from refusion_pl.models import UNetAutoencoder

    torch.manual_seed(0)
    ae = UNetAutoencoder(ch=4, ch_mult=(1, 2, 2, 2), embed_dim=4, decode_mode="residual")
    ae.init_signal_preserving()
    lq, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    plain = autoencoder_losses(ae, lq, gt, 0.0)
    weighted = autoencoder_losses(ae, lq, gt, 0.0, residual_weight=0.5)
    assert "loss_residual" not in plain
    z_gt, _ = ae.encode(gt)
    _, hidden = ae.encode(lq)
    expected = (ae.decode_restored(z_gt, hidden) - gt).abs().mean()
    assert torch.allclose(weighted["loss_residual"], expected, atol=1e-6)
    assert torch.allclose(weighted["loss"], plain["loss"] + 0.5 * expected, atol=1e-6)
