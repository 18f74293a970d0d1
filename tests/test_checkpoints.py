"""Checkpoint loading: safe reads, wrappers and prefixes, strictness with useful messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from refusion_pl.checkpoints import (
    CheckpointKeyError,
    CheckpointShapeError,
    UnsafeCheckpointError,
    load_original_state_dict,
    safe_torch_load,
)
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "original"


def load_fixture(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


@pytest.fixture(scope="module")
def latent_fx() -> dict[str, Any]:
    return load_fixture("cnafnet_latent_w8")


def new_net(data: dict[str, Any], variant: str = "latent") -> ConditionalNAFNet:
    return ConditionalNAFNet(**data["config"], variant=variant).eval()


def assert_reproduces(net: ConditionalNAFNet, data: dict[str, Any]) -> None:
    with torch.no_grad():
        out = net(data["x"], data["cond"], data["t"])
    torch.testing.assert_close(out, data["out"], rtol=1e-4, atol=1e-5)


def test_plain_state_dict(latent_fx: dict[str, Any]) -> None:
    assert_reproduces(load_original_state_dict(new_net(latent_fx), latent_fx["state_dict"]), latent_fx)


def test_fresh_module_does_not_reproduce(latent_fx: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        assert_reproduces(new_net(latent_fx), latent_fx)


def test_module_prefix(latent_fx: dict[str, Any]) -> None:
    prefixed = {f"module.{k}": v for k, v in latent_fx["state_dict"].items()}
    assert_reproduces(load_original_state_dict(new_net(latent_fx), prefixed), latent_fx)


@pytest.mark.parametrize("wrapper", ["params", "state_dict"])
def test_wrapped_state_dict(latent_fx: dict[str, Any], wrapper: str) -> None:
    wrapped = {wrapper: latent_fx["state_dict"], "iter": torch.tensor(3)}
    assert_reproduces(load_original_state_dict(new_net(latent_fx), wrapped), latent_fx)


def test_from_path(latent_fx: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "net.pth"
    torch.save(latent_fx["state_dict"], path)
    assert_reproduces(load_original_state_dict(new_net(latent_fx), path), latent_fx)
    assert_reproduces(load_original_state_dict(new_net(latent_fx), str(path)), latent_fx)


def test_own_state_dict_round_trips(latent_fx: dict[str, Any]) -> None:
    source = load_original_state_dict(new_net(latent_fx), latent_fx["state_dict"])
    assert_reproduces(load_original_state_dict(new_net(latent_fx), source.state_dict()), latent_fx)


def test_missing_key_is_named(latent_fx: dict[str, Any]) -> None:
    sd = dict(latent_fx["state_dict"])
    del sd["encoders.1.0.conv2.weight"]
    with pytest.raises(CheckpointKeyError, match=r"encoders\.1\.0\.conv2\.weight") as info:
        load_original_state_dict(new_net(latent_fx), sd)
    assert isinstance(info.value, KeyError)
    assert "missing" in str(info.value)


def test_unexpected_key_is_named(latent_fx: dict[str, Any]) -> None:
    sd = {**latent_fx["state_dict"], "encoders.0.0.extra.weight": torch.zeros(2)}
    with pytest.raises(KeyError, match=r"encoders\.0\.0\.extra\.weight"):
        load_original_state_dict(new_net(latent_fx), sd)


def test_nothing_is_loaded_on_error(latent_fx: dict[str, Any]) -> None:
    net = new_net(latent_fx)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {**latent_fx["state_dict"], "stray": torch.zeros(1)}
    with pytest.raises(CheckpointKeyError):
        load_original_state_dict(net, sd)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_shape_mismatch_names_key_and_shapes(latent_fx: dict[str, Any]) -> None:
    sd = {**latent_fx["state_dict"], "intro.weight": torch.zeros(8, 6, 3, 3)}
    with pytest.raises(CheckpointShapeError, match=r"intro\.weight") as info:
        load_original_state_dict(new_net(latent_fx), sd)
    assert isinstance(info.value, ValueError)
    assert "(8, 6, 3, 3)" in str(info.value) and "(8, 8, 3, 3)" in str(info.value)


def test_wrong_variant_is_refused() -> None:
    """A bokeh checkpoint does not silently load into a latent network of the same size."""
    data = load_fixture("cnafnet_bokeh_w8")
    with pytest.raises(CheckpointKeyError, match="cam_mlp"):
        load_original_state_dict(new_net(data, "latent"), data["state_dict"])


def test_autoencoder_keys_are_renamed_and_reported_in_original_form() -> None:
    data = load_fixture("unet_ae_ch8")
    ae = UNetAutoencoder(**data["config"])
    load_original_state_dict(ae, data["state_dict"])
    assert "encoder.3.attn.body.to_qkv.weight" in ae.state_dict()
    sd = {**data["state_dict"], "decoder.9.0.block1.proj.weight": torch.zeros(1)}
    with pytest.raises(CheckpointKeyError, match=r"decoder\.9\.0\.block1\.proj\.weight"):
        load_original_state_dict(ae, sd)


def test_unknown_module_loads_strictly() -> None:
    linear = nn.Linear(2, 3)
    sd = {"module.weight": torch.ones(3, 2), "module.bias": torch.zeros(3)}
    load_original_state_dict(linear, sd)
    torch.testing.assert_close(linear.weight, torch.ones(3, 2))
    with pytest.raises(CheckpointKeyError, match="bias"):
        load_original_state_dict(linear, {"weight": torch.ones(3, 2)})


class Payload:
    """Stands for any pickled object that would need code to be unpickled."""

    def __init__(self) -> None:
        self.value = 1


def test_safe_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(1), "obj": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth"):
        safe_torch_load(path)
    with pytest.raises(UnsafeCheckpointError):
        load_original_state_dict(nn.Linear(1, 1), path)


def test_safe_load_reads_tensors(tmp_path: Path) -> None:
    path = tmp_path / "ok.pth"
    payload: dict[str, Tensor | int | list[int]] = {"w": torch.arange(3), "step": 4, "sizes": [1, 2]}
    torch.save(payload, path)
    loaded = safe_torch_load(path)
    assert loaded["step"] == 4 and loaded["sizes"] == [1, 2]
    torch.testing.assert_close(loaded["w"], torch.arange(3))
