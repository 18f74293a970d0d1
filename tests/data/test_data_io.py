"""The one reader / writer: bit depths, formats, EXIF orientation, channels, alpha, errors, atomic writes."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from data_helpers import truncate, write_rgb
from PIL import Image, ImageOps

from refusion_pl.data import DataError, read_image, write_image
from refusion_pl.data import io as dio


@pytest.fixture(autouse=True)
def _fresh_alpha_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dio, "_alpha_warned", False)


def test_8bit_png_exact(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img, info = read_image(tmp_path / "a.png")
    assert img.dtype == torch.float32 and img.shape == (3, 9, 13)
    assert torch.equal(img, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert (info.bit_depth, info.format, info.height, info.width) == (8, "PNG", 9, 13)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_scaled_by_65535(tmp_path: Path, suffix: str) -> None:
    arr = np.random.default_rng(1).integers(0, 65536, (7, 11, 3), dtype=np.uint16)
    path = tmp_path / f"a{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, arr, photometric="rgb")
    else:
        write_image(path, torch.from_numpy(arr.astype(np.float32) / 65535).permute(2, 0, 1), bit_depth=16)
    img, info = read_image(path)
    assert info.bit_depth == 16
    expected = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1) / 65535
    assert torch.allclose(img, expected, atol=1e-7)


def test_16bit_grayscale_png_from_pil(tmp_path: Path) -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    img, info = read_image(tmp_path / "g.png", channels=3)
    assert info.bit_depth == 16 and img.shape == (3, 8, 8)
    assert torch.allclose(img[1], torch.from_numpy(arr.astype(np.float32)) / 65535, atol=1e-7)
    assert img.max() < 1.0 and img.max() > 0.9  # / 65535, not / 255 (which would saturate)


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".tif", ".bmp"])
def test_other_formats_read(tmp_path: Path, suffix: str) -> None:
    path = write_rgb(tmp_path / f"a{suffix}", 24, 32)
    ref = np.asarray(Image.open(tmp_path / f"a{suffix}").convert("RGB"), dtype=np.float32) / 255
    img, info = read_image(path)
    assert img.shape == (3, 24, 32) and info.bit_depth == 8
    assert torch.allclose(img, torch.from_numpy(ref).permute(2, 0, 1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path: Path, orientation: int) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "refusion-test camera"  # Make: a tag besides the orientation that must survive
    Image.fromarray(arr).save(tmp_path / "o.png", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")), dtype=np.float32) / 255
    img, info = read_image(tmp_path / "o.png")
    assert torch.equal(img, torch.from_numpy(expected).permute(2, 0, 1))
    assert info.orientation == orientation and (info.height, info.width) == expected.shape[:2]
    assert info.exif is not None  # stored EXIF is reset to "upright" so writing it back does not rotate twice
    assert _orientation_of(info.exif) == 1 and _exif_of(info.exif)[0x010F] == "refusion-test camera"


def _exif_of(exif_bytes: bytes) -> Image.Exif:
    ex = Image.Exif()
    ex.load(exif_bytes)
    return ex


def _orientation_of(exif_bytes: bytes) -> int | None:
    return _exif_of(exif_bytes).get(0x0112)


def test_grayscale_and_rgb_conversions(tmp_path: Path) -> None:
    gray = write_rgb(tmp_path / "g.png", 8, 8, mode="L")
    img, info = read_image(gray, channels=3)
    assert img.shape == (3, 8, 8) and info.source_channels == 1
    assert torch.equal(img[0], img[2])
    assert torch.equal(img[0], torch.from_numpy(np.asarray(Image.open(gray), dtype=np.float32) / 255))
    rgb = write_rgb(tmp_path / "c.png", 8, 8)
    one, _ = read_image(rgb, channels=1)
    colour = torch.from_numpy(np.asarray(Image.open(rgb), dtype=np.float64) / 255).permute(2, 0, 1)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]  # ITU-R 601-2, PIL's "L"
    assert one.shape == (1, 8, 8) and torch.allclose(one[0].double(), luma, atol=1 / 255)


def test_palette_png(tmp_path: Path) -> None:
    path = write_rgb(tmp_path / "p.png", 8, 8, mode="P")
    indexed = Image.open(path)
    assert indexed.mode == "P" and len(np.unique(np.asarray(indexed))) > 4  # several palette entries
    palette = np.asarray(indexed.getpalette(), dtype=np.float32).reshape(-1, 3) / 255
    expected = torch.from_numpy(palette[np.asarray(indexed)]).permute(2, 0, 1)  # each index's colour
    img, _ = read_image(path)
    assert torch.equal(img, expected)


def test_alpha_dropped_with_one_warning(tmp_path: Path) -> None:
    a = write_rgb(tmp_path / "a.png", 8, 8, mode="RGBA")
    b = write_rgb(tmp_path / "b.png", 8, 8, mode="LA")
    with pytest.warns(UserWarning, match="alpha") as record:
        img_a, info = read_image(a)
        img_b, _ = read_image(b)
    assert len([w for w in record if "alpha" in str(w.message)]) == 1
    assert img_a.shape == (3, 8, 8) and img_b.shape == (3, 8, 8) and info.had_alpha


def test_16bit_rgba_png(tmp_path: Path) -> None:
    import kornia_rs

    arr = np.random.default_rng(3).integers(0, 65536, (5, 6, 4), dtype=np.uint16)
    kornia_rs.io.write_image_png_u16(str(tmp_path / "a.png"), arr, "rgba")
    with pytest.warns(UserWarning, match="alpha"):
        img, info = read_image(tmp_path / "a.png")
    assert info.bit_depth == 16 and img.shape == (3, 5, 6)
    assert torch.allclose(img, torch.from_numpy(arr[..., :3].astype(np.float32)).permute(2, 0, 1) / 65535)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_names_the_file(tmp_path: Path, suffix: str) -> None:
    path = truncate(write_rgb(tmp_path / f"broken{suffix}", 64, 64))
    with pytest.raises(DataError, match=f"broken{suffix}"):
        read_image(path)


def test_truncated_16bit_png(tmp_path: Path) -> None:
    arr = torch.rand(3, 32, 32)
    path = truncate(write_image(tmp_path / "t16.png", arr, bit_depth=16))
    with pytest.raises(DataError, match=r"t16\.png"):
        read_image(path)


def test_not_an_image_and_missing(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"junk\.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")


def _png_header_only(path: Path, w: int, h: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_guard(tmp_path: Path) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    with pytest.raises(DataError, match=r"bomb\.png.*(too large|bomb)"):
        read_image(bomb)
    assert dio.MAX_IMAGE_PIXELS >= 6000 * 4000 * 2  # a 6000x4000 photo is fine, with room to spare
    assert dio.image_size(_png_header_only(tmp_path / "photo.png", 6000, 4000)) == (4000, 6000)
    small = write_rgb(tmp_path / "s.png", 20, 20)
    with pytest.raises(DataError, match="limit of 100"):
        read_image(small, max_pixels=100)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_write_16bit_roundtrip(tmp_path: Path, suffix: str) -> None:
    x = torch.rand(3, 10, 14)
    path = write_image(tmp_path / f"o{suffix}", x, bit_depth=16)
    y, info = read_image(path)
    assert info.bit_depth == 16
    assert (y - x).abs().max() <= 0.5 / 65535 + 1e-7


def test_write_keeps_icc_and_exif(tmp_path: Path) -> None:
    icc = b"fake-icc-profile" * 8
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    for suffix, depth in ((".png", 8), (".png", 16), (".jpg", 8), (".webp", 8), (".tif", 16)):
        path = write_image(tmp_path / f"m{depth}{suffix}", torch.rand(3, 8, 8), depth, icc, exif.tobytes())
        _, info = read_image(path)
        assert info.icc_profile == icc, suffix
        if suffix != ".tif":
            ex = Image.Exif()
            ex.load(info.exif)
            assert ex.get(0x010F) == "TestCam", suffix


def test_write_grayscale_and_batch_dim(tmp_path: Path) -> None:
    path = write_image(tmp_path / "g.png", torch.rand(1, 1, 5, 7))
    img, info = read_image(path, channels=1)
    assert img.shape == (1, 5, 7) and info.source_channels == 1


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_image(tmp_path / "out.png", torch.zeros(3, 4, 4))
    before = target.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(dio, "_write_payload", boom)
    with pytest.raises(RuntimeError):
        write_image(target, torch.ones(3, 4, 4))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left behind


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="suffix"):
        write_image(tmp_path / "x.xyz", torch.zeros(3, 2, 2))
    with pytest.raises(DataError, match="bit_depth"):
        write_image(tmp_path / "x.png", torch.zeros(3, 2, 2), bit_depth=12)
    with pytest.warns(UserWarning, match="8-bit"):
        write_image(tmp_path / "x.jpg", torch.zeros(3, 2, 2), bit_depth=16)


def test_write_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images go through the one atomic-write helper: the file and the folder's rename are fsynced."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    write_image(tmp_path / "out.png", torch.zeros(3, 4, 4))
    assert len(synced) == 2
