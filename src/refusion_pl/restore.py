"""``python -m refusion_pl.restore ckpt=PATH input=FILE_OR_DIR output=DIR``: restore your own photos.

Only degraded images are needed. Every trained setting comes from the checkpoint; sampling settings
(``sampler``, ``sample_steps``, ``spacing``, ``seed``), the device, the precision and tiling can be chosen.
Outputs are written atomically and existing ones are skipped, so an interrupted folder run resumes where it stopped;
unreadable files are reported by name and skipped, and the exit status says whether anything failed.
``restore(cfg)`` does the work and returns a summary, so tests call it in-process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import re
import resource
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from refusion_pl.checkpoints import UnsafeCheckpointError
from refusion_pl.config import CONFIG_DIR
from refusion_pl.data.io import IMAGE_EXTENSIONS, DataError, ImageInfo, read_image, write_image
from refusion_pl.files import OutputError
from refusion_pl.pipeline import add_edge_margin, photo_scalars, remove_edge_margin
from refusion_pl.sampling import SAMPLERS, SPACINGS, check_temperature
from refusion_pl.tiling import default_budget, plan_skips, plan_tile, restore_tiled

log = logging.getLogger("refusion_pl.restore")

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SUPPORTED_CHANNELS = (1, 3)


class RestoreError(ValueError):
    """A setting or checkpoint that cannot work; the message says what to change."""


# ---- settings --------------------------------------------------------------------------------------------------
def parse_tile(value: Any) -> str | int | None:
    """``auto`` | ``none`` (or null) | a tile size in pixels."""
    if value is None or str(value).lower() in ("none", "null", "off", "false"):
        return None
    if str(value).lower() == "auto":
        return "auto"
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise RestoreError(f"tile={value!r} must be auto, none or a size in pixels") from None
    if size < 16:
        raise RestoreError(f"tile={size} is too small; use at least 16 pixels (or tile=none)")
    return size


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}
_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_memory(value: Any) -> int | None:
    """Bytes from ``4GB``, ``512MB``, ``4e9`` or a number; None keeps the device default."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise RestoreError(f"max_memory={value!r} must look like 4GB, 512MB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RestoreError(f"device={name} asked for, but no CUDA device is available; use device=cpu")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the networks; the sampler's arithmetic stays in float32."""
    if precision not in PRECISIONS:
        raise RestoreError(f"precision={precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise RestoreError("precision=fp16 needs a GPU; use precision=bf16 or fp32 on CPU")
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


# ---- model ------------------------------------------------------------------------------------------------------
def load_model(
    path: str | Path,
    sampler: str | None,
    sample_steps: int | None,
    device: torch.device,
    spacing: str | None = None,
) -> Any:
    """The diffusion module of a checkpoint, loaded weights-only, on ``device``.

    ``path``: a ``refusion_pl`` checkpoint (trained or converted), a ``.safetensors`` export, or one of the
    original implementation's option files naming its ``.pth`` files (``refusion_pl.pretrained``).
    """
    from refusion_pl.original import ConversionError
    from refusion_pl.pretrained import PretrainedError, from_pretrained

    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"ckpt={path}: no such checkpoint file")
    if sampler is not None and sampler not in SAMPLERS:
        raise RestoreError(f"sampler={sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
    if spacing is not None and spacing not in SPACINGS:
        raise RestoreError(f"spacing={spacing!r} is unknown; allowed: {', '.join(SPACINGS)}")
    try:
        module = from_pretrained(path, sde_overrides={"sampler": sampler, "spacing": spacing})
    except UnsafeCheckpointError as err:
        raise RestoreError(
            f"{err}. Only checkpoints written by refusion_pl (weights only) are loaded"
        ) from None
    except (ConversionError, PretrainedError) as err:
        raise RestoreError(str(err)) from None
    except (KeyError, RuntimeError, TypeError) as err:
        raise RestoreError(
            f"{path} is not a usable refusion_pl diffusion checkpoint: its weights do not match its stored "
            f"settings ({type(err).__name__}: {str(err).splitlines()[0][:300]})"
        ) from None
    channels = int(module.hparams.channels)
    if channels not in SUPPORTED_CHANNELS:
        raise RestoreError(f"{path} restores {channels}-channel inputs; restore handles 1 or 3 channels")
    if sample_steps is not None and not 1 <= int(sample_steps) <= module.sde.T:
        raise RestoreError(
            f"sample_steps={sample_steps} is out of range: this checkpoint was trained with "
            f"T={module.sde.T} steps, so use 1..{module.sde.T}"
        )
    return module.to(device).eval()


def default_steps(module: Any) -> int | None:
    """The sampling steps a checkpoint was trained to be sampled with (``DiffusionModule.sample_steps``)."""
    return module.sample_steps


def inference_settings(cfg: DictConfig) -> dict[str, Any]:
    """The config's ``inference:`` node (``compile``, ``channels_last``), checked (absent: the defaults)."""
    from refusion_pl.models.inference import inference_switches

    node = cfg.get("inference")
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    try:
        return inference_switches(settings)  # type: ignore[arg-type]
    except ValueError as err:
        raise RestoreError(str(err)) from None


def parse_temperature(value: Any, checkpoint_value: float) -> float:
    """``temperature`` of a restore/evaluate config: a number >= 0, or null for the checkpoint's own."""
    if value is None:
        return float(checkpoint_value)
    try:
        return check_temperature(value)
    except ValueError as err:
        raise RestoreError(f"{err}, or null for the checkpoint's own") from None


def parse_flag(key: str, value: Any, checkpoint_value: bool) -> bool:
    """A true/false setting of a restore/evaluate config, or null for the checkpoint's own."""
    if value is None:
        return bool(checkpoint_value)
    if not isinstance(value, bool):
        raise RestoreError(f"{key}={value!r}: give true or false, or null for the checkpoint's own")
    return value


def parse_count(key: str, value: Any, checkpoint_value: int, low: int) -> int:
    """An integer setting >= ``low`` of a restore/evaluate config, or null for the checkpoint's own."""
    if value is None:
        return int(checkpoint_value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RestoreError(f"{key}={value!r}: give an integer >= {low}, or null for the checkpoint's own")
    return value


def task_scale(module: Any) -> int:
    """Super-resolution factor of the checkpoint's task (the LQ is upsampled to the output size first)."""
    task = (getattr(module, "run_config", None) or {}).get("task") or {}
    return int(task.get("scale", 1) or 1)


# ---- one image --------------------------------------------------------------------------------------------------
@dataclass
class Restorer:
    """Restores one ``[C, H, W]`` image with a loaded module and fixed sampling / tiling settings."""

    module: Any
    device: torch.device
    sampler: str
    steps: int | None = None
    spacing: str = "ou"  # timesteps of fewer-step sampling: ou | uniform | logsnr (sampling.sample)
    seed: int = 0
    precision: str = "fp32"
    tile: str | int | None = "auto"
    max_memory: int | None = None
    progress: bool = False
    upscale: bool = True  # super-resolution checkpoints: bicubic-upsample the LQ by the task's scale first
    edge_margin: int = 0  # mirrored margin restored around the image, then cropped (pipeline.add_edge_margin)
    samples: int = 1  # reverse-SDE draws averaged (pipeline.sample_mean)
    temperature: float = 1.0  # scale of the sampler's noise; 0: deterministic (sampling.sample)
    shift_jitter: bool = False  # a fresh grid phase for the network at every step (pipeline.ShiftJitter)
    last_tile: int | None = field(default=None, init=False)

    @classmethod
    def from_config(cls, cfg: DictConfig, module: Any, device: torch.device, **overrides: Any) -> Restorer:
        """The sampling and tiling settings of a restore/evaluate config (checkpoint defaults where null)."""
        settings = {
            "sampler": cfg.sampler or module.val_cfg["sampler"],
            "steps": cfg.sample_steps if cfg.sample_steps is not None else default_steps(module),
            "spacing": cfg.get("spacing") or module.val_cfg.get("spacing", "ou"),
            "seed": int(cfg.seed),
            "precision": str(cfg.precision),
            "tile": parse_tile(cfg.tile),
            "max_memory": parse_memory(cfg.max_memory),
            "edge_margin": parse_count("edge_margin", cfg.get("edge_margin"), module.edge_margin, 0),
            "samples": parse_count("samples", cfg.get("samples"), module.samples, 1),
            "temperature": parse_temperature(cfg.get("temperature"), module.temperature),
            "shift_jitter": parse_flag("shift_jitter", cfg.get("shift_jitter"), module.shift_jitter),
            **overrides,
        }
        return cls(module=module, device=device, **settings)

    def plan(self, height: int, width: int) -> tuple[int | None, bool]:
        """(tile size, keep fp16 skips): explicit sizes recompute skips (exact); ``auto`` follows the budget."""
        if self.tile != "auto":
            return self.tile, False  # type: ignore[return-value]
        budget = self.max_memory or default_budget(self.device)
        ae, net, channels = self.module.autoencoder, self.module.net, int(self.module.hparams.channels)
        tile = plan_tile(ae, net, height, width, budget, channels)
        store = (
            tile is not None and ae is not None and plan_skips(ae, net, height, width, tile, budget, channels)
        )
        return tile, store

    @property
    def views(self) -> int:
        """2 for stereo networks (both views stacked on channels), else 1."""
        return 2 if self.module.net.variant == "stereo" else 1

    @property
    def needs_scalars(self) -> bool:
        """Bokeh networks restore with three per-image scalars (source lens, target lens, disparity)."""
        return self.module.net.variant == "bokeh"

    def plan_rows(self, height: int, width: int) -> int | None:
        """Stereo: bands of whole rows (never cut across a row) holding about as many pixels as a planned tile."""
        tile = self.tile
        if tile == "auto":
            budget = self.max_memory or default_budget(self.device)
            net, channels = self.module.net, int(self.module.hparams.channels)
            tile = plan_tile(None, net, height, self.views * width, budget, self.views * channels)
        if tile is None:
            return None
        align = int(getattr(self.module.net, "pad_multiple", 1))
        rows = max(align, int(tile) * int(tile) // (self.views * width) // align * align)
        return None if rows >= height else rows

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, cond_scalars: torch.Tensor | None = None) -> torch.Tensor:
        """Restore one ``[C, H, W]`` image (stereo: ``[2C, H, W]``, left then right view) with its scalars."""
        if self.needs_scalars and cond_scalars is None:
            raise RestoreError(
                "a bokeh checkpoint needs the lens settings: src_lens, tgt_lens, disparity or meta"
            )
        expected = self.views * int(self.module.hparams.channels)
        if image.shape[0] != expected:
            raise DataError(
                f"the checkpoint restores {expected}-channel samples, got {image.shape[0]} channels"
            )
        lq = image[None].to(self.device)
        scale = task_scale(self.module) if self.upscale else 1
        if scale > 1:
            lq = torch.nn.functional.interpolate(lq, scale_factor=scale, mode="bicubic").clamp_(0, 1)
        cond_scalars = photo_scalars(self.module.net, lq, cond_scalars)  # the photo's, not its margin's
        lq, margin = add_edge_margin(lq, self.edge_margin)  # before planning: the tiles cover the margin too
        if self.views > 1:
            self.last_tile, store_skips = self.plan_rows(lq.shape[-2], lq.shape[-1]), False
        else:
            self.last_tile, store_skips = self.plan(lq.shape[-2], lq.shape[-1])
        scalars = None if cond_scalars is None else cond_scalars.reshape(1, -1).to(self.device, torch.float32)
        generator = torch.Generator(device=self.device).manual_seed(int(self.seed))
        with autocast(self.device, self.precision):
            out = restore_tiled(
                self.module.sde,
                self.module.noise_model,
                lq,
                autoencoder=self.module.autoencoder,
                sampler=self.sampler,
                steps=self.steps,
                spacing=self.spacing,
                generator=generator,
                progress=self.progress,
                tile=self.last_tile,
                store_skips=store_skips,
                cond_scalars=scalars,
                whole_rows=self.views > 1,
                samples=self.samples,
                temperature=self.temperature,
                shift_jitter=self.shift_jitter,
            )
        return remove_edge_margin(out, margin)[0].float().cpu()


def check_channels(info: ImageInfo, channels: int) -> None:
    if info.source_channels > channels:
        raise DataError(
            f"{info.path} has {info.source_channels} colour channels but the checkpoint restores "
            f"{channels}-channel images (its task does not fit this input)"
        )


def restore_file(
    restorer: Restorer,
    source: Path,
    target: Path,
    cond_scalars: torch.Tensor | None = None,
    max_pixels: int | None = None,
) -> float:
    """Read, restore and atomically write one image (same bit depth, ICC profile and EXIF); seconds taken."""
    return restore_views(restorer, [source], [target], cond_scalars, max_pixels)


def restore_views(
    restorer: Restorer,
    sources: list[Path],
    targets: list[Path],
    cond_scalars: torch.Tensor | None = None,
    max_pixels: int | None = None,
) -> float:
    """``restore_file`` for a sample of several files: a stereo pair's left and right views, stacked on
    channels for the network and written back as two images. ``max_pixels``: the reader's size limit
    (None: ``REFUSION_MAX_IMAGE_PIXELS``); the web demo sets a smaller one."""
    channels = int(restorer.module.hparams.channels)
    images, infos = [], []
    for source in sources:
        image, info = read_image(source, channels=channels, max_pixels=max_pixels)
        check_channels(info, channels)
        images.append(image)
        infos.append(info)
    if any(image.shape != images[0].shape for image in images):
        sizes = ", ".join(f"{s.name} {tuple(i.shape[-2:])}" for s, i in zip(sources, images))
        raise DataError(f"the views of a stereo pair differ in size: {sizes}")
    start = time.perf_counter()
    out = restorer(torch.cat(images), cond_scalars)
    for view, target, info in zip(out.chunk(len(sources)), targets, infos):
        if info.source_channels == 1 and view.shape[0] == 3:
            view = view.mean(dim=0, keepdim=True)  # a grey photo stays grey
        write_image(target, view, bit_depth=info.bit_depth, icc_profile=info.icc_profile, exif=info.exif)
    return time.perf_counter() - start


# ---- stereo pairs and lens settings -----------------------------------------------------------------------------
def stereo_samples(files: list[Path]) -> tuple[list[list[Path]], dict[Path, str]]:
    """Left/right views grouped by name (``<id>_L`` with ``<id>_R``): ``([left, right] lists, failures)``.

    A file that is not a view, or a view without its partner, is a failure naming it (the others go on).
    """
    from refusion_pl.data.stereo import split_view

    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    failures: dict[Path, str] = {}
    for file in files:
        parsed = split_view(file.stem)
        if parsed is None:
            failures[file] = "not a stereo view: stereo checkpoints restore <id>_L / <id>_R pairs"
            continue
        groups.setdefault((file.parent, parsed[0]), {})[parsed[1]] = file
    samples = []
    for views in groups.values():
        if set(views) == {"L", "R"}:
            samples.append([views["L"], views["R"]])
            continue
        present = next(iter(views.values()))
        failures[present] = (
            f"no {'right' if 'L' in views else 'left'} view beside it (stereo pairs need both)"
        )
    return sorted(samples), failures


def shard_groups(files: list[Path]) -> list[list[Path]]:
    """Files that must stay in one worker together: the views of a stereo pair (others alone)."""
    from refusion_pl.data.stereo import split_view

    groups: dict[tuple[Path, str], list[Path]] = {}
    for file in files:
        parsed = split_view(file.stem)
        groups.setdefault((file.parent, parsed[0] if parsed else file.name), []).append(file)
    return list(groups.values())


@dataclass
class LensSettings:
    """The bokeh scalars of each input: a meta file's line for it, else the folder-wide settings."""

    folder: torch.Tensor | None = None
    meta: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    meta_path: str | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> LensSettings | None:
        """None when no lens setting was given; a half-given folder setting is an error naming the keys."""
        from refusion_pl.data.bokeh import lens_value, read_meta

        keys = ("src_lens", "tgt_lens", "disparity")
        given = {key: cfg.get(key) for key in keys if cfg.get(key) is not None}
        meta_path = cfg.get("meta")
        if not given and meta_path is None:
            return None
        settings = cls(meta_path=None if meta_path is None else str(meta_path))
        if given:
            missing = [key for key in keys if key not in given]
            if missing:
                raise RestoreError(
                    f"bokeh lens settings need all of {', '.join(keys)}; missing: {', '.join(missing)}"
                )
            try:
                values = [lens_value(given[k], k) for k in keys[:2]] + [float(given["disparity"])]
            except (DataError, ValueError) as err:
                raise RestoreError(str(err)) from None
            settings.folder = torch.tensor(values, dtype=torch.float32)
        if meta_path is not None:
            try:
                settings.meta = read_meta(Path(meta_path))
            except DataError as err:
                raise RestoreError(str(err)) from None
        return settings

    def scalars_for(self, source: Path) -> torch.Tensor:
        if source.stem in self.meta:
            return torch.tensor(self.meta[source.stem], dtype=torch.float32)
        if self.folder is not None:
            return self.folder
        raise DataError(
            f"{source}: no line for id {source.stem!r} in {self.meta_path} and no src_lens/tgt_lens/disparity"
        )


# ---- folders ----------------------------------------------------------------------------------------------------
def list_inputs(source: Path) -> tuple[list[Path], Path]:
    """Image files under ``source`` (a file or a folder, recursively) and the folder outputs mirror."""
    if source.is_file():
        return [source], source.parent
    if not source.is_dir():
        raise RestoreError(f"input={source}: no such file or folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    files = [p for p in files if not p.name.startswith(".")]  # temporary files of interrupted writes
    if not files:
        raise RestoreError(f"input={source}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files, source


def output_for(source: Path, root: Path, out_dir: Path, fmt: str | None) -> Path:
    relative = source.relative_to(root)
    suffix = f".{fmt.lstrip('.').lower()}" if fmt else source.suffix
    return (out_dir / relative).with_suffix(suffix)


@dataclass
class Summary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_gib: float = 0.0
    peak_gpu_gib: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> Iterator[str]:
        yield (
            f"restored {len(self.written)}, skipped {len(self.skipped)} existing, failed {len(self.failed)} "
            f"in {self.seconds:.1f} s; peak memory {self.peak_rss_gib:.2f} GiB"
            + ("" if self.peak_gpu_gib is None else f" (GPU {self.peak_gpu_gib:.2f} GiB)")
        )
        for name, reason in self.failed.items():
            yield f"  FAILED {name}: {reason}"


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)


def parse_devices(value: Any) -> list[str]:
    """``devices``: null (use ``device``), N (the first N GPUs), "all" (every GPU) or a list of device names."""
    if value is None:
        return []
    if isinstance(value, str) and value != "all":
        value = [value]
    if value == "all" or isinstance(value, int):
        available = torch.cuda.device_count()
        count = available if value == "all" else int(value)
        if count < 1 or count > available:
            raise RestoreError(f"devices={value!r} asks for {count} GPU(s), but {available} are available")
        return [f"cuda:{index}" for index in range(count)]
    names = [str(name) for name in value]
    for name in names:
        pick_device(name)  # fail early on a device that does not exist here
    return names


def restore(cfg: DictConfig) -> Summary:
    """Restore ``cfg.input`` (file or folder) into ``cfg.output``; per-file failures are collected, not raised.

    With several ``devices`` the images are split round-robin over one process per device; each image is
    sampled with the same seed wherever it runs, so the outputs do not depend on the split.
    """
    if not cfg.get("ckpt") or not cfg.get("input") or not cfg.get("output"):
        raise RestoreError("ckpt=PATH, input=FILE_OR_DIR and output=DIR are all required")
    devices = parse_devices(cfg.get("devices"))
    files, root = list_inputs(Path(cfg.input))
    if len(devices) > 1 and len(files) > 1:
        return restore_on_devices(cfg, devices, files, root)
    return restore_files(cfg, devices[0] if devices else str(cfg.device), files, root)


def restore_on_devices(cfg: DictConfig, devices: list[str], files: list[Path], root: Path) -> Summary:
    """One worker process per device (spawned, so CUDA starts cleanly in each), then one merged summary."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    groups = shard_groups(files)  # a stereo pair's views stay in one worker
    shards = [
        (device, [str(f) for group in groups[index :: len(devices)] for f in group])
        for index, device in enumerate(devices)
    ]
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(shards), mp_context=context) as pool:
        futures = [
            pool.submit(_restore_shard, plain, device, shard, str(root)) for device, shard in shards if shard
        ]
        parts = [future.result() for future in futures]
    merged = Summary(seconds=time.perf_counter() - start)
    for part in parts:
        merged.written += part.written
        merged.skipped += part.skipped
        merged.failed.update(part.failed)
        merged.peak_rss_gib = max(merged.peak_rss_gib, part.peak_rss_gib)
        if part.peak_gpu_gib is not None:
            merged.peak_gpu_gib = max(merged.peak_gpu_gib or 0.0, part.peak_gpu_gib)
    return merged


def _restore_shard(cfg: dict[str, Any], device: str, files: list[str], root: str) -> Summary:
    """Worker entry point (top level, so it pickles): restore ``files`` on ``device``."""
    return restore_files(OmegaConf.create(cfg), device, [Path(f) for f in files], Path(root))


def restore_files(cfg: DictConfig, device_name: str, files: list[Path], root: Path) -> Summary:
    """Load the model once on one device and restore ``files``."""
    device = pick_device(device_name)
    autocast(device, str(cfg.precision))  # validate before the (slow) model load
    parse_tile(cfg.tile), parse_memory(cfg.max_memory)  # validate before the (slow) model load
    lenses = LensSettings.from_config(cfg)  # checked before the (slow) model load
    inference = inference_settings(cfg)  # checked before the (slow) model load
    module = load_model(cfg.ckpt, cfg.sampler, cfg.sample_steps, device, cfg.get("spacing"))
    module.prepare_for_inference(device, inference)
    restorer = Restorer.from_config(cfg, module, device, progress=bool(cfg.progress))
    if restorer.needs_scalars and lenses is None:
        raise RestoreError(
            f"{cfg.ckpt} holds a bokeh network: pass the lens settings, src_lens=NAME tgt_lens=NAME disparity=X "
            "(e.g. src_lens=Sony50mmf16.0AS tgt_lens=Sony50mmf1.8BS disparity=20) or meta=PATH (lines: id, "
            "src_lens, tgt_lens, disparity)"
        )
    if lenses is not None and not restorer.needs_scalars:
        raise RestoreError("src_lens, tgt_lens, disparity and meta apply to bokeh checkpoints only")
    return run_folder(restorer, files, root, Path(cfg.output), cfg.get("format"), bool(cfg.overwrite), lenses)


def run_folder(
    restorer: Restorer,
    files: list[Path],
    root: Path,
    out_dir: Path,
    fmt: str | None,
    overwrite: bool,
    lenses: LensSettings | None = None,
    max_pixels: int | None = None,
) -> Summary:
    """Restore every input (stereo checkpoints: every left/right pair) into ``out_dir``; failures are kept.

    The CLI and the web demo (``refusion_pl.app``) both restore through here.
    """
    summary = Summary()
    start = time.perf_counter()
    samples: list[list[Path]] = [[file] for file in files]
    if restorer.views > 1:
        samples, failures = stereo_samples(files)
        for file, reason in failures.items():
            summary.failed[str(file.relative_to(root))] = reason
            tqdm.write(f"skipping {file}: {reason}", file=sys.stderr)
    bar = tqdm(samples, desc="images", unit="img", disable=not restorer.progress or len(samples) < 2)
    for sources in bar:
        targets = [output_for(source, root, out_dir, fmt) for source in sources]
        name = " + ".join(str(source.relative_to(root)) for source in sources)
        if all(target.exists() for target in targets) and not overwrite:
            summary.skipped.append(name)
            continue
        try:
            scalars = lenses.scalars_for(sources[0]) if lenses is not None else None
            seconds = restore_views(restorer, sources, targets, scalars, max_pixels)
        except DataError as err:
            summary.failed[name] = str(err)
            tqdm.write(f"skipping {name}: {err}", file=sys.stderr)
            continue
        summary.written.append(name)
        log.info("%s -> %s (%.1f s, tile=%s)", name, targets[0].parent, seconds, restorer.last_tile or "none")
    summary.seconds = time.perf_counter() - start
    summary.peak_rss_gib = peak_rss_gib()
    if restorer.device.type == "cuda":
        summary.peak_gpu_gib = torch.cuda.max_memory_allocated(restorer.device) / 1024**3
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="restore")
def main(cfg: DictConfig) -> None:
    try:
        summary = restore(cfg)
    except (RestoreError, DataError, OutputError) as err:  # OutputError: disk full, names the path
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for line in summary.lines():
        print(line)
    if not summary.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
