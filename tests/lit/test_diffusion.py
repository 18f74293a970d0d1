import pytest
import torch

from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.base import CHECKPOINT_KEY
from refusion_pl.sampling import sample

TINY = {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]}
SDE = {"max_sigma": 50, "steps": 100, "schedule": "cosine", "eps": 0.005, "sampler": "posterior"}


def test_untrained_x0_model_returns_its_input():
    """The last convolution starts at zero, so x0 = mu: sampling walks back to the degraded image."""
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "x0"}).eval()
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = module.restore(lq, generator=torch.Generator().manual_seed(1))
    assert (out - lq).abs().max() < 1e-3


def test_noise_model_keeps_the_published_initialisation():
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "noise"})
    assert module.noise_model is module.net and module.net.ending.weight.abs().sum() > 0


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match=r"sde\.prediction='eps'"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "eps"})


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match=r"sde\.loss='l2'"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "loss": "l2"})


@pytest.mark.parametrize("loss", ["mean", "x0"])
def test_training_step_minimises_the_configured_loss(loss: str):
    """The logged training loss is the one `sde.loss` names, computed on the same draw."""
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "x0", "loss": loss})
    gen = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(2, 3, 16, 16, generator=gen), "gt": torch.rand(2, 3, 16, 16, generator=gen)}
    torch.manual_seed(3)
    trained = module.training_step(batch, 0)
    torch.manual_seed(3)
    t = module.sde.sample_timesteps(2)
    noise = torch.randn(2, 3, 16, 16)
    xt = module.sde.forward_sample(batch["gt"], batch["lq"], t, noise)
    expected = module.sde.loss(loss, module.noise_model(xt, batch["lq"], t), xt, batch["gt"], batch["lq"], t)
    assert torch.allclose(trained, expected)
    if loss == "x0":  # an untrained x0 network restores nothing: its loss is the input's error
        assert float(trained) == pytest.approx(float((batch["lq"] - batch["gt"]).abs().mean()), rel=1e-3)


def test_mean_path_trains_that_share_of_samples_without_noise():
    """``sde.mean_path``: whole samples at the marginal's mean (what temperature-0 sampling feeds the network),
    the others with their usual noise; 0 draws exactly what training drew before the option existed."""
    x0 = torch.zeros(4000, 1, 2, 2)

    def draws(sde: dict) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        noise = DiffusionModule(model="pixel", nafnet=TINY, sde=sde).training_noise(x0)
        return noise, torch.rand(3)  # and the random stream after it

    plain, off = draws(SDE), draws({**SDE, "mean_path": 0.0})
    assert torch.equal(plain[0], off[0]) and torch.equal(plain[1], off[1])
    noise = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "mean_path": 0.3}).training_noise(x0)
    silent = (noise == 0).flatten(1).all(1)
    assert abs(float(silent.float().mean()) - 0.3) < 0.03
    assert (noise[~silent] != 0).flatten(1).all(1).all() and 0.9 < float(noise[~silent].std()) < 1.1
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"sde\.mean_path"):
            DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "mean_path": bad})


def test_icnr_option_initialises_the_upsamplings_as_nearest_neighbour():
    plain = DiffusionModule(model="pixel", nafnet=TINY, sde=SDE).net.ups[0]
    icnr = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "icnr": True}).net.ups[0]
    for up, shared in ((plain, False), (icnr, True)):
        kernels = (
            up[0].weight.detach().flatten(1).view(-1, 4, up[0].in_channels)
        )  # the 4 sub-pixels per channel
        assert torch.allclose(kernels, kernels[:, :1].expand_as(kernels)) == shared


AE_TINY = {"ch": 4, "ch_mult": [1, 2], "embed_dim": 4}


