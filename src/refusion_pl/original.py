"""Weights trained by the original implementation: its option files plus `.pth` files to refusion_pl models.

The original's test scripts read one YAML option file (network settings, SDE, task) and one or two `.pth`
files: the noise network (`network_G`, `path.pretrain_model_G`) and, for latent models, the U-Net autoencoder
(`network_L`, `path.pretrain_model_L`). `build_from_options` reads the same inputs into a `DiffusionModule`
and `convert_original` writes it as a self-contained refusion_pl checkpoint, so `restore` and `evaluate` need
nothing else afterwards. Every mismatch is an error naming the file, the key and the shapes: a half-loaded or
swapped network would restore images badly without failing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from refusion_pl.checkpoints import (
    CheckpointKeyError,
    CheckpointShapeError,
    UnsafeCheckpointError,
    extract_state_dict,
    load_original_state_dict,
    safe_torch_load,
)
from refusion_pl.config import CONFIG_DIR, SAMPLERS, SCHEDULES
from refusion_pl.files import atomic_write
from refusion_pl.lit.base import CHECKPOINT_KEY

PathLike = str | os.PathLike[str]

# The original's `model` key: which of its model classes the option file drives.
MODEL_KINDS = {"denoising": "pixel", "latent_denoising": "latent"}
NOISE_NETWORK = "ConditionalNAFNet"
AUTOENCODER = "UNet"
NAFNET_KEYS = ("width", "enc_blk_nums", "middle_blk_num", "dec_blk_nums")
AUTOENCODER_KEYS = ("in_ch", "out_ch", "ch", "ch_mult", "embed_dim")
SDE_KEYS = ("max_sigma", "T", "schedule", "eps")
# The original's `distortion` names and our task names. Several published option files carry a copied
# `distortion: derain` (deblurring, inpainting), so `task=` overrides this guess.
DISTORTION_TASKS = {
    "deshadow": "shadow",
    "derain": "derain",
    "deblur": "deblur",
    "sr": "sr",
    "dehazing": "dehaze",
    "denoising": "denoise",
    "inpainting": "inpaint",
}
# Folders searched for relative weight paths: the option file's own and those above it, up to the task folder
# of `codes/config/<task>/options/<sub>/test/`.
SEARCH_LEVELS = 4
# Telltale keys of the two kinds of weight file (after `module.` prefixes are stripped).
AUTOENCODER_MARKERS = ("init_conv.weight", "latent_conv.weight", "post_latent_conv.weight")
NOISE_NETWORK_MARKERS = ("intro.weight", "ending.weight")


class ConversionError(ValueError):
    """An option file or weight file that cannot become a refusion_pl model; the message says what to fix."""


@dataclass(frozen=True)
class OriginalModel:
    """What an original option file says about its model: everything a refusion_pl checkpoint stores."""

    options_path: Path
    name: str
    model: str  # pixel | latent
    variant: str  # pixel | latent | stereo | bokeh
    channels: int
    nafnet: dict[str, Any]
    autoencoder: dict[str, Any] | None
    sde: dict[str, Any]
    task: dict[str, Any]
    weights: str | None  # path.pretrain_model_G as written
    autoencoder_weights: str | None  # path.pretrain_model_L as written

    def hyper_parameters(self) -> dict[str, Any]:
        """`DiffusionModule` arguments (plain containers, so checkpoints load weights-only)."""
        return {
            "model": self.model,
            "variant": self.variant,
            "channels": self.channels,
            "nafnet": dict(self.nafnet),
            "autoencoder": None if self.autoencoder is None else dict(self.autoencoder),
            "sde": dict(self.sde),
            "val": {"num_images": 2, "sample_steps": None, "sampler": self.sde["sampler"]},
            "crop_border": int(self.task["crop_border"]),
        }


# ---- option files ---------------------------------------------------------------------------------------------
def read_options(path: PathLike, task: str | None = None) -> OriginalModel:
    """Parse one of the original's option files (`options/test/*.yml` or `options/train/*.yml`).

    `task` names a refusion_pl task (`conf/task/`) when the file's `distortion` is wrong or missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"options={path}: no such option file")
    try:
        opts = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # yaml's parse errors and OmegaConf's (e.g. a duplicate key)
        raise ConversionError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(opts, Mapping):
        raise ConversionError(f"{path} is not an option file of the original implementation (no mapping)")
    model = _model_kind(path, opts)
    if "distortion" not in opts:
        raise ConversionError(
            f"{path}: no distortion key: this is an option file of the original's denoising-sde, whose "
            "DenoisingSDE (sampling from the noisy input at its noise level) is not the IR-SDE refusion_pl "
            "implements; its weights cannot be converted"
        )
    variant = _variant(path, opts, model)
    nafnet, img_channel = _noise_network(path, opts)
    autoencoder, channels = None, img_channel
    if model == "latent":
        autoencoder, channels = _autoencoder(path, opts, img_channel)
    sde = _sde(path, opts)
    paths = opts.get("path") or {}
    return OriginalModel(
        options_path=path,
        name=str(opts.get("name") or path.stem),
        model=model,
        variant=variant,
        channels=channels,
        nafnet=nafnet,
        autoencoder=autoencoder,
        sde=sde,
        task=_task(path, opts, variant, channels, task),
        weights=paths.get("pretrain_model_G"),
        autoencoder_weights=paths.get("pretrain_model_L"),
    )


