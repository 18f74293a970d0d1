"""Weights of the original implementation on the command line: option files + `.pth` files to checkpoints.

Weight files are built in the original's format and naming from this package's networks (random weights, test
sizes), next to option files in the original's layout (the published ones, shrunk); converted checkpoints must
sample exactly like the networks they came from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from refusion_pl import convert as convert_mod
from refusion_pl.checkpoints import load_original_state_dict, safe_torch_load
from refusion_pl.data.io import read_image, write_image
from refusion_pl.evaluate import evaluate
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder
from refusion_pl.original import ConversionError, convert_original, read_options
from refusion_pl.pipeline import restore as sample_image
from refusion_pl.pretrained import from_pretrained, restore_with_scalars
from refusion_pl.restore import RestoreError, restore
from refusion_pl.sampling import sample
from refusion_pl.sde import IRSDE
from tests.conftest import load_fixture
from tests.original_format import (
    OPTIONS,
    TINY_T,
    original_files,
    original_state_dict,
    tiny_networks,
    write_options,
)
from tests.test_restore import config as restore_config

SCALARS = torch.tensor([[5.0, -14.0, 7.5]])  # bokeh: source lens, target lens, disparity (network units)


def library_sample(files: dict[str, Any], lq: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The same networks sampled through the library API, deterministically (probability-flow ODE)."""
    sde = IRSDE(max_sigma=50, T=TINY_T, schedule="cosine", eps=0.005)
    net = files["net"]
    model = (lambda x, mu, t: net(x, mu, t, SCALARS)) if net.variant == "bokeh" else net
    generator = torch.Generator().manual_seed(seed)
    return sample_image(sde, model, lq, autoencoder=files["ae"], sampler="ode", generator=generator)


