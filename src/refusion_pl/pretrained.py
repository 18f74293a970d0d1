"""One loader for every kind of weight file, and the safetensors format for sharing models.

`from_pretrained(path)` takes a refusion_pl checkpoint (trained or converted), a `.safetensors` export, or
one of the original implementation's option files (with its `.pth` files) and returns a ready
`DiffusionModule`; `restore` and `evaluate` load through it. Exports hold only the inference weights (the
EMA weights where training kept them) and the settings needed to rebuild the model as JSON metadata:
safetensors stores raw tensors and cannot carry code, so it is the format to download and share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.files import atomic_write
from refusion_pl.lit.base import CHECKPOINT_KEY

PathLike = str | os.PathLike[str]
OPTION_SUFFIXES = (".yml", ".yaml")
SAFETENSORS_SUFFIX = ".safetensors"
EXPORT_FORMAT = "refusion_pl.diffusion"
EXPORT_VERSION = "1"
INFERENCE_PREFIXES = ("net.", "autoencoder.")
# Hyper-parameters that rebuild the model; optimiser and schedule settings only matter to training.
INFERENCE_HPARAMS = ("model", "variant", "channels", "nafnet", "autoencoder", "sde", "val", "crop_border")


class PretrainedError(ValueError):
    """A weight file that cannot be loaded as a refusion_pl model; the message names it and says why."""


def from_pretrained(
    path: PathLike,
    sde_overrides: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    weights: PathLike | None = None,
    autoencoder_weights: PathLike | None = None,
    task: str | None = None,
) -> Any:
    """A `DiffusionModule` in eval mode from a `.ckpt`, a `.safetensors` export or an original option file.

    `sde_overrides` sets sampling settings (`sampler`, `sample_steps`, `spacing`); trained SDE settings always come
    from the file. `weights`, `autoencoder_weights` and `task` apply to option files only.
    """
    from refusion_pl.lit.diffusion import DiffusionModule  # Lightning import only when a model is loaded

    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file")
    overrides = dict(sde_overrides or {})
    if path.suffix.lower() in OPTION_SUFFIXES:
        from refusion_pl.original import build_from_options

        module = build_from_options(path, weights, autoencoder_weights, task)
        checkpoint = {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            CHECKPOINT_KEY: {"kind": "diffusion", "config": module.run_config},
        }
    elif weights is not None or autoencoder_weights is not None or task is not None:
        raise PretrainedError(f"{path}: weights, autoencoder_weights and task apply to option files only")
    elif path.suffix.lower() == SAFETENSORS_SUFFIX:
        checkpoint = read_export(path)
    else:
        checkpoint = safe_torch_load(path, map_location="cpu")
        if not isinstance(checkpoint, Mapping):
            raise PretrainedError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint")
    module = DiffusionModule.from_checkpoint_data(dict(checkpoint), str(path), overrides)
    return module.to(map_location).eval()


# ---- safetensors export ----------------------------------------------------------------------------------------
def inference_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network weights of a checkpoint; the EMA weights where training averaged them.

    Lightning's EMA callback saves the averaged weights as `state_dict` and the raw ones as
    `current_model_state`, so `state_dict` is always the one to sample with.
    """
    return {
        key: value.detach().cpu().contiguous()
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(INFERENCE_PREFIXES)
    }


def export_metadata(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What an export stores beside the weights: settings to rebuild the model, task and provenance."""
    meta = checkpoint.get(CHECKPOINT_KEY) or {}
    config = meta.get("config") or {}
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in INFERENCE_HPARAMS}
    kept = {"task": config.get("task")}
    if config.get("converted_from"):
        kept["converted_from"] = _without_local_paths(config["converted_from"])
    return {
        "hyper_parameters": hparams,
        "config": {key: value for key, value in kept.items() if value is not None},
        "ema": "current_model_state" in checkpoint,
        "global_step": int(checkpoint.get("global_step", 0) or 0),
    }


def _without_local_paths(source: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance of converted weights with file names only: a shared file should not carry local paths."""
    out = dict(source)
    out["options"] = Path(source["options"]).name
    for key in ("weights", "autoencoder_weights"):
        if source.get(key):
            out[key] = {**source[key], "path": Path(source[key]["path"]).name}
    return out


def write_export(checkpoint: Mapping[str, Any], output: PathLike) -> dict[str, Any]:
    """Write a checkpoint's inference weights and settings to `output` (atomically); return the metadata."""
    meta = checkpoint.get(CHECKPOINT_KEY) or {}
    if meta.get("kind") != "diffusion" or "hyper_parameters" not in checkpoint:
        raise PretrainedError("only refusion_pl diffusion checkpoints can be exported")
    tensors = inference_state(checkpoint)
    info = export_metadata(checkpoint)
    header = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "refusion_pl": json.dumps(info, sort_keys=True),
    }
    atomic_write(output, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return info


def read_export(path: PathLike) -> dict[str, Any]:
    """A `.safetensors` export as the checkpoint layout `DiffusionModule.from_checkpoint_data` reads."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise PretrainedError(f"{path} is not a readable safetensors file ({err})") from None
    if header.get("format") != EXPORT_FORMAT or "refusion_pl" not in header:
        raise PretrainedError(
            f"{path} is a safetensors file but not a refusion_pl export (format={header.get('format')!r})"
        )
    if header.get("format_version") != EXPORT_VERSION:
        raise PretrainedError(
            f"{path} has export format version {header.get('format_version')!r}; this refusion_pl reads "
            f"version {EXPORT_VERSION}"
        )
    info = json.loads(header["refusion_pl"])
    return {
        "state_dict": tensors,
        "hyper_parameters": info["hyper_parameters"],
        "global_step": info.get("global_step", 0),
        CHECKPOINT_KEY: {"kind": "diffusion", "config": info.get("config") or {}},
    }


def read_export_info(path: PathLike) -> dict[str, Any]:
    """The metadata of an export (settings, task, EMA, steps) without reading its weights."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        header = handle.metadata() or {}
    return json.loads(header["refusion_pl"])


# ---- sampling every variant from Python -------------------------------------------------------------------------
@torch.no_grad()
def restore_with_scalars(
    module: Any,
    lq: torch.Tensor,
    cond_scalars: torch.Tensor | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    spacing: str | None = None,
) -> torch.Tensor:
    """`module.restore` for every network variant: bokeh networks also take per-image scalars (B, 3) =
    (source lens, target lens, disparity) in the network's units; stereo networks take both views stacked
    on channels (`lq` of 6 channels for RGB pairs)."""
    if module.net.variant == "bokeh" and cond_scalars is None:
        raise PretrainedError("a bokeh network needs cond_scalars of shape (B, 3)")
    scalars = None if cond_scalars is None else cond_scalars.to(lq.device, torch.float32)
    return module.restore(
        lq, sampler=sampler, steps=steps, generator=generator, cond_scalars=scalars, spacing=spacing
    )
