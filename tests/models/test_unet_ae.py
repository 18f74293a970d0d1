"""UNetAutoencoder: agreement with the original implementation, padding/cropping, locality, gradients."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from refusion_pl.checkpoints import load_original_state_dict
from refusion_pl.models import AEHidden, UNetAutoencoder
from refusion_pl.models.unet_ae import UpConv, upsample_conv

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "original" / "unet_ae_ch8.pt"


@cache
def fixture() -> dict[str, Any]:
    return torch.load(FIXTURE, weights_only=True)


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def loaded_ae() -> UNetAutoencoder:
    data = fixture()
    return load_original_state_dict(UNetAutoencoder(**data["config"]), data["state_dict"]).eval()


def small_ae() -> UNetAutoencoder:
    torch.manual_seed(0)
    return UNetAutoencoder(3, 3, ch=4, ch_mult=[1, 2, 2], embed_dim=2).eval()


def test_encode_matches_original() -> None:
    data = fixture()
    with torch.no_grad():
        latent, hidden = loaded_ae().encode(data["x"])
    assert rel_err(latent, data["latent"]) < 1e-4
    assert len(hidden) == len(data["hidden"])
    for i, (ours, ref) in enumerate(zip(hidden, data["hidden"])):
        assert ours.shape == ref.shape, i
        assert rel_err(ours, ref) < 1e-4, i


def test_decode_matches_original() -> None:
    data = fixture()
    ae = loaded_ae()
    with torch.no_grad():
        latent, hidden = ae.encode(data["x"])
        decoded = ae.decode(latent, hidden)
        latent_y, _ = ae.encode(data["y"])
        swapped = ae.decode(latent_y, hidden)
    assert rel_err(decoded, data["decoded"]) < 1e-4
    assert rel_err(latent_y, data["latent_y"]) < 1e-4
    assert rel_err(swapped, data["decoded_y_with_x_hidden"]) < 1e-4
    assert rel_err(swapped, decoded) > 1e-3  # the latent, not just the skips, shapes the output


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (3, 5), (9, 2)])
def test_any_size_round_trips_to_input_size(size: tuple[int, int]) -> None:
    ae = small_ae()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        latent, hidden = ae.encode(x)
        out = ae.decode(latent, hidden)
    padded = [-(-s // 8) * 8 for s in size]
    assert latent.shape == (2, 2, padded[0] // 4, padded[1] // 4)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_odd_size_equals_explicit_reflect_padding() -> None:
    ae = loaded_ae()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        latent, hidden = ae.encode(x)
        ref_latent, ref_hidden = ae.encode(F.pad(x, (0, 11, 0, 11), mode="reflect"))
        out = ae.decode(latent, hidden)
        ref = ae.decode(ref_latent, ref_hidden)
    torch.testing.assert_close(latent, ref_latent)
    assert ref.shape[-2:] == (48, 64)
    torch.testing.assert_close(out, ref[..., :37, :53])


def test_hidden_is_a_list_that_remembers_the_size() -> None:
    ae = small_ae()
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        latent, hidden = ae.encode(x)
        plain = [h.clone() for h in hidden]
        assert isinstance(hidden, list) and isinstance(hidden, AEHidden)
        assert hidden.image_size == (13, 21)
        torch.testing.assert_close(ae.decode(latent, plain, size=(13, 21)), ae.decode(latent, hidden))
        assert ae.decode(latent, plain).shape[-2:] == (16, 24)  # no size known: the padded size
        assert ae.decode(latent, hidden).shape[-2:] == (13, 21)
        assert len(hidden) == 7  # decode must not consume the caller's list
        assert ae(x).shape == x.shape


def test_batch_independence() -> None:
    data = fixture()
    ae = loaded_ae()
    with torch.no_grad():
        singles = [ae(data["x"][i : i + 1]) for i in range(data["x"].shape[0])]
    torch.testing.assert_close(torch.cat(singles), data["decoded"], rtol=1e-4, atol=1e-5)


def test_paper_settings_on_40x56() -> None:
    torch.manual_seed(0)
    ae = UNetAutoencoder(in_ch=3, out_ch=3, ch=8, ch_mult=[4, 8, 8, 16], embed_dim=8).eval()
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        latent, hidden = ae.encode(x)
        out = ae.decode(latent, hidden)
    assert latent.shape == (1, 8, 6, 8)  # padded to 48x64, downsampled 8x
    assert out.shape == x.shape


def test_upper_levels_are_local() -> None:
    """Only the deepest level attends globally: a far-away change leaves the upper hidden maps untouched.

    Tiled encoding relies on this.
    """
    ae = UNetAutoencoder(3, 3, ch=4, ch_mult=[1, 2, 2, 4], embed_dim=2).eval()
    x = torch.rand(1, 3, 128, 128)
    y = x.clone()
    y[..., 96:, 96:] = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        hx, hy = ae.encode(x)[1], ae.encode(y)[1]
    for i, (a, b) in enumerate(zip(hx[:7], hy[:7])):  # init + levels at full, half, quarter resolution
        s = a.shape[-1] // 4  # the top-left quarter is far from the change at every scale
        torch.testing.assert_close(a[..., :s, :s], b[..., :s, :s], msg=f"hidden {i}")
    assert not torch.allclose(hx[-1][..., :1, :1], hy[-1][..., :1, :1])  # the deepest level is global


def test_every_parameter_gets_gradient() -> None:
    ae = small_ae().train()
    x = torch.rand(2, 3, 24, 24)
    latent, hidden = ae.encode(x)
    ae.decode(latent, hidden).sub(x).abs().mean().backward()
    dead = [n for n, p in ae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def latent_sensitivity(ae: UNetAutoencoder) -> tuple[float, float]:
    """(latent change, decoded change) between an image and its half-bright copy, both through its skips."""
    torch.manual_seed(1)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        latent, hidden = ae.encode(image)
        latent_dim, _ = ae.encode(image * 0.5)
        decoded_change = (ae.decode(latent_dim, hidden) - ae.decode(latent, hidden)).abs().mean()
    return float((latent_dim - latent).abs().mean()), float(decoded_change)


@pytest.mark.parametrize(("ch", "ch_mult"), [(4, [1, 2, 2, 2]), (8, [4, 8, 8, 16])])
def test_signal_preserving_init_brings_the_latent_to_life(ch: int, ch_mult: list[int]) -> None:
    """PyTorch's default init leaves the latent path dead at both ends; the signal-preserving init does not."""
    torch.manual_seed(0)
    default = UNetAutoencoder(ch=ch, ch_mult=ch_mult, embed_dim=4)
    torch.manual_seed(0)
    preserving = UNetAutoencoder(ch=ch, ch_mult=ch_mult, embed_dim=4).init_signal_preserving()
    default_latent, default_decoded = latent_sensitivity(default)
    latent, decoded = latent_sensitivity(preserving)
    assert default_latent < 0.02 and default_decoded < 1e-5  # measured: ~0.005 and ~1e-7
    assert latent > 0.1 and decoded > 1e-3  # measured: 0.2-0.4 and 0.01-0.03
    assert decoded > 1000 * default_decoded


