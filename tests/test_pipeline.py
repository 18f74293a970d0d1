"""End-to-end agreement with the original implementation, and restoring images of any size."""

from __future__ import annotations

import pytest
import torch

from refusion_pl.checkpoints import load_original_state_dict
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder
from refusion_pl.pipeline import ShiftJitter, add_edge_margin, remove_edge_margin, restore, sample_mean
from refusion_pl.sampling import sample
from refusion_pl.sde import IRSDE
from tests.conftest import load_fixture


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def test_full_ode_sampling_matches_the_original():
    ref = load_fixture("cnafnet_pixel_w8")
    net = ConditionalNAFNet(**ref["config"], variant="pixel").eval()
    load_original_state_dict(net, ref["state_dict"])
    sde = IRSDE(**ref["sde_config"])
    out = sample(sde, net, ref["cond"], x_T=ref["ode_xT"], sampler="ode")
    assert _rel(out, ref["ode_out"]) < 1e-4
    assert _rel(ref["ode_xT"], ref["ode_out"]) > 1e-3  # the run moved: the comparison is not vacuous


@torch.no_grad()
def test_restore_keeps_odd_sizes_for_latent_and_pixel_models():
    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 37, 53)
    pixel_net = ConditionalNAFNet(
        img_channel=3, width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], variant="pixel"
    )
    assert restore(sde, pixel_net, lq, steps=3).shape == lq.shape
    ae = UNetAutoencoder(in_ch=3, out_ch=3, ch=4, ch_mult=[1, 2, 2, 2], embed_dim=4)
    latent_net = ConditionalNAFNet(
        img_channel=4, width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], variant="latent"
    )
    out = restore(
        sde,
        latent_net,
        lq,
        autoencoder=ae,
        sampler="posterior",
        steps=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == lq.shape and out.min() >= 0 and out.max() <= 1


def test_edge_margin_mirrors_outwards_and_crops_back_even_on_tiny_images():
    image = torch.rand(1, 3, 5, 40)
    padded, used = add_edge_margin(image, 16)
    assert used == 4 and padded.shape == (1, 3, 13, 48)  # a 5-row image mirrors at most 4 rows
    assert torch.equal(padded[..., 3, 4:-4], image[..., 1, :])  # mirrored about the first row
    assert torch.equal(remove_edge_margin(padded, used), image)
    assert add_edge_margin(image, 0) == (image, 0)


def tiny_latent_model() -> tuple[UNetAutoencoder, ConditionalNAFNet]:
    ae = UNetAutoencoder(in_ch=3, out_ch=3, ch=4, ch_mult=[1, 2, 2, 2], embed_dim=4)
    net = ConditionalNAFNet(
        img_channel=4, width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], variant="latent"
    )
    return ae, net


@torch.no_grad()
def test_restoring_with_an_edge_margin_restores_the_mirrored_image_and_crops():
    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 37, 53)
    ae, net = tiny_latent_model()

    def run(image: torch.Tensor, margin: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return restore(sde, net, image, ae, "posterior", 3, generator, edge_margin=margin)

    with_margin = run(lq, 16)
    assert with_margin.shape == lq.shape
    padded = torch.nn.functional.pad(lq, (16,) * 4, mode="reflect")
    assert torch.equal(with_margin, run(padded, 0)[..., 16:-16, 16:-16])
    assert not torch.allclose(with_margin, run(lq, 0))


@torch.no_grad()
def test_samples_average_that_many_draws_before_decoding():
    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 32, 48)
    ae, net = tiny_latent_model()
    how = {"sampler": "posterior", "steps": 3}
    averaged = restore(sde, net, lq, ae, generator=torch.Generator().manual_seed(0), samples=3, **how)
    latent, hidden = ae.encode(lq)
    generator = torch.Generator().manual_seed(0)
    draws = [sample(sde, net, latent, generator=generator, **how) for _ in range(3)]
    expected = ae.decode_restored(torch.stack(draws).mean(0), hidden).clamp(0, 1)
    assert (averaged - expected).abs().max() < 1e-5
    assert (draws[0] - draws[1]).abs().max() > 1e-3  # the draws differ: the mean is not one of them
    with pytest.raises(ValueError, match="samples"):
        restore(sde, net, lq, ae, samples=0, **how)