def test_image_loss_adds_the_decoded_x0_error():
    """``sde.image_loss`` adds w x L1(decode(x0 estimate), GT) to the latent loss, with gradients into the net only."""
    sde = {**SDE, "prediction": "x0", "loss": "x0"}
    plain = DiffusionModule(
        model="latent", nafnet=TINY, autoencoder={**AE_TINY, "decode_mode": "residual"}, sde=sde
    )
    weighted = DiffusionModule(
        model="latent",
        nafnet=TINY,
        autoencoder={**AE_TINY, "decode_mode": "residual"},
        sde={**sde, "image_loss": 2.0},
    )
    weighted.load_state_dict(plain.state_dict())
    for module in (plain, weighted):
        module.autoencoder.requires_grad_(False).eval()
    gen = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(2, 3, 16, 16, generator=gen), "gt": torch.rand(2, 3, 16, 16, generator=gen)}
    torch.manual_seed(3)
    latent_only = plain.training_step(batch, 0)
    torch.manual_seed(3)
    total = weighted.training_step(batch, 0)
    # An untrained x0 network returns mu, which residual decoding turns back into the LQ itself.
    lq_error = float((batch["lq"] - batch["gt"]).abs().mean())
    assert float(total - latent_only) == pytest.approx(2.0 * lq_error, rel=1e-4)
    total.backward()
    assert weighted.net.ending.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in weighted.autoencoder.parameters())
    with pytest.raises(ValueError, match=r"sde\.image_loss=-1\.0"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "image_loss": -1.0})


def test_echo_trains_each_load_for_echo_consecutive_steps():
    """``sde.echo=2``: a step trains on this load and the previous one, never on older ones, in load order."""
    module = DiffusionModule(model="latent", nafnet=TINY, autoencoder=AE_TINY, sde={**SDE, "echo": 2})
    loads = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    encoded = [module.encode_pair(image, image.flip(-1))[:2] for image in loads]
    seen = [module.echoed(mu, x0, None) for mu, x0 in encoded]
    assert seen[0][0].shape[0] == 1 and seen[1][0].shape[0] == 2 and seen[2][0].shape[0] == 2
    assert torch.equal(seen[2][0], torch.cat([encoded[1][0], encoded[2][0]]))
    assert torch.equal(seen[2][1], torch.cat([encoded[1][1], encoded[2][1]]))
    torch.manual_seed(0)
    loss = module.training_step({"lq": loads[0], "gt": loads[0].flip(-1)}, 0)
    assert loss.isfinite() and len(module._echoed) == 2
    with pytest.raises(ValueError, match=r"sde\.echo=0"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "echo": 0})
    with pytest.raises(ValueError, match="image_loss"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "echo": 2, "image_loss": 1.0})


def _bokeh_module() -> DiffusionModule:
    """A bokeh module whose blocks pass their feed-forward on (trained blocks do; fresh ones start at zero)."""
    module = DiffusionModule(
        model="latent", nafnet={**TINY, "variant": "bokeh"}, autoencoder=AE_TINY, sde=SDE
    )
    for name, parameter in module.net.named_parameters():
        if name.endswith(".gamma"):
            torch.nn.init.constant_(parameter, 0.5)
    return module


def test_bokeh_scalars_reach_the_network_in_training_and_restoring():
    module = _bokeh_module()
    assert module.net.variant == "bokeh" and module.hparams.nafnet["variant"] == "bokeh"
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = {"lq": images, "gt": images.flip(-1), "name": ["a", "b"]}

    def loss(scalars: torch.Tensor) -> float:
        torch.manual_seed(0)  # same timesteps and noise: only the scalars differ
        return float(module.training_step({**batch, "cond_scalars": scalars}, 0).detach())

    f18, f14 = torch.tensor([[160.0, 18.0, 20.0]] * 2), torch.tensor([[160.0, -14.0, 20.0]] * 2)
    assert loss(f18) == loss(f18) != loss(f14)
    with pytest.raises(ValueError, match="needs cond_scalars"):
        module.training_step(batch, 0)
    module.eval()
    a, b = (
        module.restore(images, steps=2, generator=torch.Generator().manual_seed(1), cond_scalars=s)
        for s in (f18, f14)
    )
    assert not torch.allclose(a, b)


