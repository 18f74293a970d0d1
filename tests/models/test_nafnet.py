"""ConditionalNAFNet: agreement with the original implementation, shapes, conditioning and gradients."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from refusion_pl.checkpoints import load_original_state_dict
from refusion_pl.models import ConditionalNAFNet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "original"
VARIANTS = ("pixel", "latent", "stereo", "bokeh")


@cache
def fixture(variant: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"cnafnet_{variant}_w8.pt", weights_only=True)


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def cond_scalars(data: dict[str, Any]) -> Tensor | None:
    if "src_lens" not in data:
        return None
    return torch.stack([data["src_lens"], data["tgt_lens"], data["disparity"]], dim=1)


def loaded_net(variant: str) -> ConditionalNAFNet:
    data = fixture(variant)
    net = ConditionalNAFNet(**data["config"], variant=variant)
    return load_original_state_dict(net, data["state_dict"]).eval()


def small_net(variant: str = "pixel", img_channel: int = 3) -> ConditionalNAFNet:
    torch.manual_seed(0)
    return ConditionalNAFNet(img_channel, 8, [1, 1], 1, [1, 1], variant=variant).eval()


def channels(net: ConditionalNAFNet) -> int:
    return net.img_channel * (2 if net.stereo else 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_original_implementation(variant: str) -> None:
    data = fixture(variant)
    net = loaded_net(variant)
    with torch.no_grad():
        out = net(data["x"], data["cond"], data["t"], cond_scalars=cond_scalars(data))
    assert out.shape == data["out"].shape
    assert rel_err(out, data["out"]) < 1e-4


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_time_step_matters(variant: str) -> None:
    data = fixture(variant)
    net = loaded_net(variant)
    with torch.no_grad():
        out = net(data["x"], data["cond"], data["t"] + 1)
    assert rel_err(out, data["out"]) > 1e-3


def test_bokeh_scalars_matter_and_are_required() -> None:
    data = fixture("bokeh")
    net = loaded_net("bokeh")
    with torch.no_grad():
        out = net(data["x"], data["cond"], data["t"], cond_scalars=cond_scalars(data).flip(1))
        assert rel_err(out, data["out"]) > 1e-3
        with pytest.raises(ValueError, match="cond_scalars"):
            net(data["x"], data["cond"], data["t"])


def test_stereo_views_interact() -> None:
    """The right view's input changes the left view's output only through the cross-view fusion."""
    data = fixture("stereo")
    net = loaded_net("stereo")
    x = data["x"].clone()
    x[:, 3:] += 0.5
    with torch.no_grad():
        out = net(x, data["cond"], data["t"])
    assert rel_err(out[:, :3], data["out"][:, :3]) > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(37, 53), (1, 1), (1, 6), (5, 3)])
def test_any_size_gives_input_size(variant: str, size: tuple[int, int]) -> None:
    net = small_net(variant)
    c = channels(net)
    x, cond = torch.randn(2, c, *size), torch.randn(2, c, *size)
    with torch.no_grad():
        out = net(x, cond, torch.tensor([3, 7]), cond_scalars=torch.randn(2, 3))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_odd_size_equals_explicit_zero_padding() -> None:
    """Padding happens inside: an odd input gives the crop of the zero-padded input's output."""
    net = loaded_net("pixel")
    x, cond = torch.randn(1, 3, 21, 27), torch.randn(1, 3, 21, 27)
    padded = [torch.nn.functional.pad(v, (0, 5, 0, 11)) for v in (x, cond)]
    with torch.no_grad():
        out = net(x, cond, torch.tensor([4]))
        ref = net(*padded, torch.tensor([4]))[..., :21, :27]
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_independence(variant: str) -> None:
    data = fixture(variant)
    net = loaded_net(variant)
    scalars = cond_scalars(data)
    with torch.no_grad():
        singles = [
            net(data["x"][i : i + 1], data["cond"][i : i + 1], data["t"][i : i + 1],
                cond_scalars=None if scalars is None else scalars[i : i + 1])
            for i in range(data["x"].shape[0])
        ]  # fmt: skip
    torch.testing.assert_close(torch.cat(singles), data["out"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "t", [5, torch.tensor(5), torch.tensor(5.0), torch.tensor([5, 5]), torch.full((2, 1, 1, 1), 5)]
)
def test_time_step_forms(t: Tensor | int) -> None:
    net = loaded_net("latent")
    data = fixture("latent")
    with torch.no_grad():
        ref = net(data["x"], data["cond"], torch.tensor([5, 5]))
        torch.testing.assert_close(net(data["x"], data["cond"], t), ref)


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_paper_width_runs_on_odd_multiple(variant: str) -> None:
    c = 3 if variant == "pixel" else 8
    net = ConditionalNAFNet(c, 64, [1, 1, 1, 1], 1, [1, 1, 1, 1], variant=variant).eval()
    x = torch.randn(1, c, 40, 56)
    with torch.no_grad():
        assert net(x, x, torch.tensor([100])).shape == x.shape


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        ConditionalNAFNet(variant="bokhe")  # type: ignore[arg-type]


def _grads(net: ConditionalNAFNet) -> dict[str, Tensor | None]:
    c = channels(net)
    torch.manual_seed(1)
    x, cond = torch.randn(2, c, 64, 64), torch.randn(2, c, 64, 64)
    out = net(x, cond, torch.tensor([2, 9]), cond_scalars=torch.randn(2, 3))
    out.square().mean().backward()
    return {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_gradient(variant: str) -> None:
    """Residual scales start at zero (blocks start as identity), so open them before checking."""
    net = small_net(variant).train()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.fill_(0.5)
    dead = [name for name, g in _grads(net).items() if g is None or not g.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("variant", VARIANTS)
def test_residual_scales_learn_from_zero_init(variant: str) -> None:
    net = small_net(variant).train()
    grads = _grads(net)
    scales = {n: g for n, g in grads.items() if n.endswith(("beta", "gamma"))}
    assert scales
    assert all(g is not None and g.abs().sum() > 0 for g in scales.values())


def test_icnr_upsampling_starts_as_nearest_neighbour_and_keeps_the_architecture() -> None:
    """After `init_icnr_upsampling` every upsampling turns a feature map into 2x2 constant blocks (no checkerboard);
    the state dict keeps its keys and shapes, so trained weights load as before."""
    torch.manual_seed(0)
    net = ConditionalNAFNet(
        img_channel=4, width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], variant="latent"
    )
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, net.ups[0][0].in_channels, 5, 5)
    blocks = net.ups[0](x).unfold(2, 2, 2).unfold(3, 2, 2)
    assert (blocks - blocks[..., :1, :1]).abs().max() > 0.05  # PyTorch's init: a checkerboard
    assert net.init_icnr_upsampling() is net
    after = net.state_dict()
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {f"ups.{i}.0.weight" for i in range(2)}
    for up in net.ups:
        blocks = up(torch.randn(1, up[0].in_channels, 5, 5)).unfold(2, 2, 2).unfold(3, 2, 2)
        assert (blocks - blocks[..., :1, :1]).abs().max() < 1e-5
        assert 0.1 < float(up[0].weight.std()) < 1.0  # the default init's scale, not zeros


def test_photo_stats_start_ignored_then_condition_every_block() -> None:
    """A fresh photo_stats network predicts what the same weights without it predict (its last layer is zero);
    once trained, photos with other means give other predictions; the means are required and sized."""
    net = ConditionalNAFNet(3, 8, [1, 1], 1, [1, 1], variant="latent", photo_stats=3).eval()
    plain = ConditionalNAFNet(3, 8, [1, 1], 1, [1, 1], variant="latent").eval()
    with torch.no_grad():  # residual scales start at zero: open the blocks, or no embedding matters
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.fill_(0.5)
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("photo_mlp.") for k in unexpected)
    torch.manual_seed(1)
    x, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    dark, bright = torch.full((2, 3), 0.05), torch.full((2, 3), 0.5)
    with torch.no_grad():
        assert torch.equal(net(x, cond, 7, dark), plain(x, cond, 7))
        torch.nn.init.normal_(net.photo_mlp[-1].weight)
        assert rel_err(net(x, cond, 7, dark), net(x, cond, 7, bright)) > 1e-2
        with pytest.raises(ValueError, match=r"cond_scalars of shape \(B, 3\).*photo_statistics"):
            net(x, cond, 7)
        with pytest.raises(ValueError, match="cond_scalars of shape"):
            net(x, cond, 7, torch.rand(2, 6))


