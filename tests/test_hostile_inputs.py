"""Hostile image files through the data pipeline and ``restore``: a seeded loop of a few hundred cases.

Every case must end in a correct image or a ``DataError`` naming the file, never another exception, a hang or
a crash of the whole run. Cases: truncated PNG/JPEG/TIFF/WebP/BMP, zero-byte files, flipped bytes, declared
dimensions far beyond memory (decompression bombs), 1x1, 16-bit, palette, CMYK, grey+alpha, 32-bit integer and
float pixels, non-images with image extensions, and names with spaces and non-ASCII characters.
"""

from __future__ import annotations

import errno
import io
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from refusion_pl.data import PairedDataModule
from refusion_pl.data import io as image_io
from refusion_pl.data.io import DataError, read_image, verify_image, write_image
from refusion_pl.files import OutputError
from refusion_pl.lit.diffusion import DiffusionModule
from refusion_pl.restore import restore

SEED = 13
NAMES = ("plain", "with space", "фото", "写真 1", "émoji 🙂")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width x height`` pixels, with almost no data behind it."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + header + body + _png_chunk(b"IEND", b"")


def bomb_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose start-of-frame marker claims ``width x height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def valid_images(rng: random.Random) -> list[tuple[str, bytes]]:
    """(suffix, bytes) of images that must read: every mode and depth the product claims to handle."""
    size = (rng.randint(1, 24), rng.randint(1, 24))
    pixels = np.random.default_rng(rng.randint(0, 2**31)).integers(0, 256, (size[1], size[0], 3), np.uint8)
    rgb = Image.fromarray(pixels)
    grey16 = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    cases = [
        (".png", encode(rgb, "PNG")),
        (".jpg", encode(rgb, "JPEG", quality=90)),
        (".webp", encode(rgb, "WEBP")),
        (".tif", encode(rgb, "TIFF")),
        (".bmp", encode(rgb, "BMP")),
        (".png", encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")),
        (".png", encode(rgb.convert("P"), "PNG", transparency=0)),
        (".jpg", encode(rgb.convert("CMYK"), "JPEG")),
        (".png", encode(rgb.convert("LA"), "PNG")),
        (".png", encode(rgb.convert("RGBA"), "PNG")),
        (".png", encode(rgb.convert("1"), "PNG")),
        (".png", encode(grey16, "PNG")),
        (".tif", encode(Image.fromarray(pixels[..., 0].astype(np.int32) * 100), "TIFF")),
        (".tif", encode(Image.fromarray(pixels[..., 0].astype(np.float32) / 255.0), "TIFF")),
        (".png", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")),
    ]
    sixteen = io.BytesIO()
    path = Path(f"/tmp/refusion-hostile-{rng.random()}.png")
    try:
        write_image(path, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, bit_depth=16)
        sixteen.write(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
    cases.append((".png", sixteen.getvalue()))
    return cases


def hostile_images(rng: random.Random, valid: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Broken versions of the valid images and files that are not images at all."""
    cases: list[tuple[str, bytes]] = []
    for suffix, data in valid:
        cut = rng.randint(1, max(1, len(data) - 1))
        cases.append((suffix, data[:cut]))  # truncated anywhere, header included
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        cases.append((suffix, bytes(flipped)))
    suffix = rng.choice([".png", ".jpg", ".tif", ".webp", ".bmp"])
    cases += [
        (suffix, b""),
        (suffix, bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))),
        (".png", b"just some text, not a picture\n" * rng.randint(1, 5)),
        (".jpg", b"PK\x03\x04" + bytes(40)),  # a zip archive with a photo's name
        (".png", bomb_png(rng.randint(40_000, 100_000), rng.randint(40_000, 100_000))),
        (".jpg", bomb_jpeg(rng.randint(20_000, 65_000), rng.randint(20_000, 65_000))),
    ]
    return cases


def check_read(path: Path) -> str:
    """'ok' or 'error'; anything but a correct image or a DataError naming the file fails the test."""
    try:
        verify_image(path)
        image, info = read_image(path)
    except DataError as err:
        assert str(path) in str(err), f"error does not name the file: {err}"
        return "error"
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3, (path, image.shape)
    assert torch.isfinite(image).all() and float(image.min()) >= 0 and float(image.max()) <= 1, path
    assert (info.height, info.width) == tuple(image.shape[1:])
    return "ok"


@pytest.mark.timeout(300)
def test_read_image_fuzz(tmp_path):
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {"ok": 0, "error": 0}
    valid_seen = 0
    for round_ in range(12):
        valid = valid_images(rng)
        for index, (suffix, data) in enumerate(valid):
            path = tmp_path / f"{rng.choice(NAMES)} {round_}-{index}{suffix}"
            path.write_bytes(data)
            assert check_read(path) == "ok", f"a valid image failed to read: {path.name}"
            valid_seen += 1
        for index, (suffix, data) in enumerate(hostile_images(rng, valid)):
            path = tmp_path / f"bad {rng.choice(NAMES)} {round_}-{index}{suffix}"
            path.write_bytes(data)
            outcomes[check_read(path)] += 1
    assert valid_seen + sum(outcomes.values()) >= 300
    assert outcomes["error"] >= 100  # most broken files are refused (a flipped byte may leave one readable)


def test_decompression_bomb_limit_is_configurable(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(50_000, 50_000))
    with pytest.raises(
        DataError, match=r"image too large: .*bomb\.png .*above the limit of \d+ pixels.*50000"
    ):
        read_image(bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 10)).save(small)
    with pytest.raises(DataError, match="above the limit of 100"):
        read_image(small, max_pixels=100)
    code = "from refusion_pl.data.io import read_image; import sys; read_image(sys.argv[1])"
    env = {"REFUSION_MAX_IMAGE_PIXELS": "100", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, str(small)], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "above the limit of 100" in done.stderr


def test_datamodule_skips_hostile_pairs_and_names_them(tmp_path):
    rng = random.Random(SEED + 1)
    root = tmp_path / "data"
    valid = valid_images(rng)
    for split, cases in (("train", [*valid, *hostile_images(rng, valid)]), ("val", valid[:2])):
        for index, (suffix, data) in enumerate(cases):
            name = f"{rng.choice(NAMES)} {index}{suffix}"
            for side in ("LQ", "GT"):
                (root / split / side).mkdir(parents=True, exist_ok=True)
                (root / split / side / name).write_bytes(data)
    settings = {"root": str(root), "layout": "paired", "lq_dir": "LQ", "gt_dir": "GT", "crop_size": 8}
    strict = PairedDataModule(**settings)
    with pytest.raises(DataError, match=r"bad train pair\(s\) of \d+ \(set data.skip_bad=true") as info:
        strict.setup("fit")
    assert str(root / "train") in str(info.value)  # the culprits are named by path
    lenient = PairedDataModule(**settings, batch_size=2, skip_bad=True, check_images="full")
    lenient.setup("fit")
    kept = {int(pair.name.rsplit(" ", 1)[-1]) for pair in lenient.dataset("train").pairs}
    assert set(range(len(valid))) <= kept  # every good pair stays; the refused ones are gone
    assert len(kept) < 3 * len(valid)
    for batch, _ in zip(lenient.train_dataloader(), range(4)):
        assert batch["gt"].shape == (2, 3, 8, 8) and torch.isfinite(batch["gt"]).all()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    sde = {"max_sigma": 50, "steps": 4, "schedule": "cosine", "eps": 0.005, "sampler": "sde"}
    nafnet = {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]}
    module = DiffusionModule(model="pixel", nafnet=nafnet, sde=sde)
    path = tmp_path_factory.mktemp("ckpt") / "pixel.ckpt"
    meta = {"kind": "diffusion", "config": {"task": {"name": "shadow", "channels": 3, "scale": 1}}}
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "refusion_pl": meta},
        path,
    )
    return path


def restore_config(ckpt: Path, source: Path, out: Path):
    return OmegaConf.create(
        {
            "ckpt": str(ckpt), "input": str(source), "output": str(out), "format": None, "sampler": None,
            "sample_steps": 1, "seed": 0, "device": "cpu", "precision": "fp32", "tile": "none",
            "max_memory": None, "overwrite": False, "progress": False,
        }
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_restore_fuzz_fails_per_file_with_a_summary(tiny_checkpoint, tmp_path):
    rng = random.Random(SEED + 2)
    source, out = tmp_path / "in", tmp_path / "out"
    expected_ok = set()
    valid = valid_images(rng)
    for index, (suffix, data) in enumerate(valid):
        name = Path(f"{rng.choice(NAMES)}/{index} {rng.choice(NAMES)}{suffix}")
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
        expected_ok.add(str(name))
    for index, (suffix, data) in enumerate(hostile_images(rng, valid)):
        name = Path(f"bad/{index} {rng.choice(NAMES)}{suffix}")
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    summary = restore(restore_config(tiny_checkpoint, source, out))
    assert expected_ok <= set(summary.written), expected_ok - set(summary.written)
    assert len(summary.written) + len(summary.failed) == len(list(source.rglob("*.*")))
    assert len(summary.failed) >= len(valid)  # the broken copies
    for name, reason in summary.failed.items():
        assert name in reason or Path(name).name in reason, (name, reason)
        assert not (out / name).exists()
    for name in summary.written:
        restored, _ = read_image(out / name)
        assert restored.shape[1:] == read_image(source / name)[0].shape[1:], name
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_restore_disk_full_names_the_file_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    source, out = tmp_path / "in", tmp_path / "out"
    write_image(source / "a photo.png", torch.rand(3, 12, 12))

    def disk_full(handle, *args, **kwargs):
        handle.write(b"\x89PNG half written")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io, "_write_payload", disk_full)
    with pytest.raises(OutputError, match=rf"cannot write {out / 'a photo.png'}: No space left on device"):
        restore(restore_config(tiny_checkpoint, source, out))
    assert list(out.rglob("*")) == []


def test_restore_into_an_unwritable_folder_names_it(tiny_checkpoint, tmp_path):
    source = tmp_path / "in"
    write_image(source / "a.png", torch.rand(3, 12, 12))
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    command = [
        sys.executable, "-m", "refusion_pl.restore", f"ckpt={tiny_checkpoint}", f"input={source}",
        f"output={blocker / 'sub'}", "sample_steps=1", "progress=false",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: cannot write {blocker / 'sub' / 'a.png'}" in done.stderr
