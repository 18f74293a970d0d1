"""prepare_for_inference: same outputs as the plain eager NCHW networks, switches honoured both ways."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from refusion_pl.checkpoints import load_original_state_dict
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder, prepare_for_inference
from refusion_pl.models.inference import inference_switches, is_compiled
from refusion_pl.models.layers import LayerNorm2d, is_channels_last, pointwise

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "original"
CL = torch.channels_last


@cache
def fixture(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def original_net(variant: str) -> ConditionalNAFNet:
    data = fixture(f"cnafnet_{variant}_w8")
    net = ConditionalNAFNet(**data["config"], variant=variant)
    return load_original_state_dict(net, data["state_dict"]).eval()


def original_ae() -> UNetAutoencoder:
    data = fixture("unet_ae_ch8")
    return load_original_state_dict(UNetAutoencoder(**data["config"]), data["state_dict"]).eval()


def test_fused_layer_norm_equals_mean_var_form() -> None:
    torch.manual_seed(0)
    norm = LayerNorm2d(16)
    norm.g.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 9, 7) * 3 + 1
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.g
    fused = norm(x.contiguous(memory_format=CL))
    assert is_channels_last(fused)  # the NHWC path ran and kept the layout
    assert rel_err(fused, expected) < 1e-5
    assert rel_err(norm(x), expected) < 1e-5


@pytest.mark.parametrize("batch", [1, 2])
def test_modulated_layer_norm_equals_norm_then_scale_and_shift(batch: int) -> None:
    torch.manual_seed(0)
    norm = LayerNorm2d(8)
    norm.g.data.uniform_(0.5, 1.5)
    x = torch.randn(batch, 8, 6, 5)
    scale, shift = torch.randn(batch, 8, 1, 1), torch.randn(batch, 8, 1, 1)
    expected = norm(x) * (scale + 1) + shift
    assert rel_err(norm.modulated(x.contiguous(memory_format=CL), scale, shift), expected) < 1e-5
    assert rel_err(norm.modulated(x, scale, shift), expected) < 1e-5


def test_pointwise_conv_as_matrix_multiply_equals_conv() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 12, 1)
    x = torch.randn(2, 8, 5, 6)
    out = pointwise(conv, x.contiguous(memory_format=CL))
    assert is_channels_last(out)
    assert rel_err(out, conv(x)) < 1e-5


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_prepared_net_equals_plain_eager_and_original(variant: str) -> None:
    data = fixture(f"cnafnet_{variant}_w8")
    plain = original_net(variant)
    prepared = prepare_for_inference(copy.deepcopy(plain), "cpu", compile=False)
    assert plain.intro.weight.is_contiguous()
    assert not prepared.intro.weight.is_contiguous()  # channels_last by default
    with torch.no_grad():
        expected = plain(data["x"], data["cond"], data["t"])
        out = prepared(data["x"], data["cond"], data["t"])
    assert out.is_contiguous()  # callers get NCHW back
    assert rel_err(out, expected) < 1e-4
    assert rel_err(out, data["out"]) < 1e-4


def test_prepared_net_runs_under_bf16_autocast() -> None:
    data = fixture("cnafnet_latent_w8")
    plain = original_net("latent")
    prepared = prepare_for_inference(copy.deepcopy(plain), compile=False)
    x, cond, t = data["x"][:1], data["cond"][:1], data["t"][:1]  # one image: the folded modulation path
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = prepared(x, cond, t)
    with torch.no_grad():
        expected = plain(x, cond, t)
    assert rel_err(out.float(), expected) < 5e-2


def test_prepared_autoencoder_equals_plain_eager_and_original() -> None:
    data = fixture("unet_ae_ch8")
    plain = original_ae()
    prepared = prepare_for_inference(copy.deepcopy(plain), compile=False)
    with torch.no_grad():
        latent, hidden = prepared.encode(data["x"])
        decoded = prepared.decode(latent, hidden)
        plain_decoded = plain.decode(*plain.encode(data["x"]))
    assert rel_err(latent, data["latent"]) < 1e-4
    assert rel_err(decoded, plain_decoded) < 1e-4
    assert rel_err(decoded, data["decoded"]) < 1e-4


def test_channels_last_switch_is_honoured_both_ways() -> None:
    net = original_net("pixel").train()
    prepare_for_inference(net, channels_last=True, compile=False)
    assert not net.training
    assert net.intro.weight.is_contiguous(memory_format=CL) and not net.intro.weight.is_contiguous()
    prepare_for_inference(net, channels_last=False, compile=False)
    assert net.intro.weight.is_contiguous()
    assert prepare_for_inference(net, "cpu") is net  # defaults on CPU: channels_last on, compile off
    assert not is_compiled(net) and not net.intro.weight.is_contiguous()


# The first torch.compile call imports torch._dynamo (~10 s on a busy 2-core machine): slow tests only.
@pytest.mark.slow
def test_compile_switch_is_honoured_both_ways_and_keeps_keys() -> None:
    net = original_net("pixel")
    keys = list(net.state_dict())
    prepare_for_inference(net, compile=True)
    assert is_compiled(net)
    assert list(net.state_dict()) == keys  # compiled in place: checkpoint keys unchanged
    prepare_for_inference(net, compile=False)
    assert not is_compiled(net)
    ae = original_ae()
    keys = list(ae.state_dict())
    prepare_for_inference(ae, compile=True)
    assert is_compiled(ae)
    assert list(ae.state_dict()) == keys
    prepare_for_inference(ae, compile=False)
    assert not is_compiled(ae)


@pytest.mark.slow
def test_compiled_net_runs_and_equals_eager() -> None:
    data = fixture("cnafnet_latent_w8")
    plain = original_net("latent")
    compiled = prepare_for_inference(copy.deepcopy(plain), compile=True)
    with torch.no_grad():
        out = compiled(data["x"], data["cond"], data["t"])
        expected = plain(data["x"], data["cond"], data["t"])
    assert rel_err(out, expected) < 1e-4
    assert list(compiled.state_dict()) == list(plain.state_dict())


@pytest.mark.slow
def test_frozen_compiled_net_follows_weights_loaded_after_compiling() -> None:
    """On CPUs compiling freezes the weights into the graph (`compile_options`): loading other weights into the
    prepared module afterwards must still change its outputs exactly as in eager mode."""
    data = fixture("cnafnet_latent_w8")
    plain = original_net("latent")
    compiled = prepare_for_inference(copy.deepcopy(plain), "cpu", compile=True)
    with torch.no_grad():
        before = compiled(data["x"], data["cond"], data["t"])
        for p in plain.parameters():
            p.mul_(0.9).add_(0.01)
        compiled.load_state_dict(plain.state_dict())
        out = compiled(data["x"], data["cond"], data["t"])
        expected = plain(data["x"], data["cond"], data["t"])
    assert rel_err(out, expected) < 1e-4
    assert rel_err(before, expected) > 1e-3  # the new weights do change the output


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"compile": "yes"}, r"inference\.compile='yes'"), ({"fast": True}, r"inference\.fast")],
)
def test_bad_inference_settings_name_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inference_switches(settings)


def test_missing_inference_settings_mean_the_defaults() -> None:
    assert inference_switches(None) == {"compile": None, "channels_last": None}


def test_sampling_embeds_the_time_once_per_step() -> None:
    """Per step: one network call and one time embedding (the blocks only apply their own linear map)."""
    from refusion_pl.sampling import sample
    from refusion_pl.sde import IRSDE

    net = prepare_for_inference(original_net("pixel"))
    calls = {"net": 0, "time_mlp": 0}
    net.register_forward_hook(lambda *_: calls.__setitem__("net", calls["net"] + 1))
    net.time_mlp.register_forward_hook(lambda *_: calls.__setitem__("time_mlp", calls["time_mlp"] + 1))
    sde = IRSDE(max_sigma=50, T=10)
    sample(sde, net, torch.rand(1, 3, 16, 16), sampler="ode", steps=4)
    assert calls == {"net": 4, "time_mlp": 4}