@torch.no_grad()
def test_temperature_zero_restores_deterministically_from_the_input_latent():
    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 32, 48)
    ae, net = tiny_latent_model()
    how = {"sampler": "posterior", "steps": 3}
    cold = restore(sde, net, lq, ae, generator=torch.Generator().manual_seed(0), temperature=0, **how)
    latent, hidden = ae.encode(lq)
    from_mu = sample(sde, net, latent, x_T=latent, temperature=0, **how)
    assert torch.equal(cold, ae.decode_restored(from_mu, hidden).clamp(0, 1))
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    again = restore(
        sde, net, lq, ae, generator=torch.Generator().manual_seed(5), samples=4, temperature=0, **how
    )
    assert torch.equal(again, cold) and len(calls) == 3  # identical draws: sampled once, not 4 times
    warm = restore(sde, net, lq, ae, generator=torch.Generator().manual_seed(0), **how)
    assert (warm - cold).abs().max() > 1e-3


class PhaseStamp(torch.nn.Module):
    """A toy noise model whose prediction carries a row grid at a fixed phase of its input, like a small
    network's coarsest scale: 1 on every ``period``-th row of what it is given, 0 elsewhere."""

    pad_multiple = 8

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(tuple(x.shape[-2:]))
        stamp = torch.zeros_like(x)
        stamp[..., :: self.pad_multiple, :] = 1.0
        return stamp


def row_grid(image: torch.Tensor, period: int = 8) -> float:
    """Spread of the mean row value over the row phases modulo `period`: 0 for no row grid."""
    rows = image.mean(dim=(0, 1, 3))
    phases = torch.stack([rows[phase::period].mean() for phase in range(period)])
    return float(phases.max() - phases.min())


@torch.no_grad()
def test_shift_jitter_moves_the_network_grid_every_step_and_crops_back():
    net = PhaseStamp()
    jitter = ShiftJitter(net, period=8, seed=0)
    x = torch.rand(1, 4, 21, 30)
    outputs = [jitter(x, x, torch.zeros(1, dtype=torch.int64)) for _ in range(12)]
    assert all(out.shape == x.shape for out in outputs)
    assert all(height % 8 == 0 and width % 8 == 0 for height, width in net.inputs)  # padded, never zeros
    first_rows = {int(out[0, 0, :, 0].nonzero()[0]) for out in outputs}
    assert len(first_rows) > 3  # the stamp lands at different phases of the image
    again = ShiftJitter(PhaseStamp(), period=8, seed=0)
    assert all(torch.equal(a, again(x, x, torch.zeros(1))) for a in outputs)  # reproducible from the seed
    tiny = torch.rand(1, 4, 2, 3)
    assert jitter(tiny, tiny, torch.zeros(1)).shape == tiny.shape  # too small to mirror: replicated


@torch.no_grad()
def test_shift_jitter_averages_out_the_grid_a_network_adds_every_step():
    sde = IRSDE(max_sigma=50, T=100)
    mu = torch.full((1, 4, 64, 64), 0.5)
    how = {"sampler": "ode", "steps": 20, "temperature": 0.0}
    fixed = sample_mean(sde, PhaseStamp(), mu, **how)
    jittered = sample_mean(sde, PhaseStamp(), mu, shift_jitter=True, **how)
    assert row_grid(fixed) > 0.05  # the stamp adds up at one phase: a visible grid
    assert row_grid(jittered) < row_grid(fixed) / 3
    assert abs(float(jittered.mean() - fixed.mean())) < 0.02 * float(fixed.std() + 1)  # same overall change