def test_photo_stats_module_trains_on_the_batch_means_and_restores_from_the_photos_own():
    """net.nafnet.photo_stats: one mean per channel and view reaches the network; training takes the batch's
    (the whole photos', computed by the data), restoring computes the input photo's own."""
    stereo = DiffusionModule(
        model="pixel", nafnet={**TINY, "variant": "stereo", "photo_stats": True}, sde=SDE
    )
    assert stereo.net.photo_stats == 6 and stereo.hparams.nafnet["photo_stats"] is True
    module = DiffusionModule(
        model="latent", nafnet={**TINY, "photo_stats": True}, autoencoder=AE_TINY, sde=SDE
    )
    assert module.net.photo_stats == 3
    peaks = DiffusionModule(
        model="latent", nafnet={**TINY, "photo_stats": "means_and_peaks"}, autoencoder=AE_TINY, sde=SDE
    )
    assert (
        peaks.net.photo_stats == 6 and peaks.net.photo_kind == "means_and_peaks"
    )  # three means, three peaks
    peak = DiffusionModule(model="pixel", nafnet={**TINY, "photo_stats": "peak"}, sde=SDE)
    assert peak.net.photo_stats == 1 and peak.noise_model.photo_kind == "peak"
    with pytest.raises(ValueError, match="photo_stats='peaks'"):
        DiffusionModule(model="pixel", nafnet={**TINY, "photo_stats": "peaks"}, sde=SDE)
    for name, parameter in module.net.named_parameters():
        if name.endswith((".gamma", ".beta")) or name == "photo_mlp.2.weight":
            torch.nn.init.constant_(parameter, 0.5)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = {"lq": images, "gt": images.flip(-1), "name": ["a", "b"]}

    def loss(means: torch.Tensor) -> float:
        torch.manual_seed(0)  # same timesteps and noise: only the means differ
        return float(module.training_step({**batch, "cond_scalars": means}, 0).detach())

    dark, bright = torch.full((2, 3), 0.05), torch.full((2, 3), 0.6)
    assert loss(dark) == loss(dark) != loss(bright)
    with pytest.raises(ValueError, match="photo_statistics"):
        module.training_step(batch, 0)
    module.eval()
    restored = [
        module.restore(images, steps=2, generator=torch.Generator().manual_seed(1), cond_scalars=s)
        for s in (None, images.mean((-2, -1)), bright)
    ]
    assert torch.equal(restored[0], restored[1]) and not torch.allclose(restored[0], restored[2])


def test_stereo_validation_reports_each_view_and_their_mean():
    module = DiffusionModule(model="pixel", nafnet={**TINY, "variant": "stereo"}, sde=SDE, crop_border=0)
    assert module.views == 2 and module.net.variant == "stereo"
    gt = torch.rand(1, 6, 16, 16, generator=torch.Generator().manual_seed(0))
    restored = torch.cat([gt[:, :3], (gt[:, 3:] + 0.1).clamp(0, 1)], dim=1)  # left exact, right off
    module.val_metrics.update(restored, gt)
    values = module.val_metrics.compute()
    assert values["psnr_left"] > 100 > values["psnr_right"] > 15
    assert values["psnr"] == pytest.approx((values["psnr_left"] + values["psnr_right"]) / 2, rel=1e-5)
    assert values["ssim_left"] == pytest.approx(1.0) and "psnr_y" in values


def test_restore_and_validation_sample_with_the_configured_spacing():
    torch.manual_seed(0)
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "spacing": "logsnr"}).eval()
    assert module.val_cfg["spacing"] == "logsnr"  # validation and figures call restore with these defaults
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    def direct(spacing: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(2)
        out = sample(module.sde, module.noise_model, lq, sampler="posterior", steps=4, generator=generator,
                     spacing=spacing)  # fmt: skip
        return out.clamp(0, 1)

    restored = module.restore(lq, steps=4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(restored, direct("logsnr")) and not torch.equal(restored, direct("ou"))
    chosen = module.restore(lq, steps=4, generator=torch.Generator().manual_seed(2), spacing="ou")
    assert torch.equal(chosen, direct("ou"))


def test_checkpoints_keep_or_override_the_spacing():
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "spacing": "logsnr"})
    checkpoint = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    checkpoint[CHECKPOINT_KEY] = {"kind": "diffusion"}
    assert DiffusionModule.from_checkpoint_data(checkpoint, "x").val_cfg["spacing"] == "logsnr"
    loaded = DiffusionModule.from_checkpoint_data(checkpoint, "x", {"spacing": "uniform"})
    assert loaded.val_cfg["spacing"] == "uniform"
    checkpoint["hyper_parameters"]["sde"] = SDE  # written before spacing existed
    assert DiffusionModule.from_checkpoint_data(checkpoint, "x").val_cfg["spacing"] == "ou"