def _model_kind(path: Path, opts: Mapping[str, Any]) -> str:
    kind = opts.get("model")
    if kind == "latent":
        raise ConversionError(
            f"{path}: model=latent describes the autoencoder alone (the original's stage 1). Convert the "
            "diffusion option file of the task (model: latent_denoising, with network_G and network_L) and "
            "pass this autoencoder's .pth as autoencoder_weights=PATH"
        )
    if kind not in MODEL_KINDS:
        raise ConversionError(
            f"{path}: model={kind!r} is not supported; refusion_pl converts the original's "
            f"{' and '.join(MODEL_KINDS)} option files"
        )
    return MODEL_KINDS[kind]


def _dataset_modes(opts: Mapping[str, Any]) -> list[str]:
    datasets = opts.get("datasets") or {}
    return [str(d.get("mode", "")) for d in datasets.values() if isinstance(d, Mapping)]


def _variant(path: Path, opts: Mapping[str, Any], model: str) -> str:
    """Stereo SR and bokeh reuse `which_model: ConditionalNAFNet`; their dataset modes tell them apart."""
    modes = _dataset_modes(opts)
    if any(mode.startswith("Ste") for mode in modes):
        variant = "stereo"
    elif any(mode.startswith("Bokeh") for mode in modes) or opts.get("distortion") == "bokeh":
        variant = "bokeh"
    else:
        return model
    expected = {"stereo": "pixel", "bokeh": "latent"}[variant]
    if model != expected:
        raise ConversionError(f"{path}: a {variant} option file must have model={expected!r}")
    return variant


def _network_name(path: Path, node: Mapping[str, Any], section: str) -> tuple[str, str]:
    for key in ("which_model_G", "which_model"):
        if key in node:
            return str(node[key]), f"{section}.{key}"
    raise ConversionError(f"{path}: {section} names no network (which_model_G or which_model)")


