"""Helpers for the data tests: small real datasets written to disk as image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from refusion_pl.data.io import write_image


def coord_array(h: int, w: int, tag: int = 0, y0: int = 0, x0: int = 0) -> np.ndarray:
    """uint16 RGB whose pixels encode (row, column, tag), so crops can be traced back to coordinates."""
    ys, xs = np.meshgrid(np.arange(h) + y0, np.arange(w) + x0, indexing="ij")
    return np.stack([ys, xs, np.full_like(ys, tag)], axis=-1).astype(np.uint16)


def write_coords(path: Path, h: int, w: int, tag: int = 0) -> Path:
    """A 16-bit PNG (lossless) of :func:`coord_array`."""
    arr = torch.from_numpy(coord_array(h, w, tag).astype(np.float32) / 65535.0).permute(2, 0, 1)
    return write_image(path, arr, bit_depth=16)


def coords(img: torch.Tensor) -> torch.Tensor:
    """Back from [0,1] floats to the integer (row, column, tag) planes."""
    return (img * 65535.0).round().long()


def assert_aligned(lq: torch.Tensor, gt: torch.Tensor, scale: int = 1) -> None:
    """Every GT pixel comes from the LQ pixel at its coordinates divided by ``scale``."""
    lc, gc = coords(lq)[..., :2, :, :], coords(gt)[..., :2, :, :]
    up = lc.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    assert torch.equal(gc // scale, up), "LQ and GT crops come from different coordinates"


def write_rgb(path: Path, h: int, w: int, seed: int = 0, mode: str = "RGB") -> Path:
    """A smooth random 8-bit image (PNG/JPEG/...) through PIL."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_same_size_pairs(lq_dir: Path, gt_dir: Path, names: list[str], h: int = 40, w: int = 52) -> None:
    """Coordinate-encoded LQ (tag 1) and GT (tag 2) files with identical names."""
    for name in names:
        write_coords(lq_dir / f"{name}.png", h, w, tag=1)
        write_coords(gt_dir / f"{name}.png", h, w, tag=2)


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