def test_signal_preserving_init_does_not_change_loaded_weights() -> None:
    """An initialisation only: the original's weights load over it and decode exactly as before."""
    data = fixture()
    ae = UNetAutoencoder(**data["config"]).init_signal_preserving()
    load_original_state_dict(ae, data["state_dict"]).eval()
    with torch.no_grad():
        decoded = ae.decode(*ae.encode(data["x"]))
    assert rel_err(decoded, data["decoded"]) < 1e-4


def test_residual_decoding_returns_the_input_where_the_latent_is_unchanged():
    """Residual decoding adds only what the latent's change does; direct decoding adds its reconstruction error."""
    torch.manual_seed(0)
    ae = (
        UNetAutoencoder(ch=4, ch_mult=(1, 2), embed_dim=4, decode_mode="residual")
        .init_signal_preserving()
        .eval()
    )
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        latent, hidden = ae.encode(x)
        assert torch.allclose(ae.decode_restored(latent, hidden), x, atol=1e-5)
        moved = latent + 0.3 * torch.randn_like(latent)
        change = ae.decode(moved, hidden) - ae.decode(latent, hidden)
        assert change.abs().mean() > 1e-3  # the latent matters, so the check below can fail
        assert torch.allclose(ae.decode_restored(moved, hidden), x + change, atol=1e-5)
        ae.decode_mode = "direct"
        assert torch.equal(ae.decode_restored(moved, hidden), ae.decode(moved, hidden))
    with pytest.raises(ValueError, match=r"decode_mode='sum'"):
        UNetAutoencoder(ch=4, ch_mult=(1, 2), embed_dim=4, decode_mode="sum")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("size", "bias"), [((5, 7), True), ((1, 3), False), ((12, 8), True)])
def test_subpixel_upsampling_conv_equals_upsample_then_conv(
    size: tuple[int, int], bias: bool, channels_last: bool
) -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1, bias=bias)
    x = torch.randn(2, 6, *size, requires_grad=True)
    reference = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    conv_fast = copy.deepcopy(conv).to(memory_format=memory_format)
    x_fast = x.detach().to(memory_format=memory_format).requires_grad_()
    out = upsample_conv(conv_fast, x_fast)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=memory_format)
    # the same gradients: training may run it too
    grads = torch.autograd.grad(out.square().sum(), [x_fast, *conv_fast.parameters()])
    reference_grads = torch.autograd.grad(reference.square().sum(), [x, *conv.parameters()])
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-4)


def test_subpixel_switch_keeps_the_decoder_output() -> None:
    ae, data = loaded_ae(), fixture()
    upconvs = [m for m in ae.modules() if isinstance(m, UpConv) and isinstance(m.upsample, torch.nn.Upsample)]
    assert len(upconvs) == len(ae.decoder) - 1 and all(m.subpixel for m in upconvs)
    with torch.no_grad():
        latent, hidden = ae.encode(data["x"])
        fast = ae.decode(latent, hidden)
        for module in upconvs:
            module.subpixel = False
        plain = ae.decode(latent, hidden)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
