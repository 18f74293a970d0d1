"""``python -m refusion_pl.restore``: LQ-only folders of any size, safe checkpoints, resumable atomic writes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from refusion_pl import restore as restore_mod
from refusion_pl.data import io as image_io
from refusion_pl.data.io import read_image, write_image
from refusion_pl.lit.diffusion import DiffusionModule
from refusion_pl.models import ConditionalNAFNet
from refusion_pl.restore import RestoreError, parse_memory, parse_tile, restore
from refusion_pl.sampling import sample, sample_between, timestep_schedule
from refusion_pl.sde import IRSDE

TINY_NAFNET = {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}
TINY_AE = {"ch": 4, "ch_mult": [1, 2, 2, 2], "embed_dim": 4}


def save_checkpoint(
    path: Path, model: str = "latent", channels: int = 3, steps: int = 8, scale: int = 1
) -> Path:
    """A checkpoint in the format the diffusion stage of training writes (random weights)."""
    torch.manual_seed(0)
    sde = {"max_sigma": 50, "steps": steps, "schedule": "cosine", "eps": 0.005, "sampler": "sde"}
    module = DiffusionModule(
        model=model,
        channels=channels,
        nafnet=TINY_NAFNET,
        autoencoder=TINY_AE if model == "latent" else None,
        sde=sde,
    )
    meta = {"kind": "diffusion", "config": {"task": {"name": "shadow", "channels": channels, "scale": scale}}}
    checkpoint = {
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
        "refusion_pl": meta,
    }
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def latent_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "latent.ckpt")


@pytest.fixture(scope="module")
def pixel_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "pixel.ckpt", model="pixel")


def config(ckpt: Path, source: Path, out: Path, **overrides: Any) -> Any:
    values = {
        "ckpt": str(ckpt),
        "input": str(source),
        "output": str(out),
        "format": None,
        "sampler": None,
        "sample_steps": 2,
        "seed": 0,
        "device": "cpu",
        "precision": "fp32",
        "tile": "none",
        "max_memory": None,
        "overwrite": False,
        "progress": False,
    }
    return OmegaConf.create({**values, **overrides})


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(3, height, width, generator=generator)


def test_restore_config_composes():
    cfg = OmegaConf.load(Path(restore_mod.__file__).parent / "conf" / "restore.yaml")
    assert cfg.tile == "auto" and cfg.overwrite is False and cfg.sample_steps is None


@pytest.mark.parametrize("model", ["latent", "pixel"])
def test_odd_sizes_keep_their_size(model, latent_ckpt, pixel_ckpt, tmp_path):
    ckpt = latent_ckpt if model == "latent" else pixel_ckpt
    source = tmp_path / "in"
    for name, (h, w) in {"a.png": (37, 53), "b.png": (64, 17)}.items():
        write_image(source / name, photo(h, w))
    summary = restore(config(ckpt, source, tmp_path / "out", tile=32))  # tiles smaller than the image, too
    assert sorted(summary.written) == ["a.png", "b.png"] and summary.ok
    assert read_image(tmp_path / "out" / "a.png")[0].shape == (3, 37, 53)
    assert read_image(tmp_path / "out" / "b.png")[0].shape == (3, 64, 17)


def test_lq_only_folder_keeps_depth_metadata_and_reports_bad_files(latent_ckpt, tmp_path):
    source = tmp_path / "photos"
    write_image(source / "eight.png", photo(40, 48))
    write_image(source / "nested" / "sixteen.png", photo(33, 31, seed=1), bit_depth=16)
    icc = b"\x00" * 128  # an opaque profile: it must travel untouched
    exif = Image.Exif()
    exif[0x010F] = "refusion camera"
    Image.fromarray(np.full((24, 40, 3), 128, np.uint8)).save(
        source / "camera.jpg", icc_profile=icc, exif=exif.tobytes()
    )
    Image.fromarray(np.full((30, 20), 90, np.uint8)).save(source / "grey.png")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (source / "notes.txt").write_text("not an image, ignored")

    summary = restore(config(latent_ckpt, source, tmp_path / "out"))
    out = tmp_path / "out"
    assert sorted(summary.written) == ["camera.jpg", "eight.png", "grey.png", str(Path("nested/sixteen.png"))]
    assert list(summary.failed) == ["broken.png"] and "broken.png" in summary.failed["broken.png"]
    assert not (out / "broken.png").exists() and not (out / "notes.txt").exists()
    _, info16 = read_image(out / "nested" / "sixteen.png")
    assert info16.bit_depth == 16
    with Image.open(out / "camera.jpg") as im:
        assert im.info.get("icc_profile") == icc
        assert im.getexif().get(0x010F) == "refusion camera"
    assert read_image(out / "grey.png")[1].source_channels == 1  # a grey photo stays grey


def test_skip_existing_resume_and_overwrite(pixel_ckpt, tmp_path, monkeypatch):
    source, out = tmp_path / "in", tmp_path / "out"
    for index in range(3):
        write_image(source / f"{index}.png", photo(20, 24, seed=index))

    calls = {"n": 0}
    real = restore_mod.restore_views

    def interrupted(restorer, sources, targets, *rest):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user stops the run in the middle of the folder
        return real(restorer, sources, targets, *rest)

    monkeypatch.setattr(restore_mod, "restore_views", interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore(config(pixel_ckpt, source, out))
    monkeypatch.setattr(restore_mod, "restore_views", real)
    assert sorted(p.name for p in out.iterdir()) == ["0.png"]  # no partial files left behind

    first_mtime = (out / "0.png").stat().st_mtime_ns
    summary = restore(config(pixel_ckpt, source, out))
    assert summary.skipped == ["0.png"] and sorted(summary.written) == ["1.png", "2.png"]
    assert (out / "0.png").stat().st_mtime_ns == first_mtime
    again = restore(config(pixel_ckpt, source, out, overwrite=True))
    assert sorted(again.written) == ["0.png", "1.png", "2.png"] and not again.skipped


def test_a_crash_while_writing_leaves_no_file(pixel_ckpt, tmp_path, monkeypatch):
    source, out = tmp_path / "in", tmp_path / "out"
    write_image(source / "a.png", photo(16, 16))

    def crash(handle, *args, **kwargs):
        handle.write(b"\x89PNG half written")
        raise OSError("disk full")

    monkeypatch.setattr(image_io, "_write_payload", crash)
    with pytest.raises(OSError, match="disk full"):
        restore(config(pixel_ckpt, source, out))
    assert not out.exists() or list(out.iterdir()) == []


def test_full_length_respacing_equals_the_full_sampler(latent_ckpt):
    sde = IRSDE(max_sigma=50, T=12)
    torch.manual_seed(0)
    net = DiffusionModule.from_checkpoint(latent_ckpt).net
    mu = torch.rand(1, 4, 8, 8)
    x_T = mu + sde.lam * torch.randn_like(mu)
    full = sample(sde, net, mu, x_T=x_T, sampler="posterior", generator=torch.Generator().manual_seed(1))
    schedule = timestep_schedule(sde.T, sde.T)
    respaced = sample_between(sde, net, mu, x_T, schedule, "posterior", torch.Generator().manual_seed(1))
    assert schedule == list(range(sde.T, -1, -1))
    assert torch.allclose(full, respaced, atol=1e-5, rtol=1e-4)
    assert (full - x_T).abs().mean() > 1e-3  # the run moved


def test_spacing_logsnr_restores_as_the_sampler_does(pixel_ckpt, tmp_path):
    """``spacing=logsnr`` restores exactly as ``sampling.sample(spacing="logsnr")`` on the same noise."""
    source = tmp_path / "a.png"
    write_image(source, photo(16, 24))
    for spacing in ("logsnr", "ou"):
        assert restore(config(pixel_ckpt, source, tmp_path / spacing, sample_steps=3, spacing=spacing)).ok
    module = DiffusionModule.from_checkpoint(pixel_ckpt)
    lq = read_image(source)[0][None]
    generator = torch.Generator().manual_seed(0)  # the CLI's seed=0
    direct = sample(
        module.sde, module.noise_model, lq, sampler="sde", steps=3, generator=generator, spacing="logsnr"
    )
    write_image(tmp_path / "direct.png", direct[0].clamp(0, 1))
    logsnr = (tmp_path / "logsnr" / "a.png").read_bytes()
    assert logsnr == (tmp_path / "direct.png").read_bytes()
    assert logsnr != (tmp_path / "ou" / "a.png").read_bytes()  # the spacing changed the result


@pytest.mark.parametrize("ckpt", ["pixel", "latent"])
def test_tiled_restores_sample_with_the_spacing(ckpt, pixel_ckpt, latent_ckpt, tmp_path, monkeypatch):
    """Every tiled path (blended pixel windows, tiled autoencoder) passes the spacing to the sampler."""
    from refusion_pl import pipeline

    seen: list[str] = []
    original = pipeline.sample

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(kwargs["spacing"])
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "sample", spy)
    write_image(tmp_path / "a.png", photo(40, 48))
    path = pixel_ckpt if ckpt == "pixel" else latent_ckpt
    assert restore(config(path, tmp_path / "a.png", tmp_path / "out", spacing="logsnr", tile=16)).ok
    assert seen == ["logsnr"]


def test_bad_spacing_names_the_key(pixel_ckpt, tmp_path):
    write_image(tmp_path / "a.png", photo(8, 8))
    with pytest.raises(RestoreError, match=r"spacing='even' is unknown; allowed: ou, uniform, logsnr"):
        restore(config(pixel_ckpt, tmp_path / "a.png", tmp_path / "out", spacing="even"))


def reverse_loop_from_the_tables(
    sde: IRSDE, net: Any, mu: torch.Tensor, seed: int, sampler: str
) -> torch.Tensor:
    """The original's ``t = T..1`` Euler loop written out from the SDE's tables, without ``sampling.py``."""
    generator = torch.Generator().manual_seed(seed)
    x = mu + sde.lam * torch.randn(mu.shape, generator=generator)
    score_weight = 1.0 if sampler == "sde" else 0.5  # the probability-flow ODE halves the score term
    with torch.no_grad():
        for t in range(sde.T, 0, -1):
            score = -net(x, mu, torch.tensor([t])) / sde.sigma_bars[t]
            x = x - (sde.thetas[t] * (mu - x) - score_weight * sde.sigmas[t] ** 2 * score) * sde.dt
            if sampler == "sde":
                x = x + sde.sigmas[t] * sde.dt**0.5 * torch.randn(mu.shape, generator=generator)
    return x.clamp(0, 1)


@pytest.mark.parametrize("sampler", ["sde", "ode"])
def test_sample_steps_equal_to_T_matches_the_default(sampler, pixel_ckpt, tmp_path):
    """``sample_steps`` null and ``= T`` both run the full T-step loop, checked against one written out here."""
    source = tmp_path / "a.png"
    write_image(source, photo(16, 24))
    for name, steps in (("all", None), ("eight", 8)):
        assert restore(config(pixel_ckpt, source, tmp_path / name, sample_steps=steps, sampler=sampler)).ok
    module = DiffusionModule.from_checkpoint(pixel_ckpt)
    assert module.sde.T == 8
    lq = read_image(source)[0]
    expected = reverse_loop_from_the_tables(module.sde, module.net, lq[None], 0, sampler)[0]
    restored = {name: read_image(tmp_path / name / "a.png")[0] for name in ("all", "eight")}
    assert (restored["all"] - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit rounding only
    assert torch.equal(restored["eight"], restored["all"])
    assert (expected - lq).abs().max() > 0.1  # the loop moved: the tolerance above tells runs apart


class Payload:
    """A pickle that would create a folder when loaded by plain ``pickle``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload(marker)}, evil)
    write_image(tmp_path / "a.png", photo(8, 8))
    with pytest.raises(RestoreError, match="refusing"):
        restore(config(evil, tmp_path / "a.png", tmp_path / "out"))
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(tmp_path / "control")))  # the payload is live: plain pickle runs it
    assert (tmp_path / "control").is_dir()