def test_photo_stats_are_refused_for_bokeh_and_below_zero() -> None:
    for variant, count in (("bokeh", 3), ("pixel", -1)):
        with pytest.raises(ValueError, match="photo_stats"):
            ConditionalNAFNet(3, 8, [1, 1], 1, [1, 1], variant=variant, photo_stats=count)


def test_photo_peaks_are_the_brightest_blocks_not_the_brightest_pixel() -> None:
    """Peaks: per channel, the brightest PEAK_POOL-averaged block (a lamp), not one hot pixel; the statistics of
    each kind; settings map to kinds and counts, and unknown ones are refused by name."""
    from refusion_pl.models.nafnet import photo_peaks, photo_statistics, photo_stats_count, photo_stats_kind

    photo = torch.full((1, 3, 32, 48), 0.2)
    photo[0, 0, 8:12, 16:20] = 0.9  # a red lamp filling one 4x4 block
    photo[0, 1, 5, 7] = 1.0  # one hot green pixel
    peaks = photo_peaks(photo)
    assert torch.allclose(peaks, torch.tensor([[0.9, 0.2 + 0.8 / 16, 0.2]]))
    assert torch.allclose(photo_peaks(photo, pool=1), torch.tensor([[0.9, 1.0, 0.2]]))
    assert photo_peaks(photo[0]).shape == (3,) and photo_peaks(torch.rand(2, 3, 2, 3)).shape == (2, 3)
    stats = photo_statistics(photo, "means_and_peaks")
    assert torch.equal(stats[:, :3], photo.mean((-2, -1))) and torch.equal(stats[:, 3:], peaks)
    assert torch.equal(photo_statistics(photo, "means"), photo.mean((-2, -1)))
    assert torch.allclose(photo_statistics(photo, "peak"), torch.tensor([[0.9]]))
    with pytest.raises(ValueError, match="'peaks'; choose one of"):
        photo_statistics(photo, "peaks")
    kinds = [photo_stats_kind(s) for s in (False, None, True, "means", "means_and_peaks", "peak")]
    assert kinds == [None, None, "means", "means", "means_and_peaks", "peak"]
    assert [photo_stats_count(k, 3) for k in kinds] == [0, 0, 3, 3, 6, 1]
    with pytest.raises(ValueError, match=r"photo_stats='peaks'.*means_and_peaks"):
        photo_stats_kind("peaks")