@torch.no_grad()
def test_shift_jitter_changes_only_the_network_phase_of_a_restoration():
    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 40, 56)
    ae, net = tiny_latent_model()
    how = {"sampler": "posterior", "steps": 3}
    plain = restore(sde, net, lq, ae, generator=torch.Generator().manual_seed(0), **how)
    jittered = [
        restore(sde, net, lq, ae, generator=torch.Generator().manual_seed(0), shift_jitter=True, **how)
        for _ in range(2)
    ]
    assert torch.equal(jittered[0], jittered[1])  # reproducible
    assert (jittered[0] - plain).abs().max() > 1e-4

    constant = (
        PhaseStamp()
    )  # for its pad_multiple; it predicts the same at every phase: shifts change nothing
    constant.forward = lambda x, mu, t: torch.full_like(x, 0.1)
    latent = ae.encode(lq)[0]
    draws = [
        sample_mean(
            sde, constant, latent, generator=torch.Generator().manual_seed(3), shift_jitter=jit, **how
        )
        for jit in (False, True)
    ]
    assert torch.equal(draws[0], draws[1])  # the sampler's noise draws are the same with and without


class MeansSpy(torch.nn.Module):
    """A photo_stats network that records the scalars it is given and predicts no noise."""

    photo_stats, pad_multiple = 3, 1

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(
        self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, scalars: torch.Tensor
    ) -> torch.Tensor:
        self.seen.append(scalars.expand(x.shape[0], -1).clone())
        return torch.zeros_like(x)


@torch.no_grad()
def test_photo_stats_networks_see_the_whole_photos_means_through_margins_and_tiles():
    """Every call, on every tile and behind the mirrored margin, gets the unpadded photo's channel means; given
    scalars are used as they are."""
    from refusion_pl.tiling import restore_tiled

    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 40, 56)
    lq[..., :20, :] *= 0.1  # a dark top half: its tiles' own means differ from the photo's
    for run in (
        lambda net: restore(sde, net, lq, steps=2, edge_margin=6),
        lambda net: restore_tiled(sde, net, lq, steps=2, tile=24, overlap=8),
    ):
        spy = MeansSpy()
        run(spy)
        seen = torch.cat(spy.seen)
        assert len(spy.seen) >= 2 and torch.allclose(seen, lq.mean((-2, -1)).expand_as(seen))
    spy, given = MeansSpy(), torch.tensor([[0.1, 0.2, 0.3]])
    restore(sde, spy, lq, steps=2, cond_scalars=given)
    assert all(torch.equal(seen, given) for seen in spy.seen)


@torch.no_grad()
def test_means_and_peaks_networks_see_the_whole_photos_peaks_through_tiles():
    """A network taking two statistics per channel gets the whole photo's means and peaks on every tile, even
    on tiles that hold none of the photo's brightest block."""
    from refusion_pl.models.nafnet import photo_statistics
    from refusion_pl.tiling import restore_tiled

    sde = IRSDE(max_sigma=50, T=10)
    lq = torch.rand(1, 3, 40, 56) * 0.3
    lq[..., 32:36, 48:52] = 0.95  # one lamp, in the bottom-right tile only
    spy = MeansSpy()
    spy.photo_stats, spy.photo_kind = 6, "means_and_peaks"
    restore_tiled(sde, spy, lq, steps=2, tile=24, overlap=8)
    seen = torch.cat(spy.seen)
    expected = photo_statistics(lq, "means_and_peaks")
    assert len(spy.seen) >= 2 and torch.allclose(seen, expected.expand_as(seen))
    assert torch.allclose(expected[0, 3:], torch.full((3,), 0.95))
    spy.photo_stats = 4  # not what this kind gives a 3-channel photo
    with pytest.raises(ValueError, match="takes 4 photo statistics, but this 3-channel input gives 6"):
        restore(sde, spy, lq, steps=2)
