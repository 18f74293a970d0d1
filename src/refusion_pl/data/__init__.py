"""Paired data for Refusion: image I/O, synthetic degradations, datasets and the Lightning DataModule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refusion_pl.data.io import DataError, ImageInfo, read_image, write_image

if TYPE_CHECKING:
    from refusion_pl.data.datamodule import PairedDataModule
    from refusion_pl.data.degradations import Degradation, build_degradation

__all__ = [
    "DataError",
    "Degradation",
    "ImageInfo",
    "PairedDataModule",
    "build_degradation",
    "read_image",
    "write_image",
]

_LAZY = {
    "PairedDataModule": "refusion_pl.data.datamodule",
    "Degradation": "refusion_pl.data.degradations",
    "build_degradation": "refusion_pl.data.degradations",
}


def __getattr__(name: str) -> Any:
    """Import the Lightning-heavy parts on first use, so ``refusion_pl.data.io`` stays cheap to import."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'refusion_pl.data' has no attribute {name!r}")