def test_training_measures_errors_with_the_configured_loss_norm():
    """``sde.loss_norm=l2`` trains on the squared error of the same draw that l1 takes absolute; a bad norm is
    refused by name."""
    sde = {**SDE, "prediction": "x0", "loss": "x0"}
    batch = {"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)}
    losses = {}
    for norm in ("l1", "l2"):
        torch.manual_seed(0)
        module = DiffusionModule(model="pixel", nafnet=TINY, sde={**sde, "loss_norm": norm})
        torch.manual_seed(1)  # the same timesteps and noise for both
        losses[norm] = float(module.training_step(batch, 0))
    # a fresh x0 network returns mu: its error is lq - gt at every timestep
    assert losses["l1"] == pytest.approx(float((batch["lq"] - batch["gt"]).abs().mean()), rel=1e-3)
    assert losses["l2"] == pytest.approx(float((batch["lq"] - batch["gt"]).square().mean()), rel=1e-3)
    with pytest.raises(ValueError, match=r"sde\.loss_norm='huber'"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**sde, "loss_norm": "huber"})


def test_restore_samples_with_the_checkpoints_steps_unless_told_otherwise():
    """``module.restore(lq)`` takes the steps the checkpoint was trained to be sampled with (``sde.sample_steps``),
    as ``refusion-restore`` does; asking for other steps still works, and without sample_steps it runs all T."""
    torch.manual_seed(0)
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "sample_steps": 3})
    checkpoint = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    checkpoint[CHECKPOINT_KEY] = {"kind": "diffusion"}
    loaded = DiffusionModule.from_checkpoint_data(checkpoint, "x")
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    def restored(module: DiffusionModule, steps: int | None = None) -> torch.Tensor:
        with torch.no_grad():
            return module.restore(lq, steps=steps, generator=torch.Generator().manual_seed(2))

    assert torch.equal(restored(loaded), restored(loaded, 3))
    assert not torch.allclose(restored(loaded), restored(loaded, 100))
    checkpoint["hyper_parameters"]["sde"] = {**SDE, "sample_steps": None}
    unset = DiffusionModule.from_checkpoint_data(checkpoint, "x")
    assert torch.equal(restored(unset), restored(unset, 100))


def test_latent_stage2_does_not_blow_up_on_latents_4x_larger_than_its_training_ones():
    """Trained briefly on 8x8 latents (64-pixel crops), restoring a whole 256-pixel photo (32x32 latents) stays
    near the input's latent: no error amplification along the trajectory (it once reached |x - mu| ~ 1e9)."""
    from refusion_pl.data import PairedDataModule

    torch.manual_seed(0)
    ae = {"ch": 4, "ch_mult": [1, 2, 2, 2], "embed_dim": 4}
    sde = {**SDE, "sampler": "sde", "prediction": "x0", "loss": "x0", "sample_steps": 20}
    module = DiffusionModule(model="latent", nafnet={**TINY, "width": 16}, autoencoder=ae, sde=sde)
    module.autoencoder.init_signal_preserving()
    data = PairedDataModule(
        degradation={"name": "lowlight"},
        crop_size=64,
        batch_size=4,
        train_samples_per_epoch=400,
        val_size=256,
    )
    data.setup("fit")
    optimiser = torch.optim.AdamW(module.net.parameters(), lr=2e-3)
    largest_change = 0.0
    for step, batch in zip(range(60), data.train_dataloader()):
        mu, x0 = module.to_diffusion_space(batch["lq"], batch["gt"])
        largest_change = max(largest_change, float((x0 - mu).abs().max()))
        loss = module.training_step(batch, step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    module.eval()
    lq = next(iter(data.val_dataloader()))["lq"]
    with torch.no_grad():
        mu = module.autoencoder.encode(lq)[0]
        assert mu.shape[-1] == 4 * 8  # 4x the training latents' side
        from refusion_pl.sampling import sample

        sampled = sample(
            module.sde, module.noise_model, mu, steps=20, generator=torch.Generator().manual_seed(0)
        )
    assert torch.isfinite(sampled).all()
    assert float((sampled - mu).abs().max()) < 2 * largest_change
