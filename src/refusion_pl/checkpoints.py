"""The one place that reads weight files: safe loading and the original implementation's key layout.

Everything goes through `torch.load(..., weights_only=True)`, so a checkpoint can never run code.
`load_original_state_dict` is strict: it names every missing, unexpected or mis-shaped key, because a
silently half-loaded network restores images badly without failing.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from refusion_pl.models.nafnet import ConditionalNAFNet
from refusion_pl.models.unet_ae import UNetAutoencoder

PathLike = str | os.PathLike[str]
WRAPPER_KEYS = ("params", "state_dict", "params_ema")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile

# (pattern, replacement) applied in order to every original key; each is a no-op on our own names.
NAFNET_RENAMES: tuple[tuple[str, str], ...] = (
    # bokeh: the time embedding was computed outside `time_mlp`, so its Linear layers are shifted by one
    (r"^time_mlp\.0\.", "time_mlp.1."),
    (r"^time_mlp\.2\.", "time_mlp.3."),
    (r"\.time_mlp\.1\.", ".mlp.1."),
)
UNET_AE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^(encoder|decoder)\.(\d+)\.0\.", r"\1.\2.res1."),
    (r"^(encoder|decoder)\.(\d+)\.1\.", r"\1.\2.res2."),
    (r"^(encoder|decoder)\.(\d+)\.2\.fn\.norm\.", r"\1.\2.attn.norm."),
    (r"^(encoder|decoder)\.(\d+)\.2\.fn\.fn\.", r"\1.\2.attn.body."),
    (r"^encoder\.(\d+)\.3\.", r"encoder.\1.down."),
    (r"^decoder\.(\d+)\.3\.(1\.)?", r"decoder.\1.up.conv."),
)


class CheckpointKeyError(KeyError):
    """Missing or unexpected keys; the message names them."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointShapeError(ValueError):
    """A key whose tensor shape differs between the checkpoint and the module."""


class UnsafeCheckpointError(ValueError):
    """The file needs arbitrary code (pickled objects) to load, so it is refused."""


def safe_torch_load(path: PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` restricted to tensors and plain containers (`weights_only=True`, always)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing {os.fspath(path)!r}: it is not a weights-only file ({err})"
        ) from err


def extract_state_dict(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    """Unwrap `{"params": ...}` / `{"state_dict": ...}` containers and strip `module.` style prefixes."""
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    return {_strip_prefixes(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def key_renames(module: nn.Module) -> tuple[tuple[str, str], ...]:
    """The original-to-ours key renames for a module type (none for unknown modules)."""
    if isinstance(module, ConditionalNAFNet):
        return NAFNET_RENAMES
    if isinstance(module, UNetAutoencoder):
        return UNET_AE_RENAMES
    return ()


def map_original_keys(state_dict: Mapping[str, Tensor], module: nn.Module) -> dict[str, tuple[str, Tensor]]:
    """Map each original key to our name; values keep the original key for error messages."""
    renames = [(re.compile(p), r) for p, r in key_renames(module)]
    mapped: dict[str, tuple[str, Tensor]] = {}
    for original, value in state_dict.items():
        key = original
        for pattern, repl in renames:
            key = pattern.sub(repl, key)
        if key in mapped:
            raise CheckpointKeyError(f"keys {mapped[key][0]!r} and {original!r} both map to {key!r}")
        mapped[key] = (original, value)
    return mapped


def load_original_state_dict(
    module: nn.Module, state_dict_or_path: Mapping[str, Any] | PathLike
) -> nn.Module:
    """Strictly load weights saved by the original implementation (or by us) into `module`.

    Raises `CheckpointKeyError` naming missing/unexpected keys, `CheckpointShapeError` naming the key and
    both shapes. Returns the module.
    """
    raw = (
        state_dict_or_path if isinstance(state_dict_or_path, Mapping) else safe_torch_load(state_dict_or_path)
    )
    mapped = map_original_keys(extract_state_dict(raw), module)
    expected = module.state_dict()
    _check_keys(mapped, expected)
    _check_shapes(mapped, expected)
    module.load_state_dict({k: v for k, (_, v) in mapped.items()}, strict=True)
    return module


def _check_keys(mapped: Mapping[str, tuple[str, Tensor]], expected: Mapping[str, Tensor]) -> None:
    """Name every missing and unexpected key with its shape, so a wrong file or setting is recognisable."""
    missing = [f"{k} (module {tuple(expected[k].shape)})" for k in sorted(set(expected) - set(mapped))]
    unexpected = [
        f"{_describe(k, mapped[k][0])} (checkpoint {tuple(mapped[k][1].shape)})"
        for k in sorted(set(mapped) - set(expected))
    ]
    if missing or unexpected:
        raise CheckpointKeyError(
            f"state dict does not match the module: missing keys {missing}, unexpected keys {unexpected}"
        )


def _check_shapes(mapped: Mapping[str, tuple[str, Tensor]], expected: Mapping[str, Tensor]) -> None:
    wrong = [
        f"{_describe(k, orig)}: checkpoint {tuple(v.shape)} vs module {tuple(expected[k].shape)}"
        for k, (orig, v) in mapped.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointShapeError("shape mismatch for " + "; ".join(wrong))


def _describe(key: str, original: str) -> str:
    return key if key == original else f"{original} (as {key})"