def _setting(
    path: Path, node: Mapping[str, Any], section: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The required `keys` of `section.setting`; any key refusion_pl does not know is an error, not ignored."""
    setting = node.get("setting") or {}
    unknown = sorted(set(setting) - set(keys) - set(optional))
    if unknown:
        raise ConversionError(f"{path}: {section}.setting.{unknown[0]} is not a setting refusion_pl knows")
    missing = [key for key in keys if key not in setting]
    if missing:
        raise ConversionError(f"{path}: {section}.setting.{missing[0]} is missing")
    return {key: list(setting[key]) if isinstance(setting[key], list) else setting[key] for key in keys}


def _noise_network(path: Path, opts: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    node = opts.get("network_G")
    if not isinstance(node, Mapping):
        raise ConversionError(f"{path}: no network_G section")
    name, key = _network_name(path, node, "network_G")
    if name != NOISE_NETWORK:
        raise ConversionError(
            f"{path}: {key}={name!r} is not supported: refusion_pl runs Refusion's {NOISE_NETWORK} noise "
            f"network (IR-SDE's ConditionalUNet is a different architecture)"
        )
    nafnet = _setting(path, node, "network_G", NAFNET_KEYS, optional=("img_channel",))
    if len(nafnet["enc_blk_nums"]) != len(nafnet["dec_blk_nums"]):
        raise ConversionError(
            f"{path}: network_G.setting.enc_blk_nums={nafnet['enc_blk_nums']} and dec_blk_nums="
            f"{nafnet['dec_blk_nums']} must have the same length"
        )
    return nafnet, int((node.get("setting") or {}).get("img_channel", 3))


def _autoencoder(path: Path, opts: Mapping[str, Any], img_channel: int) -> tuple[dict[str, Any], int]:
    node = opts.get("network_L")
    if not isinstance(node, Mapping):
        raise ConversionError(f"{path}: model=latent_denoising but no network_L (autoencoder) section")
    name, key = _network_name(path, node, "network_L")
    if name != AUTOENCODER:
        raise ConversionError(f"{path}: {key}={name!r} is not supported; the latent autoencoder is UNet")
    setting = _setting(path, node, "network_L", AUTOENCODER_KEYS)
    if setting["in_ch"] != setting["out_ch"]:
        raise ConversionError(
            f"{path}: network_L.setting.in_ch={setting['in_ch']} and out_ch={setting['out_ch']} differ; "
            "restoration maps an image to one with the same channels"
        )
    if setting["embed_dim"] != img_channel:
        raise ConversionError(
            f"{path}: network_G.setting.img_channel={img_channel} but network_L.setting.embed_dim="
            f"{setting['embed_dim']}: the noise network runs on the autoencoder's latents, so they must match"
        )
    autoencoder = {key: setting[key] for key in ("ch", "ch_mult", "embed_dim")}
    return autoencoder, int(setting["in_ch"])


def _sde(path: Path, opts: Mapping[str, Any]) -> dict[str, Any]:
    node = opts.get("sde")
    if not isinstance(node, Mapping):
        raise ConversionError(f"{path}: no sde section")
    missing = [key for key in SDE_KEYS if key not in node]
    if missing:
        raise ConversionError(f"{path}: sde.{missing[0]} is missing")
    if node["schedule"] not in SCHEDULES:
        raise ConversionError(f"{path}: sde.schedule={node['schedule']!r}; supported: {', '.join(SCHEDULES)}")
    # The original's test scripts sample with the reverse SDE unless `sampling_mode` says otherwise.
    sampler = str(node.get("sampling_mode") or "sde")
    if sampler not in SAMPLERS:
        raise ConversionError(f"{path}: sde.sampling_mode={sampler!r}; supported: {', '.join(SAMPLERS)}")
    return {
        "max_sigma": float(node["max_sigma"]),
        "steps": int(node["T"]),
        "schedule": str(node["schedule"]),
        "eps": float(node["eps"]),
        "sampler": sampler,
        "sample_steps": None,
        "prediction": "noise",
    }


def known_tasks() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))


def _task(
    path: Path, opts: Mapping[str, Any], variant: str, channels: int, override: str | None
) -> dict[str, Any]:
    """Our task config for the option file; scale and metric border follow the original's test script."""
    degradation = opts.get("degradation") or {}
    distortion = opts.get("distortion")
    if override is not None:
        if override not in known_tasks():
            raise ConversionError(f"task={override!r} is unknown; choose one of: {', '.join(known_tasks())}")
        name = override
    elif variant in ("stereo", "bokeh"):
        name = "stereo_sr" if variant == "stereo" else "bokeh"
    elif distortion in DISTORTION_TASKS:
        name = DISTORTION_TASKS[distortion]
    else:
        raise ConversionError(
            f"{path}: distortion={distortion!r} has no refusion_pl task; pass task=NAME "
            f"({', '.join(known_tasks())})"
        )
    scale = int(degradation.get("scale", 1) or 1) if name in ("sr", "stereo_sr") else 1
    # The original's test script crops `crop_border`, else `degradation.scale`, pixels before its metrics.
    crop_border = int(opts.get("crop_border") or degradation.get("scale", 0) or 0)
    task_file = CONFIG_DIR / "task" / f"{name}.yaml"
    if task_file.is_file():
        loaded = OmegaConf.load(task_file)
        # stereo_sr and bokeh are global-package presets (they also pick model, data and network variant)
        composed = OmegaConf.create({"task": loaded.task if "task" in loaded else loaded})
        composed.task.scale = scale
        task = OmegaConf.to_container(composed, resolve=True)["task"]  # type: ignore[index]
    else:  # a task without a config file
        task = {"name": name, "degradation": {}}
    task.update(channels=channels, scale=scale, crop_border=crop_border)
    return task


# ---- weight files ---------------------------------------------------------------------------------------------
def resolve_weights(value: str | None, given: PathLike | None, spec: OriginalModel, key: str) -> Path:
    """The weight file to read: the explicit argument, else the option file's path (relative paths are
    tried from the working directory, then from the option file's folder and the folders above it: the
    original's test scripts run in the task folder, `options/test/` or `options/<sub>/test/` below)."""
    argument = "weights" if key == "path.pretrain_model_G" else "autoencoder_weights"
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ConversionError(f"{argument}={path}: no such file")
        return path
    if not value:
        raise ConversionError(f"{spec.options_path}: {key} is empty; pass {argument}=PATH")
    candidates = [Path(value)]
    if not Path(value).is_absolute():
        folder = spec.options_path.resolve().parent
        candidates += [ancestor / value for ancestor in [folder, *folder.parents][:SEARCH_LEVELS]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ConversionError(
        f"{spec.options_path}: {key}={value} not found (tried {tried}); pass {argument}=PATH"
    )


def read_weights(path: Path) -> dict[str, Tensor]:
    """A `.pth` state dict, weights-only, with `module.` (DataParallel) and wrapper levels removed."""
    try:
        raw = safe_torch_load(path)
    except UnsafeCheckpointError as err:
        raise ConversionError(str(err)) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise ConversionError(f"{path} is not a readable torch weight file ({err})") from None
    if not isinstance(raw, Mapping):
        raise ConversionError(f"{path} holds a {type(raw).__name__}, not a state dict")
    if CHECKPOINT_KEY in raw:
        raise ConversionError(
            f"{path} is already a refusion_pl checkpoint: pass it to restore/evaluate directly"
        )
    state_dict = extract_state_dict(raw)
    if not state_dict:
        raise ConversionError(f"{path} holds no tensors")
    return state_dict


def network_kind(state_dict: Mapping[str, Tensor]) -> str | None:
    """`autoencoder`, `noise network` or None, from telltale keys."""
    if any(key in state_dict for key in AUTOENCODER_MARKERS):
        return "autoencoder"
    if all(key in state_dict for key in NOISE_NETWORK_MARKERS):
        return "noise network"
    return None


def _check_kind(state_dict: Mapping[str, Tensor], path: Path, wanted: str, argument: str) -> None:
    found = network_kind(state_dict)
    if found is None or found == wanted:
        return
    markers = AUTOENCODER_MARKERS if found == "autoencoder" else NOISE_NETWORK_MARKERS
    key = next(k for k in markers if k in state_dict)
    other = "autoencoder_weights" if argument == "weights" else "weights"
    raise ConversionError(
        f"{path} (given as {argument}) holds the {found}, not the {wanted}: its key {key!r} has shape "
        f"{tuple(state_dict[key].shape)}. In the original's latent pair the noise network is network_G "
        "(path.pretrain_model_G, e.g. latent-reffusion-dehazing.pth) and the autoencoder is network_L "
        f"(path.pretrain_model_L, e.g. latent-dehazing.pth); pass this file as {other}=PATH"
    )


def _load_into(module: torch.nn.Module, state_dict: Mapping[str, Tensor], path: Path, section: str) -> None:
    try:
        load_original_state_dict(module, state_dict)
    except (CheckpointKeyError, CheckpointShapeError) as err:
        raise ConversionError(
            f"{path} does not fit the {section} described by the option file: {err}"
        ) from None


# ---- building and writing --------------------------------------------------------------------------------------
def build_from_options(
    options: PathLike,
    weights: PathLike | None = None,
    autoencoder_weights: PathLike | None = None,
    task: str | None = None,
) -> Any:
    """A `DiffusionModule` (eval mode) holding the original's weights, described by its option file."""
    from refusion_pl.lit.diffusion import DiffusionModule  # Lightning import only when a model is built

    spec = read_options(options, task)
    weights_path = resolve_weights(spec.weights, weights, spec, "path.pretrain_model_G")
    net_state = read_weights(weights_path)
    _check_kind(net_state, weights_path, "noise network", "weights")
    ae_path: Path | None = None
    if spec.model == "latent":
        ae_path = resolve_weights(
            spec.autoencoder_weights, autoencoder_weights, spec, "path.pretrain_model_L"
        )
    elif autoencoder_weights is not None:
        raise ConversionError(
            f"autoencoder_weights={autoencoder_weights} given, but {spec.options_path} describes a pixel-space "
            "model (model: denoising), which has no autoencoder"
        )
    module = DiffusionModule(**spec.hyper_parameters())
    _load_into(module.net, net_state, weights_path, f"network_G ({spec.variant} {NOISE_NETWORK})")
    if ae_path is not None:
        ae_state = read_weights(ae_path)
        _check_kind(ae_state, ae_path, "autoencoder", "autoencoder_weights")
        _load_into(module.autoencoder, ae_state, ae_path, "network_L (UNet autoencoder)")
    module.run_config = {
        "task": spec.task,
        "model": {"name": spec.model},
        "net": {"nafnet": spec.nafnet, "autoencoder": spec.autoencoder, "variant": spec.variant},
        "sde": spec.sde,
        "converted_from": {
            "name": spec.name,
            "options": str(spec.options_path),
            "weights": {"path": str(weights_path), "sha256": sha256(weights_path)},
            "autoencoder_weights": None
            if ae_path is None
            else {"path": str(ae_path), "sha256": sha256(ae_path)},
        },
    }
    return module.eval()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_of(module: Any) -> dict[str, Any]:
    """The checkpoint layout `DiffusionModule.from_checkpoint` reads (the one training writes)."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "hyper_parameters": dict(module.hparams),
        "global_step": 0,
        CHECKPOINT_KEY: {"kind": module.kind, "config": module.run_config},
    }


def convert_original(
    options: PathLike,
    output: PathLike,
    weights: PathLike | None = None,
    autoencoder_weights: PathLike | None = None,
    task: str | None = None,
) -> Any:
    """Write the original's model as a refusion_pl checkpoint at `output` (atomically); return the module."""
    module = build_from_options(options, weights, autoencoder_weights, task)
    checkpoint = checkpoint_of(module)
    atomic_write(output, lambda tmp: torch.save(checkpoint, tmp))
    return module