def test_checkpoints_that_do_not_fit_fail_clearly(latent_ckpt, tmp_path):
    image = tmp_path / "a.png"
    write_image(image, photo(16, 16))
    stage1 = tmp_path / "autoencoder.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "refusion_pl": {"kind": "autoencoder"}}, stage1)
    with pytest.raises(ValueError, match="not a refusion_pl diffusion checkpoint"):
        restore(config(stage1, image, tmp_path / "out"))
    plain = tmp_path / "plain.pth"
    torch.save({"params": {"intro.weight": torch.zeros(1)}}, plain)
    with pytest.raises(ValueError, match="not a refusion_pl diffusion checkpoint"):
        restore(config(plain, image, tmp_path / "out"))
    broken = tmp_path / "broken.ckpt"
    checkpoint = torch.load(latent_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["nafnet"] = {**TINY_NAFNET, "width": 16}
    torch.save(checkpoint, broken)
    with pytest.raises(RestoreError, match="weights do not match"):
        restore(config(broken, image, tmp_path / "out"))
    with pytest.raises(RestoreError, match=r"use 1\.\.8"):
        restore(config(latent_ckpt, image, tmp_path / "out", sample_steps=50))
    with pytest.raises(RestoreError, match="no such checkpoint"):
        restore(config(tmp_path / "missing.ckpt", image, tmp_path / "out"))


def test_grey_checkpoint_refuses_colour_input(tmp_path):
    ckpt = save_checkpoint(tmp_path / "grey.ckpt", model="pixel", channels=1)
    write_image(tmp_path / "in" / "colour.png", photo(16, 16))
    Image.fromarray(np.full((16, 16), 50, np.uint8)).save(tmp_path / "in" / "grey.png")
    summary = restore(config(ckpt, tmp_path / "in", tmp_path / "out"))
    assert summary.written == ["grey.png"]
    assert "3 colour channels" in summary.failed["colour.png"]


def test_settings_are_validated():
    assert parse_tile("auto") == "auto" and parse_tile("none") is None and parse_tile(512) == 512
    assert parse_memory("4GB") == 4 * 1024**3 and parse_memory("512MB") == 512 * 1024**2
    with pytest.raises(RestoreError, match="tile"):
        parse_tile("huge")
    with pytest.raises(RestoreError, match="max_memory"):
        parse_memory("lots")


def test_command_line_exit_status_and_summary(pixel_ckpt, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in"
    write_image(source / "good.png", photo(12, 12))
    (source / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    command = [
        sys.executable, "-m", "refusion_pl.restore", f"ckpt={pixel_ckpt}", f"input={source}",
        f"output={tmp_path / 'out'}", "sample_steps=2", "tile=auto", "max_memory=1GB",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "restored 1, skipped 0 existing, failed 1" in done.stdout
    assert "bad.jpg" in done.stdout + done.stderr
    assert (tmp_path / "out" / "good.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no run directory or log files
    with pytest.raises(
        SystemExit
    ) as exit_info:  # in-process: the same entry point, without a second start-up
        monkeypatch.setattr(sys, "argv", ["restore", f"ckpt={tmp_path / 'nope.ckpt'}", *command[4:]])
        monkeypatch.chdir(tmp_path)
        restore_mod.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no such checkpoint" in err, err


def test_several_devices_split_a_folder_and_give_the_same_outputs(pixel_ckpt, tmp_path):
    """One process per device (two CPU workers here); each image keeps its seed, so outputs match one device."""
    source = tmp_path / "in"
    for index in range(3):
        write_image(source / f"img{index}.png", photo(24, 20 + index, seed=index))
    single = restore(config(pixel_ckpt, source, tmp_path / "single"))
    split = restore(config(pixel_ckpt, source, tmp_path / "split", devices=["cpu", "cpu"]))
    assert sorted(split.written) == sorted(single.written) == ["img0.png", "img1.png", "img2.png"]
    for name in single.written:
        one, _ = read_image(tmp_path / "single" / name)
        two, _ = read_image(tmp_path / "split" / name)
        assert torch.equal(one, two), name


def test_asking_for_more_gpus_than_exist_fails_clearly(pixel_ckpt, tmp_path):
    with pytest.raises(RestoreError, match="GPU"):
        restore(config(pixel_ckpt, tmp_path, tmp_path / "out", devices=torch.cuda.device_count() + 1))


def test_edge_margin_is_the_checkpoints_unless_given(latent_ckpt, tmp_path):
    device = torch.device("cpu")
    module = restore_mod.load_model(latent_ckpt, None, None, device)
    cfg = config(latent_ckpt, tmp_path, tmp_path / "out", edge_margin=None)
    assert module.edge_margin == 0  # checkpoints without val.edge_margin (older ones, converted originals)
    assert restore_mod.Restorer.from_config(cfg, module, device).edge_margin == 0
    module.val_cfg["edge_margin"] = 16  # as trained with conf/train.yaml
    assert restore_mod.Restorer.from_config(cfg, module, device).edge_margin == 16
    cfg.edge_margin = 0
    assert restore_mod.Restorer.from_config(cfg, module, device).edge_margin == 0
    for bad in (-1, 2.5, "wide"):
        cfg.edge_margin = bad
        with pytest.raises(RestoreError, match="edge_margin"):
            restore_mod.Restorer.from_config(cfg, module, device)


def test_samples_are_the_checkpoints_unless_given_and_tile_exactly(latent_ckpt, tmp_path):
    device = torch.device("cpu")
    module = restore_mod.load_model(latent_ckpt, None, None, device)
    cfg = config(latent_ckpt, tmp_path, tmp_path / "out", samples=None)
    assert restore_mod.Restorer.from_config(cfg, module, device).samples == 1
    module.val_cfg["samples"] = 3
    assert restore_mod.Restorer.from_config(cfg, module, device).samples == 3
    for bad in (0, 1.5):
        cfg.samples = bad
        with pytest.raises(RestoreError, match="samples"):
            restore_mod.Restorer.from_config(cfg, module, device)
    image, outputs = photo(40, 48), {}
    for tile in ("none", 16):
        cfg = config(latent_ckpt, tmp_path, tmp_path / "out", tile=tile, samples=2)
        outputs[tile] = restore_mod.Restorer.from_config(cfg, module, device)(image)
    one = restore_mod.Restorer.from_config(
        config(latent_ckpt, tmp_path, tmp_path / "o", samples=1), module, device
    )
    assert (outputs["none"] - outputs[16]).abs().max() < 1e-4
    assert (outputs["none"] - one(image)).abs().max() > 1e-3


def checkpoint_setting(ckpt: Path, tmp_path: Path, key: str, default: Any, stored: Any, bad: tuple) -> Any:
    """The module of `ckpt` after checking that `key` null in the config follows the checkpoint's `val.<key>`
    (`default`, then `stored` once set) and that each `bad` value is refused by name; `val.<key>` = `stored`."""
    device = torch.device("cpu")
    module = restore_mod.load_model(ckpt, None, None, device)
    cfg = config(ckpt, tmp_path, tmp_path / "out", **{key: None})
    assert getattr(restore_mod.Restorer.from_config(cfg, module, device), key) == default
    module.val_cfg[key] = stored
    assert getattr(restore_mod.Restorer.from_config(cfg, module, device), key) == stored
    for value in bad:
        cfg[key] = value
        with pytest.raises(RestoreError, match=key):
            restore_mod.Restorer.from_config(cfg, module, device)
    return module


def restored_with_and_without_tiles(ckpt: Path, tmp_path: Path, module: Any, key: str) -> tuple[Any, Any]:
    """A photo and its restoration at the checkpoint's own `key`, after checking that tiles restore it exactly."""
    image, outputs = photo(40, 48), {}
    for tile in ("none", 16):
        cfg = config(ckpt, tmp_path, tmp_path / "out", tile=tile, **{key: None})
        outputs[tile] = restore_mod.Restorer.from_config(cfg, module, torch.device("cpu"))(image)
    assert (outputs["none"] - outputs[16]).abs().max() < 1e-4
    return image, outputs["none"]


def test_temperature_is_the_checkpoints_unless_given_and_tiles_exactly(latent_ckpt, tmp_path):
    module = checkpoint_setting(latent_ckpt, tmp_path, "temperature", 1.0, 0.0, (-1, "warm", float("nan")))
    image, cold = restored_with_and_without_tiles(latent_ckpt, tmp_path, module, "temperature")
    in_module = module.restore(image[None], steps=2, generator=torch.Generator().manual_seed(7))
    assert (cold - in_module[0]).abs().max() < 1e-4  # the seed does not matter at temperature 0
    warm = restore_mod.Restorer.from_config(
        config(latent_ckpt, tmp_path, tmp_path / "o", temperature=1), module, torch.device("cpu")
    )
    assert (cold - warm(image)).abs().max() > 1e-3


def test_shift_jitter_is_the_checkpoints_unless_given_and_tiles_exactly(latent_ckpt, tmp_path):
    module = checkpoint_setting(latent_ckpt, tmp_path, "shift_jitter", False, True, (1, "yes"))
    image, jittered = restored_with_and_without_tiles(latent_ckpt, tmp_path, module, "shift_jitter")
    in_module = module.restore(image[None], steps=2, generator=torch.Generator().manual_seed(0))
    assert (jittered - in_module[0]).abs().max() < 1e-4  # validation restores as the CLI does
    off = restore_mod.Restorer.from_config(
        config(latent_ckpt, tmp_path, tmp_path / "o", shift_jitter=False), module, torch.device("cpu")
    )
    assert (jittered - off(image)).abs().max() > 1e-4


def test_edge_margin_restores_the_same_tiled_untiled_and_in_validation(latent_ckpt, tmp_path):
    device = torch.device("cpu")
    module = restore_mod.load_model(latent_ckpt, None, None, device)
    image = photo(37, 53)
    outputs = {}
    for tile in ("none", 32):
        cfg = config(latent_ckpt, tmp_path, tmp_path / "out", tile=tile, edge_margin=16)
        outputs[tile] = restore_mod.Restorer.from_config(cfg, module, device)(image)
    generator = torch.Generator().manual_seed(0)
    in_module = module.restore(image[None], steps=2, generator=generator, edge_margin=16)[0]
    assert outputs["none"].shape == image.shape
    assert (outputs["none"] - outputs[32]).abs().max() < 1e-4
    assert (outputs["none"] - in_module).abs().max() < 1e-5
    unpadded = restore_mod.Restorer.from_config(
        config(latent_ckpt, tmp_path, tmp_path / "o", edge_margin=0), module, device
    )
    assert (unpadded(image) - outputs["none"]).abs().max() > 1e-3  # the margin changed what was restored


def test_photo_stats_checkpoints_restore_from_the_whole_photo_tiled_or_not(latent_ckpt, tmp_path):
    """A photo_stats network gets the photo's own means in the CLI: tiles and the mirrored margin do not change
    them (tiled = untiled = the module's restore), and other means would give another restoration."""
    module = restore_mod.load_model(latent_ckpt, None, None, torch.device("cpu"))
    plain = module.net
    module.net = ConditionalNAFNet(plain.img_channel, 8, [1, 1], 1, [1, 1], variant="latent", photo_stats=3)
    module.net.load_state_dict(plain.state_dict(), strict=False)
    for name, parameter in module.net.named_parameters():  # open the residual scales and the photo embedding
        if name.endswith((".beta", ".gamma")) or name == "photo_mlp.2.weight":
            torch.nn.init.constant_(parameter, 0.5)
    module.val_cfg["edge_margin"] = 8
    image, restored = restored_with_and_without_tiles(latent_ckpt, tmp_path, module, "edge_margin")
    generator = torch.Generator().manual_seed(0)
    assert (restored - module.restore(image[None], steps=2, generator=generator)[0]).abs().max() < 1e-4
    other = module.restore(
        image[None],
        steps=2,
        generator=torch.Generator().manual_seed(0),
        cond_scalars=image.mean((-2, -1))[None] * 0.3,
    )
    assert (restored - other[0]).abs().max() > 1e-3