def photo(channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random image, so that 8-bit files round-trip the values the test compares."""
    coarse = torch.rand(1, channels, 4, 4, generator=torch.Generator().manual_seed(seed))
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (image[0] * 255).round() / 255


# ---- the test files themselves --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fixture", "build"),
    [
        ("cnafnet_pixel_w8", lambda c: ConditionalNAFNet(**c, variant="pixel")),
        ("cnafnet_latent_w8", lambda c: ConditionalNAFNet(**c, variant="latent")),
        ("cnafnet_stereo_w8", lambda c: ConditionalNAFNet(**c, variant="stereo")),
        ("cnafnet_bokeh_w8", lambda c: ConditionalNAFNet(**c, variant="bokeh")),
        ("unet_ae_ch8", lambda c: UNetAutoencoder(**c)),
    ],
)
def test_written_files_use_the_original_naming(fixture: str, build: Any) -> None:
    """`original_state_dict` reproduces the key names of state dicts saved by the original code."""
    data = load_fixture(fixture)
    module = load_original_state_dict(build(data["config"]), data["state_dict"])
    written = original_state_dict(module)
    assert sorted(written) == sorted(data["state_dict"])
    for key, value in data["state_dict"].items():
        assert torch.equal(written[key], value), key


# ---- option files ---------------------------------------------------------------------------------------------
PUBLISHED = sorted(p.name for p in OPTIONS.glob("*.yml"))
EXPECTED = {  # published Refusion option files: (model, variant, task, scale)
    "deblurring__test__refusion.yml": ("pixel", "pixel", "derain", 1),  # its distortion is a copied "derain"
    "deblurring__train__refusion.yml": ("pixel", "pixel", "deblur", 1),
    "deraining__test__refusion.yml": ("pixel", "pixel", "derain", 1),
    "deraining__train__refusion.yml": ("pixel", "pixel", "derain", 1),
    "deshadow__test__refusion.yml": ("pixel", "pixel", "shadow", 1),
    "deshadow__train__refusion.yml": ("pixel", "pixel", "shadow", 1),
    "inpainting__test__refusion.yml": ("pixel", "pixel", "derain", 1),
    "inpainting__train__refusion.yml": ("pixel", "pixel", "derain", 1),
    "latent-bokeh__bokeh__test__refusion.yml": ("latent", "bokeh", "bokeh", 1),
    "latent-bokeh__bokeh__train__refusion.yml": ("latent", "bokeh", "bokeh", 1),
    "latent-dehazing__dehazing__test__nasde.yml": ("latent", "latent", "dehaze", 1),
    "latent-dehazing__dehazing__train__nasde.yml": ("latent", "latent", "dehaze", 1),
    "sisr__test__refusion.yml": ("pixel", "pixel", "sr", 4),
    "sisr__train__refusion.yml": ("pixel", "pixel", "sr", 4),
    "stereo-sr__ssr__test__refusion.yml": ("pixel", "stereo", "stereo_sr", 4),
    "stereo-sr__ssr__train__refusion.yml": ("pixel", "stereo", "stereo_sr", 4),
}


def test_every_published_option_file_is_read_or_refused_by_name() -> None:
    assert len(PUBLISHED) == 33
    for name in PUBLISHED:
        path = OPTIONS / name
        if name in EXPECTED:
            spec = read_options(path)
            assert (spec.model, spec.variant, spec.task["name"], spec.task["scale"]) == EXPECTED[name], name
            assert spec.sde["prediction"] == "noise" and spec.task["crop_border"] == 4
        elif name.startswith("denoising-sde"):  # another SDE (DenoisingSDE), not IR-SDE
            with pytest.raises(ConversionError, match=rf"{name}: no distortion key.*DenoisingSDE"):
                read_options(path)
        elif "ir-sde" in name:  # IR-SDE's ConditionalUNet
            with pytest.raises(ConversionError, match=rf"{name}.*network_G\.which_model_G='ConditionalUNet'"):
                read_options(path)
        else:  # unet-latent: the autoencoder stage alone
            assert name.startswith("unet-latent"), name
            with pytest.raises(ConversionError, match=rf"{name}.*autoencoder alone.*autoencoder_weights"):
                read_options(path)


def test_published_settings_are_read_as_written() -> None:
    dehaze = read_options(OPTIONS / "latent-dehazing__dehazing__test__nasde.yml")
    assert dehaze.nafnet == {
        "width": 64,
        "enc_blk_nums": [1, 1, 1, 28],
        "middle_blk_num": 1,
        "dec_blk_nums": [1, 1, 1, 1],
    }
    assert dehaze.autoencoder == {"ch": 8, "ch_mult": [4, 8, 8, 16], "embed_dim": 8} and dehaze.channels == 3
    assert dehaze.weights == "pretrained_models/latent-reffusion-dehazing.pth"
    assert dehaze.autoencoder_weights == "pretrained_models/latent-dehazing.pth"
    shadow = read_options(OPTIONS / "deshadow__test__refusion.yml")
    assert (shadow.sde["max_sigma"], shadow.sde["steps"], shadow.sde["sampler"]) == (50, 100, "sde")
    assert shadow.weights == "pretrained/refusion.pth" and shadow.autoencoder is None
    assert read_options(OPTIONS / "deblurring__test__refusion.yml", task="deblur").task["name"] == "deblur"
    with pytest.raises(ConversionError, match="task='blur' is unknown"):
        read_options(OPTIONS / "deblurring__test__refusion.yml", task="blur")


# ---- conversion and sampling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["pixel", "latent", "sr", "stereo", "bokeh"])
@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "module-prefixed"])
def test_converted_checkpoint_samples_like_the_networks(
    case: str, data_parallel: bool, tmp_path: Path
) -> None:
    files = original_files(case, tmp_path, data_parallel=data_parallel, seed=3)
    convert_original(files["options"], tmp_path / "converted.ckpt")
    module = from_pretrained(tmp_path / "converted.ckpt")
    assert module.net.variant == case if case != "sr" else module.net.variant == "pixel"
    lq = torch.rand(1, 6 if case == "stereo" else 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x, t = torch.randn(1, module.net.img_channel * (2 if case == "stereo" else 1), 8, 8), torch.tensor([2])
    args = (SCALARS,) if case == "bokeh" else ()
    with torch.no_grad():
        assert torch.equal(module.net(x, x * 0.5, t, *args), files["net"](x, x * 0.5, t, *args))
        fresh = tiny_networks(case, seed=99)[0]
        assert not torch.allclose(module.net(x, x * 0.5, t, *args), fresh(x, x * 0.5, t, *args))
        if files["ae"] is not None:
            assert torch.equal(module.autoencoder(lq), files["ae"](lq))
    restored = restore_with_scalars(
        module,
        lq,
        SCALARS if case == "bokeh" else None,
        sampler="ode",
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(restored, library_sample(files, lq))


def test_command_line_convert_then_restore_latent(tmp_path: Path) -> None:
    """The two commands of the README, as subprocesses: no ground truth anywhere."""
    files = original_files("latent", tmp_path, seed=5)
    image = photo(seed=2)
    write_image(tmp_path / "in" / "hazy.png", image)
    python = [sys.executable, "-m"]
    done = subprocess.run(
        [*python, "refusion_pl.convert", f"options={files['options']}", f"output={tmp_path / 'dehaze.ckpt'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "task: dehaze" in done.stdout and "restore with: python -m refusion_pl.restore" in done.stdout
    done = subprocess.run(
        [*python, "refusion_pl.restore", f"ckpt={tmp_path / 'dehaze.ckpt'}", f"input={tmp_path / 'in'}",
         f"output={tmp_path / 'out'}", "sampler=ode", "tile=none", "progress=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = library_sample(files, image[None])[0]
    write_image(tmp_path / "expected.png", expected)
    out, _ = read_image(tmp_path / "out" / "hazy.png")
    want, _ = read_image(tmp_path / "expected.png")
    assert torch.equal(out, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dehaze.ckpt", "expected.png", "in", "latent-ae.pth", "latent-net.pth", "latent.yml", "out",
    ]  # fmt: skip


@pytest.mark.parametrize("case", ["pixel", "sr"])
def test_command_line_restore_of_converted_pixel_models(case: str, tmp_path: Path, monkeypatch) -> None:
    files = original_files(case, tmp_path, data_parallel=True, seed=6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["convert", f"options={files['options']}", "output=model.ckpt"])
    convert_mod.main()
    image = photo(seed=4)
    write_image(tmp_path / "in" / "photo.png", image)
    summary = restore(
        restore_config(
            tmp_path / "model.ckpt", tmp_path / "in", tmp_path / "out", sampler="ode", sample_steps=None
        )
    )
    assert summary.written == ["photo.png"]
    lq = image[None]
    if case == "sr":  # the converted task's scale: restore upsamples the LQ first
        lq = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic").clamp(0, 1)
    write_image(tmp_path / "expected.png", library_sample(files, lq)[0])
    out, _ = read_image(tmp_path / "out" / "photo.png")
    assert out.shape[-1] == (64 if case == "sr" else 16)
    assert torch.equal(out, read_image(tmp_path / "expected.png")[0])


def test_option_file_restores_directly(tmp_path: Path) -> None:
    files = original_files("pixel", tmp_path, seed=7)
    write_image(tmp_path / "in" / "a.png", photo(seed=1))
    via_options = restore(restore_config(files["options"], tmp_path / "in", tmp_path / "o1", sampler="ode"))
    convert_original(files["options"], tmp_path / "m.ckpt")
    via_ckpt = restore(restore_config(tmp_path / "m.ckpt", tmp_path / "in", tmp_path / "o2", sampler="ode"))
    assert via_options.written == via_ckpt.written == ["a.png"]
    assert (tmp_path / "o1" / "a.png").read_bytes() == (tmp_path / "o2" / "a.png").read_bytes()


def test_converted_stereo_checkpoint_restores_view_pairs_like_the_library(tmp_path: Path) -> None:
    """restore reads <id>_L / <id>_R, stacks them for the network and writes both super-resolved views."""
    files = original_files("stereo", tmp_path)
    convert_original(files["options"], tmp_path / "m.ckpt")
    left, right = photo(seed=2), photo(seed=3)
    write_image(tmp_path / "in" / "a_L.png", left)
    write_image(tmp_path / "in" / "a_R.png", right)
    write_image(tmp_path / "in" / "b_L.png", left)  # no partner: reported, the pair still restores
    summary = restore(
        restore_config(
            tmp_path / "m.ckpt", tmp_path / "in", tmp_path / "out", sampler="ode", sample_steps=None
        )
    )
    assert summary.written == ["a_L.png + a_R.png"] and list(summary.failed) == ["b_L.png"]
    assert "no right view" in summary.failed["b_L.png"]
    lq = torch.nn.functional.interpolate(torch.cat([left, right])[None], scale_factor=4, mode="bicubic")
    expected = library_sample(files, lq.clamp(0, 1))[0]
    for view, name in zip(expected.chunk(2), ("a_L.png", "a_R.png")):
        write_image(tmp_path / "expected" / name, view)
        out, _ = read_image(tmp_path / "out" / name)
        assert out.shape == (3, 64, 64)
        # Two float paths to the same result; a value within ~1e-6 of a .5 rounding step may land one 8-bit
        # level apart (1 pixel of 12288 with the dependencies of 2026-12-03), nothing more.
        reference = read_image(tmp_path / "expected" / name)[0]
        assert (out - reference).abs().max() <= 1 / 255 + 1e-6
        assert (out != reference).float().mean() < 1e-3


def test_converted_bokeh_checkpoint_restores_with_lens_settings(tmp_path: Path) -> None:
    files = original_files("bokeh", tmp_path)
    convert_original(files["options"], tmp_path / "m.ckpt")
    image = photo(seed=4)
    write_image(tmp_path / "in" / "a.png", image)
    with pytest.raises(RestoreError, match=r"bokeh network: pass the lens settings.*meta=PATH"):
        restore(restore_config(tmp_path / "m.ckpt", tmp_path / "in", tmp_path / "out"))
    with pytest.raises(RestoreError, match="missing: disparity"):
        restore(
            restore_config(tmp_path / "m.ckpt", tmp_path / "in", tmp_path / "out", src_lens=5.0, tgt_lens=1.0)
        )
    # SCALARS in lens settings: 5.0 given as the network's number, Canon f/1.4 -> -14, disparity as written
    lenses = {"src_lens": 5.0, "tgt_lens": "Canon50mmf1.4BS", "disparity": 7.5}
    summary = restore(
        restore_config(
            tmp_path / "m.ckpt", tmp_path / "in", tmp_path / "out", sampler="ode", sample_steps=None, **lenses
        )
    )
    assert summary.written == ["a.png"]
    write_image(tmp_path / "expected.png", library_sample(files, image[None])[0])
    assert torch.equal(read_image(tmp_path / "out" / "a.png")[0], read_image(tmp_path / "expected.png")[0])


def test_converted_checkpoint_is_self_contained_and_weights_only(tmp_path: Path) -> None:
    files = original_files("latent", tmp_path)
    convert_original(files["options"], tmp_path / "m.ckpt")
    checkpoint = safe_torch_load(tmp_path / "m.ckpt")
    assert checkpoint["hyper_parameters"]["sde"] == {
        "max_sigma": 50.0, "steps": TINY_T, "schedule": "cosine", "eps": 0.005, "sampler": "sde",
        "sample_steps": None, "prediction": "noise",
    }  # fmt: skip
    assert any(k.startswith("autoencoder.") for k in checkpoint["state_dict"])
    source = checkpoint["refusion_pl"]["config"]["converted_from"]
    assert source["weights"]["path"].endswith("latent-net.pth") and len(source["weights"]["sha256"]) == 64
    for path in (files["weights"], files["ae_weights"]):
        path.unlink()  # nothing but the checkpoint is needed afterwards
    assert from_pretrained(tmp_path / "m.ckpt").autoencoder is not None


# ---- every error names the file, the key and the shapes ------------------------------------------------------
def test_missing_key(tmp_path: Path) -> None:
    files = original_files("pixel", tmp_path)
    state = torch.load(files["weights"], weights_only=True)
    del state["encoders.1.0.conv2.weight"]
    torch.save(state, files["weights"])
    with pytest.raises(ConversionError) as info:
        convert_original(files["options"], tmp_path / "m.ckpt")
    message = str(info.value)
    assert "pixel-net.pth" in message and "encoders.1.0.conv2.weight (module (32, 1, 3, 3))" in message
    assert "missing" in message and not (tmp_path / "m.ckpt").exists()


def test_wrong_shape(tmp_path: Path) -> None:
    """Weights of a width-8 network against an option file saying width 16."""
    files = original_files("pixel", tmp_path)
    opts = yaml.safe_load(files["options"].read_text())
    opts["network_G"]["setting"]["width"] = 16
    files["options"].write_text(yaml.safe_dump(opts))
    with pytest.raises(ConversionError) as info:
        convert_original(files["options"], tmp_path / "m.ckpt")
    message = str(info.value)
    assert "pixel-net.pth" in message and "network_G" in message
    assert "intro.weight: checkpoint (8, 6, 3, 3) vs module (16, 6, 3, 3)" in message


def test_unexpected_key(tmp_path: Path) -> None:
    files = original_files("pixel", tmp_path)
    state = {
        **torch.load(files["weights"], weights_only=True),
        "encoders.0.0.extra.weight": torch.zeros(2, 3),
    }
    torch.save(state, files["weights"])
    with pytest.raises(
        ConversionError, match=r"pixel-net\.pth.*encoders\.0\.0\.extra\.weight \(checkpoint \(2, 3\)\)"
    ):
        convert_original(files["options"], tmp_path / "m.ckpt")


def test_autoencoder_given_as_noise_network(tmp_path: Path) -> None:
    """The original's users' most frequent confusion: which of the two latent .pth files goes where."""
    files = original_files("latent", tmp_path)
    with pytest.raises(ConversionError) as info:
        convert_original(files["options"], tmp_path / "m.ckpt", weights=files["ae_weights"])
    message = str(info.value)
    assert "latent-ae.pth (given as weights) holds the autoencoder, not the noise network" in message
    assert "'init_conv.weight' has shape (4, 3, 3, 3)" in message and "autoencoder_weights=PATH" in message
    with pytest.raises(
        ConversionError, match=r"latent-net\.pth \(given as autoencoder_weights\) holds the noise network"
    ):
        convert_original(files["options"], tmp_path / "m.ckpt", autoencoder_weights=files["weights"])


def test_swapped_option_file_paths(tmp_path: Path) -> None:
    files = original_files("latent", tmp_path)
    options = write_options("latent", tmp_path, files["ae_weights"], files["weights"])
    with pytest.raises(ConversionError, match=r"latent-ae\.pth \(given as weights\) holds the autoencoder"):
        convert_original(options, tmp_path / "m.ckpt")


def test_unsupported_model_in_option_file(tmp_path: Path) -> None:
    net, _ = tiny_networks("pixel")
    weights = tmp_path / "net.pth"
    torch.save(original_state_dict(net), weights)
    with pytest.raises(
        ConversionError,
        match=r"deraining__test__ir-sde\.yml: network_G\.which_model_G='ConditionalUNet' is not supported",
    ):
        convert_original(OPTIONS / "deraining__test__ir-sde.yml", tmp_path / "m.ckpt", weights=weights)


def test_latent_settings_that_cannot_fit(tmp_path: Path) -> None:
    files = original_files("latent", tmp_path)
    opts = yaml.safe_load(files["options"].read_text())
    opts["network_G"]["setting"]["img_channel"] = 3
    files["options"].write_text(yaml.safe_dump(opts))
    with pytest.raises(
        ConversionError,
        match=r"latent\.yml: network_G\.setting\.img_channel=3 but network_L\.setting\.embed_dim=4",
    ):
        convert_original(files["options"], tmp_path / "m.ckpt")


def test_settings_refusion_pl_does_not_know_are_errors(tmp_path: Path) -> None:
    files = original_files("latent", tmp_path)
    opts = yaml.safe_load(files["options"].read_text())
    opts["network_L"]["setting"]["img_channel"] = 4
    files["options"].write_text(yaml.safe_dump(opts))
    with pytest.raises(
        ConversionError, match=r"latent\.yml: network_L\.setting\.img_channel is not a setting"
    ):
        convert_original(files["options"], tmp_path / "m.ckpt")
    del opts["network_L"]["setting"]["img_channel"], opts["network_G"]["setting"]["width"]
    files["options"].write_text(yaml.safe_dump(opts))
    with pytest.raises(ConversionError, match=r"latent\.yml: network_G\.setting\.width is missing"):
        convert_original(files["options"], tmp_path / "m.ckpt")


def test_missing_weight_files_name_the_option_key(tmp_path: Path) -> None:
    options = write_options("latent", tmp_path, None, None)
    with pytest.raises(
        ConversionError, match=r"latent\.yml: path\.pretrain_model_G is empty; pass weights=PATH"
    ):
        convert_original(options, tmp_path / "m.ckpt")
    options = write_options("latent", tmp_path, Path("pretrained_models/nowhere.pth"), None)
    with pytest.raises(
        ConversionError, match=r"path\.pretrain_model_G=pretrained_models/nowhere\.pth not found"
    ):
        convert_original(options, tmp_path / "m.ckpt")
    files = original_files("pixel", tmp_path)
    with pytest.raises(ConversionError, match=r"pixel-space model.*no autoencoder"):
        convert_original(files["options"], tmp_path / "m.ckpt", autoencoder_weights=files["weights"])


def test_relative_paths_resolve_from_the_original_task_folder(tmp_path: Path) -> None:
    """`pretrained/refusion.pth` in `codes/config/deshadow/options/test/x.yml` means `codes/config/deshadow/...`."""
    task_folder = tmp_path / "deshadow"
    (task_folder / "options" / "test").mkdir(parents=True)
    (task_folder / "pretrained").mkdir()
    files = original_files("pixel", task_folder / "pretrained")
    options = write_options("pixel", task_folder / "options" / "test", Path("pretrained/pixel-net.pth"), None)
    module = convert_original(options, tmp_path / "m.ckpt")
    assert module.run_config["converted_from"]["weights"]["path"] == str(files["weights"])
    # latent-dehazing keeps its option files one level deeper: options/dehazing/test/
    latent_folder = tmp_path / "latent-dehazing"
    (latent_folder / "options" / "dehazing" / "test").mkdir(parents=True)
    (latent_folder / "pretrained_models").mkdir()
    pair = original_files("latent", latent_folder / "pretrained_models")
    options = write_options(
        "latent",
        latent_folder / "options" / "dehazing" / "test",
        Path("pretrained_models/latent-net.pth"),
        Path("pretrained_models/latent-ae.pth"),
    )
    module = convert_original(options, tmp_path / "m2.ckpt")
    assert module.run_config["converted_from"]["autoencoder_weights"]["path"] == str(pair["ae_weights"])


class Payload:
    """Any pickled object that would need code to load."""


def test_weight_files_are_read_weights_only(tmp_path: Path) -> None:
    files = original_files("pixel", tmp_path)
    state = torch.load(files["weights"], weights_only=True)
    torch.save({**state, "payload": Payload()}, files["weights"])
    with pytest.raises(ConversionError, match=r"refusing '.*pixel-net\.pth': it is not a weights-only file"):
        convert_original(files["options"], tmp_path / "m.ckpt")


def test_command_line_errors_exit_2_naming_the_problem(tmp_path: Path, monkeypatch, capsys) -> None:
    files = original_files("latent", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        ["convert", f"options={files['options']}", "output=m.ckpt", f"weights={files['ae_weights']}"],
    )
    with pytest.raises(SystemExit) as exit_info:
        convert_mod.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "holds the autoencoder, not the noise network" in err, err
    assert not (tmp_path / "m.ckpt").exists()


def test_pixels_of_the_cli_output_are_not_trivially_equal(tmp_path: Path) -> None:
    """Guards the comparisons above: different weights give visibly different restorations."""
    files = original_files("pixel", tmp_path, seed=1)
    (tmp_path / "other").mkdir()
    other = original_files("pixel", tmp_path / "other", seed=2)
    lq = photo()[None]
    a, b = library_sample(files, lq), library_sample(other, lq)
    assert np.abs((a - b).numpy()).max() > 0.1


# ---- weights written by the original implementation's own code -------------------------------------------------
def test_weights_saved_by_the_original_code_sample_as_the_original_did(tmp_path: Path, monkeypatch) -> None:
    """The reference state dicts come from running the original; so does its probability-flow ODE run."""
    fx = load_fixture("cnafnet_pixel_w8")
    torch.save(fx["state_dict"], tmp_path / "refusion.pth")  # what the original's save_network writes
    opts = yaml.safe_load((OPTIONS / "deshadow__test__refusion.yml").read_text())
    opts["network_G"]["setting"] = {k: v for k, v in fx["config"].items() if k != "img_channel"}
    sde = fx["sde_config"]
    opts["sde"].update(max_sigma=sde["max_sigma"], T=sde["T"], schedule=sde["schedule"], eps=sde["eps"])
    opts["path"]["pretrain_model_G"] = "refusion.pth"
    (tmp_path / "refusion.yml").write_text(yaml.safe_dump(opts))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["convert", "options=refusion.yml", "output=shadow.ckpt"])
    convert_mod.main()
    module = from_pretrained(tmp_path / "shadow.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(module.net(fx["x"], fx["cond"], fx["t"]), fx["out"], rtol=1e-4, atol=1e-5)
    out = sample(module.sde, module.noise_model, fx["cond"], x_T=fx["ode_xT"], sampler="ode")
    torch.testing.assert_close(out, fx["ode_out"], rtol=1e-4, atol=1e-4)


def test_latent_pair_saved_by_the_original_code(tmp_path: Path) -> None:
    net_fx, ae_fx = load_fixture("cnafnet_latent_w8"), load_fixture("unet_ae_ch8")
    torch.save({f"module.{k}": v for k, v in net_fx["state_dict"].items()}, tmp_path / "latent-reffusion.pth")
    torch.save(ae_fx["state_dict"], tmp_path / "latent-ae.pth")
    opts = yaml.safe_load((OPTIONS / "latent-dehazing__dehazing__test__nasde.yml").read_text())
    opts["network_G"]["setting"] = dict(net_fx["config"])
    opts["network_L"]["setting"] = dict(ae_fx["config"])
    opts["path"].update(pretrain_model_G="latent-reffusion.pth", pretrain_model_L="latent-ae.pth")
    (tmp_path / "latent.yml").write_text(yaml.safe_dump(opts))
    module = from_pretrained(tmp_path / "latent.yml")  # the option file directly
    with torch.no_grad():
        out = module.net(net_fx["x"], net_fx["cond"], net_fx["t"])
        torch.testing.assert_close(out, net_fx["out"], rtol=1e-4, atol=1e-5)
        latent, hidden = module.autoencoder.encode(ae_fx["x"])
        torch.testing.assert_close(latent, ae_fx["latent"], rtol=1e-4, atol=1e-5)
        decoded = module.autoencoder.decode(latent, hidden)
        torch.testing.assert_close(decoded, ae_fx["decoded"], rtol=1e-4, atol=1e-5)


def test_evaluate_takes_converted_checkpoints(compose_config, tmp_path: Path) -> None:
    """Scoring converted weights: the task travels with the checkpoint, the test data is named on the command
    line (here the bundled photos with the task's synthetic degradation)."""
    files = original_files("pixel", tmp_path)
    convert_original(files["options"], tmp_path / "m.ckpt")
    args = ["crop=24", "max_images=1", "sample_steps=2", "lpips=false"]
    with pytest.raises(RestoreError, match="stores no data settings"):
        evaluate(compose_config(f"ckpt={tmp_path / 'm.ckpt'}", *args, name="evaluate"))
    summary = evaluate(
        compose_config(
            f"ckpt={tmp_path / 'm.ckpt'}", "data=ntire", *args, name="evaluate", output_dir=tmp_path / "e"
        )
    )
    assert summary["task"] == "shadow" and summary["crop_border"] == 4 and summary["images"] == 1
    assert summary["refusion"]["psnr"] > 0
