"""``python -m refusion_pl.export``: safetensors files that restore exactly like their checkpoint, with a card."""

from __future__ import annotations

import itertools
import json
import struct
import sys
from pathlib import Path

import pytest
import torch

from refusion_pl import export as export_mod
from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.data.io import write_image
from refusion_pl.evaluate import evaluate
from refusion_pl.export import export
from refusion_pl.original import convert_original
from refusion_pl.pretrained import PretrainedError, from_pretrained, read_export_info
from refusion_pl.restore import RestoreError, restore
from tests.original_format import original_files
from tests.test_evaluate import save_trained_like_checkpoint
from tests.test_restore import config as restore_config
from tests.test_restore import save_checkpoint


def assert_plain_safetensors(path: Path) -> dict:
    """The file is a JSON header plus raw tensor bytes that fill the rest exactly: no pickle, no code."""
    raw = path.read_bytes()
    assert not raw.startswith(b"PK") and raw[:1] != b"\x80"  # neither torch's zip nor a bare pickle
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert 8 + header_size + spans[-1][1] == len(raw)
    return header


def with_ema(path: Path) -> Path:
    """The layout Lightning's EMA callback saves: averaged weights as `state_dict`, raw ones aside."""
    checkpoint = safe_torch_load(path)
    raw = {k: v + 0.5 if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    checkpoint.update(current_model_state=raw, averaging_state={}, global_step=1234)
    torch.save(checkpoint, path)
    return path


def test_round_trip_restores_identically_and_keeps_only_ema_weights(compose_config, tmp_path):
    ckpt = with_ema(save_checkpoint(tmp_path / "latent.ckpt"))
    cfg = compose_config(
        f"ckpt={ckpt}", f"output={tmp_path / 'model.safetensors'}", "measure=false", name="export"
    )
    result = export(cfg)
    exported = Path(result["output"])
    header = assert_plain_safetensors(exported)
    checkpoint = safe_torch_load(ckpt)
    assert {k for k in header if k != "__metadata__"} == set(
        checkpoint["state_dict"]
    )  # net.* + autoencoder.*
    loaded = from_pretrained(exported)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key]), key  # the EMA weights, not the raw ones
    info = read_export_info(exported)
    assert info["ema"] is True and info["global_step"] == 1234 and "optim" not in info["hyper_parameters"]
    source = tmp_path / "in"
    write_image(source / "a.png", torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0)))
    for name, path in (("from_ckpt", ckpt), ("from_export", exported)):
        restore(restore_config(path, source, tmp_path / name, sampler="sde", seed=3))
    assert (tmp_path / "from_ckpt" / "a.png").read_bytes() == (
        tmp_path / "from_export" / "a.png"
    ).read_bytes()
    card = Path(result["card"]).read_text()
    assert Path(result["card"]) == tmp_path / "model.md"
    assert "Task: shadow" in card and "1234 optimiser steps" in card and "EMA weights exported" in card
    assert "not measured (measure=false)" in card and "restore ckpt=model.safetensors" in card


def test_card_metrics_are_measured_on_the_exported_file(compose_config, tmp_path):
    ckpt = save_trained_like_checkpoint(
        tmp_path / "model.ckpt", compose_config("model=pixel", "experiment=smoke")
    )
    settings = ["crop=24", "max_images=1", "sample_steps=2", "lpips=false"]
    cfg = compose_config(
        f"ckpt={ckpt}", f"output={tmp_path / 'out' / 'm.safetensors'}", *settings, name="export",
        output_dir=tmp_path / "export_run",
    )  # fmt: skip
    result = export(cfg)
    reference = evaluate(
        compose_config(f"ckpt={ckpt}", *settings, name="evaluate", output_dir=tmp_path / "eval")
    )
    assert result["metrics"]["refusion"]["psnr"] == pytest.approx(reference["refusion"]["psnr"], abs=1e-9)
    card = Path(result["card"]).read_text()
    assert f"{reference['refusion']['psnr']:.2f}" in card and "1 test images restored with this file" in card
    assert "identity (LQ vs GT)" in card and "no EMA kept" in card


def test_converted_original_weights_export(compose_config, tmp_path):
    files = original_files("latent", tmp_path)
    convert_original(files["options"], tmp_path / "converted.ckpt")
    cfg = compose_config(
        f"ckpt={tmp_path / 'converted.ckpt'}", f"output={tmp_path / 'dehaze.safetensors'}", name="export"
    )
    result = export(cfg)  # measure=true, but a converted checkpoint has no test data of its own
    assert "not measured: the checkpoint records no test data" in result["metrics"]
    card = Path(result["card"]).read_text()
    assert "Task: dehaze" in card and "converted from `latent.yml` with `latent-net.pth` (sha256" in card
    assert "and `latent-ae.pth` (sha256" in card
    exported, converted = (
        from_pretrained(tmp_path / "dehaze.safetensors"),
        from_pretrained(tmp_path / "converted.ckpt"),
    )
    lq = torch.rand(1, 3, 16, 16)
    out = [
        m.restore(lq, sampler="ode", generator=torch.Generator().manual_seed(0))
        for m in (exported, converted)
    ]
    assert torch.equal(out[0], out[1])
    assert exported.run_config["task"]["name"] == "dehaze"
    source = read_export_info(tmp_path / "dehaze.safetensors")["config"]["converted_from"]
    assert (
        source["weights"]["path"] == "latent-net.pth" and source["options"] == "latent.yml"
    )  # no local paths


def test_export_errors(compose_config, tmp_path, monkeypatch, capsys):
    ckpt = save_checkpoint(tmp_path / "pixel.ckpt", model="pixel")
    with pytest.raises(RestoreError, match=r"must end in \.safetensors"):
        export(compose_config(f"ckpt={ckpt}", f"output={tmp_path / 'x.pt'}", name="export"))
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(RestoreError, match="not a refusion_pl diffusion checkpoint"):
        export(
            compose_config(
                f"ckpt={tmp_path / 'other.ckpt'}", f"output={tmp_path / 'x.safetensors'}", name="export"
            )
        )
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(PretrainedError, match="not a refusion_pl export"):
        from_pretrained(tmp_path / "foreign.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(PretrainedError, match="not a readable safetensors file"):
        from_pretrained(tmp_path / "broken.safetensors")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["export", "ckpt=missing.ckpt", "output=m.safetensors"])
    with pytest.raises(SystemExit) as exit_info:
        export_mod.main()
    assert exit_info.value.code == 2 and "no such checkpoint" in capsys.readouterr().err
