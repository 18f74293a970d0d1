"""Finding LQ/GT pairs on disk (dataset layouts, bundled photos) and the torch Datasets built on them.

Pairing is by file stem (relative path without suffix), so ``LQ/x.jpg`` pairs with ``GT/x.png`` and nested
folders pair folder by folder. Every random choice of a sample comes from a generator derived from
``(seed, epoch, index)``, so crops and degradations are the same on every run, machine and worker count.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

if TYPE_CHECKING:
    from refusion_pl.data.bokeh import BokehRenderer

from refusion_pl.data.degradations import Degradation, _uniform, with_dark_objects
from refusion_pl.data.io import IMAGE_EXTENSIONS, DataError, read_image
from refusion_pl.models.nafnet import PEAK_POOL, photo_statistics, photo_stats_kind

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ pairs


@dataclass(frozen=True)
class Pair:
    """One sample: ``gt`` always (except LQ-only prediction), ``lq`` only for real paired data.

    Stereo samples name the left views (the right ones are found by name). ``region`` keeps only a band of
    rows (fractions of the height: a held-out part of one photo), ``scalars`` are a bokeh pair's lens numbers
    and ``depth`` the depth map that synthetic bokeh is rendered with (None: a smooth synthetic one).
    """

    name: str
    gt: str | None
    lq: str | None = None
    region: tuple[float, float] | None = None
    scalars: tuple[float, float, float] | None = None
    depth: str | None = None


@dataclass(frozen=True)
class Matched:
    pairs: list[Pair]
    lq_only: list[str]  # names of LQ files without a GT partner
    gt_only: list[str]
    lq_dir: str
    gt_dir: str


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), hidden files and folders (``.x``, ``._x``) skipped."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if p.is_file():
            out.append(p)
    return sorted(out)


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        parent = folder.parent
        seen = sorted(p.name for p in parent.iterdir())[:10] if parent.is_dir() else []
        hint = f" ({parent} holds: {', '.join(seen) or 'nothing'})" if parent.is_dir() else ""
        raise DataError(f"{what} folder not found: {folder}{hint}")


def _stem_key(pattern: re.Pattern[str] | None) -> Callable[[str], str]:
    def key(stem: str) -> str:
        m = pattern.search(stem) if pattern else None
        if not m:
            return stem
        if "key" in m.groupdict():
            return m.group("key")
        return m.group(1) if m.groups() else m.group(0)

    return key


def _keyed(files: Sequence[Path], base: Path, key: Callable[[str], str], nested: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        rel = f.relative_to(base)
        k = key(f.stem)
        k = (rel.parent / k).as_posix() if nested else k
        if k in out:
            raise DataError(f"two files in {base} pair under the same name {k!r}: {out[k].name} and {f.name}")
        out[k] = f
    return out


def match_files(
    lq_files: Sequence[Path],
    gt_files: Sequence[Path],
    lq_base: Path,
    gt_base: Path,
    lq_key: Callable[[str], str],
    gt_key: Callable[[str], str],
) -> Matched:
    """Pair by relative path + stem key; when that leaves files unpaired, also try the stem alone (folders
    may differ) and stems without the affix every name of one side shares (``0001x4`` / ``0001``)."""
    best: tuple[dict[str, Path], dict[str, Path]] | None = None
    for nested, affixes in ((True, False), (True, True), (False, False), (False, True)):
        try:
            lq = _keyed(lq_files, lq_base, _affix_free(lq_files, lq_key) if affixes else lq_key, nested)
            gt = _keyed(gt_files, gt_base, _affix_free(gt_files, gt_key) if affixes else gt_key, nested)
        except DataError:
            if best is None:  # duplicate names in the plain pairing are a real error
                raise
            continue
        n = len(lq.keys() & gt.keys())
        if best is None or n > len(best[0].keys() & best[1].keys()):
            best = (lq, gt)
        if n == max(len(lq), len(gt)):
            break
    assert best is not None
    lq, gt = best
    pairs = [Pair(k, str(gt[k]), str(lq[k])) for k in sorted(lq.keys() & gt.keys())]
    return Matched(
        pairs, sorted(lq.keys() - gt.keys()), sorted(gt.keys() - lq.keys()), str(lq_base), str(gt_base)
    )


def _common_prefix(words: Sequence[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _affix_free(files: Sequence[Path], key: Callable[[str], str]) -> Callable[[str], str]:
    """Key without the prefix/suffix shared by all names of a side (digits are never stripped)."""
    stems = [key(f.stem) for f in files]
    if len(stems) < 2:
        return key
    prefix = _common_prefix(stems).rstrip("0123456789")
    suffix = _common_prefix([s[::-1] for s in stems])[::-1].lstrip("0123456789")

    def stripped(stem: str) -> str:
        k = key(stem)
        core = k[len(prefix) : len(k) - len(suffix)] if len(k) > len(prefix) + len(suffix) else k
        return core or k

    return stripped


def pair_folders(lq_dir: Path, gt_dir: Path, stem_pattern: str | None = None) -> Matched:
    """Pair the images of two folders by stem (``stem_pattern``: a regex whose group 1 / ``key`` is the key)."""
    _require_dir(lq_dir, "LQ")
    _require_dir(gt_dir, "GT")
    key = _stem_key(_compile(stem_pattern))
    return match_files(list_images(lq_dir), list_images(gt_dir), lq_dir, gt_dir, key, key)


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DataError(f"data.stem_pattern {pattern!r} is not a valid regular expression: {exc}") from None


def pair_rain100(folder: Path, stem_pattern: str | None = None) -> Matched:
    """Rain100H/L: ``rain-<id>`` (LQ) with ``norain-<id>`` (GT), anywhere under ``folder``."""
    _require_dir(folder, "rain100")
    files = list_images(folder)
    lq_re, gt_re = re.compile(r"^rain[-_](.+)$", re.I), re.compile(r"^norain[-_](.+)$", re.I)
    lq = [f for f in files if lq_re.match(f.stem)]
    gt = [f for f in files if gt_re.match(f.stem)]
    if not lq and not gt:
        raise DataError(f"no rain-*/norain-* images under {folder} (rain100 layout)")
    inner = _stem_key(_compile(stem_pattern))

    def key_for(rx: re.Pattern[str]) -> Callable[[str], str]:
        return lambda stem: inner(m.group(1)) if (m := rx.match(stem)) else stem

    return match_files(lq, gt, folder, folder, key_for(lq_re), key_for(gt_re))


def pair_gopro(folder: Path, lq_name: str, gt_name: str, stem_pattern: str | None = None) -> Matched:
    """GoPro: every ``<scene>/blur`` folder under ``folder`` with its sibling ``<scene>/sharp``."""
    _require_dir(folder, "gopro")
    scenes = sorted(p for p in folder.rglob(lq_name) if p.is_dir() and not p.name.startswith("."))
    if folder.name == lq_name:
        scenes.insert(0, folder)
    if not scenes:
        raise DataError(
            f"no '{lq_name}' folders under {folder} (gopro layout: <scene>/{lq_name}, <scene>/{gt_name})"
        )
    pairs, lq_only, gt_only = [], [], []
    key = _stem_key(_compile(stem_pattern))
    for blur in scenes:
        sharp = blur.parent / gt_name
        _require_dir(sharp, f"GT ('{gt_name}' beside {blur})")
        m = match_files(list_images(blur), list_images(sharp), blur, sharp, key, key)
        prefix = blur.parent.relative_to(folder).as_posix() if blur.parent != folder else ""
        scoped = lambda n, p=prefix: f"{p}/{n}" if p else n  # noqa: E731
        pairs += [Pair(scoped(p.name), p.gt, p.lq) for p in m.pairs]
        lq_only += [scoped(n) for n in m.lq_only]
        gt_only += [scoped(n) for n in m.gt_only]
    return Matched(pairs, lq_only, gt_only, str(folder), str(folder))


def clean_images(folder: Path) -> list[Pair]:
    """Clean-only data (DIV2K, Flickr2K, your photos): GT images, LQ synthesised on the fly."""
    _require_dir(folder, "image")
    files = list_images(folder)
    return [Pair(f.relative_to(folder).with_suffix("").as_posix(), str(f)) for f in files]


def orphan_message(m: Matched) -> str:
    """The unmatched-files error: counts and up to 10 names each way."""

    def names(items: list[str]) -> str:
        more = f", ... ({len(items) - 10} more)" if len(items) > 10 else ""
        return ", ".join(items[:10]) + more

    parts = []
    if m.lq_only:
        parts.append(
            f"{len(m.lq_only)} LQ file(s) in {m.lq_dir} have no GT partner in {m.gt_dir}: {names(m.lq_only)}"
        )
    if m.gt_only:
        parts.append(
            f"{len(m.gt_only)} GT file(s) in {m.gt_dir} have no LQ partner in {m.lq_dir}: {names(m.gt_only)}"
        )
    parts.append(f"{len(m.pairs)} pairs matched by file stem (set data.stem_pattern to map names)")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ bundled photos

#: scikit-image's bundled colour photographs: whole images are held out (never crops of training images).
BUNDLED_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "immunohistochemistry": "ihc.png",
}
BUNDLED_SPLITS = {
    "train": ("astronaut", "coffee", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina"),
    "val": ("chelsea", "rocket", "immunohistochemistry"),
    "test": ("chelsea", "rocket", "immunohistochemistry"),
}


def bundled_pairs(split: str) -> list[Pair]:
    """The bundled photos of one split, read from scikit-image's data folder (no download)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    pairs = []
    for name in BUNDLED_SPLITS[split]:
        path = folder / BUNDLED_FILES[name]
        if not path.is_file():
            raise DataError(
                f"scikit-image's bundled photo {name!r} is missing ({path}); reinstall scikit-image"
            )
        pairs.append(Pair(name, str(path)))
    return pairs


def holdout(pairs: list[Pair], amount: float) -> tuple[list[Pair], list[Pair]]:
    """Split off whole images, evenly spaced in name order (stable across seeds and machines)."""
    n = len(pairs)
    if n < 2:
        log.warning(
            "only %d image(s): validating on the training image(s); add a val split to hold data out", n
        )
        return pairs, list(pairs)
    k = round(amount * n) if amount < 1 else int(amount)
    k = min(max(k, 1), n - 1)
    picked = {min(n - 1, int((i + 0.5) * n / k)) for i in range(k)}
    return [p for i, p in enumerate(pairs) if i not in picked], [
        p for i, p in enumerate(pairs) if i in picked
    ]


# ------------------------------------------------------------------------------------------ tensors


def sample_generator(*keys: int) -> torch.Generator:
    """A generator seeded from several integers (seed, epoch, index...), identical on every machine."""
    words = [int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def name_seed(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def reflect_pad(x: Tensor, height: int, width: int) -> Tensor:
    """Pad bottom/right up to at least ``height`` x ``width`` by mirroring (repeatedly for tiny images)."""
    while x.shape[-2] < height or x.shape[-1] < width:
        h, w = x.shape[-2:]
        ph, pw = min(max(height - h, 0), h - 1), min(max(width - w, 0), w - 1)
        if ph == 0 and pw == 0:  # 1-pixel side: nothing to mirror
            return F.pad(x[None], (0, max(width - w, 0), 0, max(height - h, 0)), mode="replicate")[0]
        x = F.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
    return x


def mod_crop(gt: Tensor, scale: int) -> Tensor:
    """Crop GT to a multiple of ``scale`` (standard for super-resolution)."""
    if scale == 1:
        return gt
    h, w = gt.shape[-2] // scale * scale, gt.shape[-1] // scale * scale
    return gt[..., :h, :w]


def aligned_crop(
    lq: Tensor | None, gt: Tensor, size: int, scale: int, g: torch.Generator, pad: bool
) -> tuple[Tensor | None, Tensor]:
    """Random GT crop of ``size`` and the LQ crop of ``size // scale`` at the same (scaled) coordinates."""
    small = size // scale
    h, w = lq.shape[-2:] if lq is not None else (gt.shape[-2] // scale, gt.shape[-1] // scale)
    if pad and (h < small or w < small):
        need_h, need_w = max(small - h, 0), max(small - w, 0)
        gt = reflect_pad(gt, (h + need_h) * scale, (w + need_w) * scale)
        lq = reflect_pad(lq, small, small) if lq is not None else None
        h, w = h + need_h, w + need_w
    if h < small or w < small:
        raise DataError(f"image {h * scale}x{w * scale} is smaller than crop_size {size} (pad_small is off)")
    top = int(torch.randint(0, h - small + 1, (), generator=g))
    left = int(torch.randint(0, w - small + 1, (), generator=g))
    gt_crop = gt[..., top * scale : (top + small) * scale, left * scale : (left + small) * scale]
    lq_crop = lq[..., top : top + small, left : left + small] if lq is not None else None
    return lq_crop, gt_crop


def centre_crop(lq: Tensor | None, gt: Tensor, size: int | None, scale: int) -> tuple[Tensor | None, Tensor]:
    """Deterministic centre crop (GT ``size``, LQ ``size // scale``), smaller images kept whole."""
    if size is None:
        return lq, gt
    h, w = gt.shape[-2] // scale, gt.shape[-1] // scale
    ch, cw = min(size // scale, h), min(size // scale, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    gt = gt[..., top * scale : (top + ch) * scale, left * scale : (left + cw) * scale]
    lq = lq[..., top : top + ch, left : left + cw] if lq is not None else None
    return lq, gt


def dihedral(tensors: list[Tensor], g: torch.Generator) -> list[Tensor]:
    """The same random flip + rot90 (one of 8 symmetries) for every tensor."""
    k = int(torch.randint(0, 4, (), generator=g))
    flip = bool(torch.rand((), generator=g) < 0.5)
    out = [torch.rot90(t, k, (-2, -1)) for t in tensors]
    return [(t.flip(-1) if flip else t).contiguous() for t in out]


def vertical_flip(tensors: list[Tensor], g: torch.Generator) -> list[Tensor]:
    """Stereo augmentation: the same random up-down flip for every tensor. Horizontal flips and rotations
    would swap the roles of the views (or break their shared rows), so there are none."""
    flip = bool(torch.rand((), generator=g) < 0.5)
    return [(t.flip(-2) if flip else t).contiguous() for t in tensors]


def _views_on_batch(image: Tensor, views: int) -> Tensor:
    """``[V*C, H, W]`` -> ``[V, C, H, W]``: each view degraded as an image of its own."""
    return image.reshape(views, -1, *image.shape[-2:])


def upsample(lq: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic upsampling of an LQ image to the GT size (the SDE mean for super-resolution)."""
    from kornia.geometry.transform import resize

    return resize(lq[None], size, interpolation="bicubic", align_corners=False)[0].clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------ datasets


def milder(lq: Tensor, gt: Tensor, severity: float) -> Tensor:
    """``lq`` moved toward ``gt``: ``severity`` 1 keeps the degradation, 0 removes it.

    Trained only on full-strength degradations, a model "restores" every input by that much, so a photo that
    needs little comes out worse than it went in (a bright photo through a low-light model). Blended pairs
    teach it that the amount to restore depends on the input (``data.mild_prob``). ``data.mild_severity`` bounds
    the amount: on low light a blend half-way to a full degradation looks like a dark photo that needs brightening.
    """
    return gt + severity * (lq - gt)


def random_window(image: Tensor, size: int, scale: int, g: torch.Generator) -> Tensor:
    """A random ``size`` x ``size`` window of ``image`` (each side capped at the image's, kept a multiple of
    ``scale``): where synthetic degradations are drawn with ``data.degrade_window``.

    Degradations size their shadows, streaks and masks relative to the image they are given. Drawn on a training
    crop they are crop-sized; on the whole photo a user restores they are several times larger. Drawing them on
    a photo-sized window first and cropping after keeps that scale the same in training and in use.
    """
    h, w = image.shape[-2:]
    win_h, win_w = (min(size, side) // scale * scale for side in (h, w))
    top = int(torch.randint(0, (h - win_h) // scale + 1, (), generator=g)) * scale
    left = int(torch.randint(0, (w - win_w) // scale + 1, (), generator=g)) * scale
    return image[..., top : top + win_h, left : left + win_w]


def darkened(
    gt: Tensor, g: torch.Generator, gain: Sequence[float], gamma: Sequence[float] = (1.0, 1.0)
) -> Tensor:
    """A clean crop as ``gain * gt ** gamma`` (each drawn from its range): a night sky or a dim room, before
    degrading it.

    Trained on well-lit photos only, a model takes any dark region for the degradation (a night sky "lifted" as
    a shadow) and destroys dark photos that need nothing (``data.dark_prob``; README, "Training the latent model").
    A gain alone darkens the highlights too; a gamma above 1 darkens the mid-tones and keeps them (a lit rocket
    on a night sky), so that dark photos with bright parts are among what needs nothing (``data.dark_gamma``).
    A ``gamma`` range of (1, 1) draws nothing for it, so gain-only runs keep their random streams.
    """
    scale = _uniform(g, tuple(gain))
    if tuple(gamma) == (1.0, 1.0):
        return gt * scale
    return scale * gt.clamp(0.0, 1.0) ** _uniform(g, tuple(gamma))


def recoloured(gt: Tensor, g: torch.Generator, saturation: Sequence[float] = (0.0, 1.5)) -> Tensor:
    """A clean RGB crop with its hues rotated by a random angle and its saturation scaled by a random factor in
    ``saturation`` (0: grey), before degrading it.

    A few bundled photos teach a shadow model that dark or bluish content is shadow (a black coat lifted to
    orange, a night sky lifted): recolouring shows it the same shapes in colours it never saw unshadowed
    (``data.recolour_prob``; README, "Other photos and sizes"). Other channel counts pass through.
    """
    if gt.shape[-3] != 3:
        return gt
    from kornia.enhance import adjust_hue, adjust_saturation

    angle = (2 * float(torch.rand((), generator=g)) - 1) * math.pi
    low, high = saturation
    factor = low + (high - low) * float(torch.rand((), generator=g))
    return adjust_saturation(adjust_hue(gt, angle), factor).clamp(0.0, 1.0)


class _Loader:
    """Reads a pair (optionally caching decoded images, for the small bundled set).

    With ``views=2`` every path names a left view and the right view is stacked after it on channels.
    """

    def __init__(self, channels: int, scale: int, cache: bool, views: int = 1) -> None:
        self.channels, self.scale, self.cache, self.views = channels, scale, cache, views
        self._cache: dict[str, Tensor] = {}

    def read(self, path: str) -> Tensor:
        if path in self._cache:
            return self._cache[path]
        img = read_image(path, self.channels)[0]
        if self.views == 2:
            from refusion_pl.data.stereo import right_view

            right = read_image(right_view(path), self.channels)[0]
            if right.shape != img.shape:
                raise DataError(
                    f"stereo views differ in size: {path} is {tuple(img.shape[-2:])}, "
                    f"{right_view(path)} is {tuple(right.shape[-2:])}"
                )
            img = torch.cat([img, right])
        if self.cache:
            self._cache[path] = img
        return img

    def pair(self, pair: Pair) -> tuple[Tensor | None, Tensor]:
        gt = self.read(pair.gt) if pair.gt else None
        lq = self.read(pair.lq) if pair.lq else None
        if gt is None:
            raise DataError(f"{pair.name}: no GT image")
        if pair.region is not None:
            gt, lq = _rows(gt, pair.region, self.scale), _rows(lq, pair.region, 1) if lq is not None else None
        if lq is not None:
            gt = gt[..., : lq.shape[-2] * self.scale, : lq.shape[-1] * self.scale]
        else:
            gt = mod_crop(gt, self.scale)
        return lq, gt


def _rows(image: Tensor, region: tuple[float, float], multiple: int) -> Tensor:
    """The band of rows ``region`` (fractions of the height), cut at a multiple of ``multiple`` pixels."""
    height = image.shape[-2] // multiple
    top, bottom = round(region[0] * height) * multiple, round(region[1] * height) * multiple
    return image[..., top:bottom, :]


class _PairDataset(Dataset):
    """Shared reading with ``skip_bad``: an unreadable pair is logged and replaced by the next readable one.

    ``views=2``: stereo samples (both views on channels). ``renderer``: synthetic bokeh, rendered from the GT
    photo and its depth map. Samples of pairs with lens scalars (and rendered ones) carry ``cond_scalars``.
    """

    def __init__(
        self,
        pairs: list[Pair],
        channels: int,
        scale: int,
        skip_bad: bool,
        cache: bool,
        views: int = 1,
        renderer: BokehRenderer | None = None,
    ) -> None:
        if not pairs:
            raise DataError("no image pairs to build a dataset from")
        self.pairs, self.scale, self.skip_bad = pairs, scale, skip_bad
        self.views, self.renderer = views, renderer
        self.loader = _Loader(channels, scale, cache, views)
        self._depths: dict[str, tuple[Tensor, Tensor]] = {}
        self._shrunk: dict[Pair, Tensor] | None = {} if cache else None  # photo_stats: shrunk clean photos

    def _depth(self, pair: Pair, gt: Tensor) -> tuple[Tensor, Tensor]:
        """The photo's depth map and a sorted sample of it (the focus quantile of the whole photo, cheaply)."""
        from refusion_pl.data.bokeh import load_depth

        if pair.name not in self._depths:
            depth = load_depth(pair.depth, pair.name, gt.shape[-2], gt.shape[-1])
            step = max(1, math.ceil(math.sqrt(depth.numel() / 65536)))
            self._depths[pair.name] = (depth, depth[..., ::step, ::step].flatten().sort().values)
        return self._depths[pair.name]

    def _render(
        self, pair: Pair, photo: Tensor, depth: Tensor, g: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Synthetic bokeh (source, target, scalars) of a crop of the photo and the same crop of its depth."""
        assert self.renderer is not None
        return self.renderer.pair(photo, depth, g, whole_depth=self._depths[pair.name][1])

    @staticmethod
    def _scalars(pair: Pair) -> dict[str, Tensor]:
        if pair.scalars is None:
            return {}
        return {"cond_scalars": torch.tensor(pair.scalars, dtype=torch.float32)}

    def _load(self, index: int) -> tuple[Pair, Tensor | None, Tensor]:
        for attempt in range(len(self.pairs)):
            pair = self.pairs[(index + attempt) % len(self.pairs)]
            try:
                lq, gt = self.loader.pair(pair)
                return pair, lq, gt
            except DataError as exc:
                if not self.skip_bad:
                    raise
                log.warning("skipping unreadable pair %s: %s", pair.name, exc)
        raise DataError("every image pair is unreadable")


class TrainDataset(_PairDataset):
    """Random aligned crops, flips/rot90, optional LQ/GT swap; ``length`` crops per epoch.

    Indices from :class:`EpochSampler` carry the epoch (``epoch * length + i``), so per-sample randomness
    follows ``(seed, epoch, i)`` whatever the number of workers or processes.
    """

    def __init__(
        self,
        pairs: list[Pair],
        *,
        length: int,
        crop_size: int,
        channels: int = 3,
        scale: int = 1,
        degradation: Degradation | None = None,
        augment: bool = True,
        swap_prob: float = 0.0,
        mild_prob: float = 0.0,
        clean_prob: float = 0.0,
        mild_severity: Sequence[float] = (0.0, 1.0),
        dark_prob: float = 0.0,
        dark_gain: Sequence[float] = (0.15, 0.6),
        dark_gamma: Sequence[float] = (1.0, 1.0),
        recolour_prob: float = 0.0,
        dark_object_prob: float = 0.0,
        degrade_window: int | None = None,
        photo_stats: bool | str = False,
        pad_small: bool = True,
        upsample_lq: bool = False,
        skip_bad: bool = False,
        seed: int = 0,
        cache: bool = False,
        views: int = 1,
        renderer: BokehRenderer | None = None,
    ) -> None:
        super().__init__(pairs, channels, scale, skip_bad, cache, views, renderer)
        try:
            self.photo_stats = photo_stats_kind(photo_stats)
        except ValueError as err:
            raise DataError(f"data.{err}") from None
        if photo_stats and (renderer is not None or any(pair.scalars is not None for pair in pairs)):
            raise DataError("data.photo_stats cannot be combined with per-image lens scalars (bokeh pairs)")
        self.length, self.crop_size, self.degradation = length, crop_size, degradation
        self.augment, self.swap_prob, self.pad_small = augment, swap_prob, pad_small
        self.upsample_lq, self.seed, self.mild_prob = upsample_lq, seed, mild_prob
        self.dark_prob, self.dark_gain, self.degrade_window = dark_prob, dark_gain, degrade_window
        self.recolour_prob, self.dark_gamma, self.mild_severity = recolour_prob, dark_gamma, mild_severity
        self.dark_object_prob, self.clean_prob = dark_object_prob, clean_prob

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        epoch, i = divmod(int(index), self.length)
        g = sample_generator(self.seed, epoch, i)
        pair, lq, gt = self._load(int(index) % len(self.pairs))  # cycles through every image over epochs
        extra = self._scalars(pair)
        if lq is None and self.renderer is not None:
            depth, photo = aligned_crop(self._depth(pair, gt)[0], gt, self.crop_size, 1, g, self.pad_small)
            lq, gt, extra["cond_scalars"] = self._render(pair, photo, depth, g)  # type: ignore[arg-type]
        shrunk = lq is None and self._shrunk_stats_match()
        if lq is None and (self.degrade_window or (self.photo_stats and not shrunk)):
            gt = random_window(gt, self.degrade_window or max(gt.shape[-2:]), self.scale, g)
            lq, gt = self._degrade(pair, gt, g)  # the crop below cuts through degradations at photo scale
        # photo_stats: the statistics of the whole photo (or window), LQ then GT
        stats = self._photo_stats(lq, gt, PEAK_POOL) if self.photo_stats and lq is not None else None
        whole = gt
        lq, gt = aligned_crop(lq, gt, self.crop_size, self.scale, g, self.pad_small)
        if lq is None:
            if shrunk:
                stats = self._shrunk_photo_stats(pair, whole, g)
            lq, gt = self._degrade(pair, gt, g)
        if self.augment:
            lq, gt = (vertical_flip if self.views == 2 else dihedral)([lq, gt], g)
        if self.upsample_lq and self.scale > 1:
            lq = upsample(lq, gt.shape[-2:])
        if self.mild_prob > 0 and float(torch.rand((), generator=g)) < self.mild_prob:
            severity = _uniform(g, tuple(self.mild_severity))
            lq = milder(lq, gt, severity)
            if stats is not None:  # a blend's statistics as the blend of the statistics (exact for means)
                stats = (milder(stats[0], stats[1], severity), stats[1])
        if self.clean_prob > 0 and float(torch.rand((), generator=g)) < self.clean_prob:
            lq = gt.clone()  # nothing to restore: a model that always finds a shadow lifts dark content
            if stats is not None:
                stats = (stats[1], stats[1])
        if self.swap_prob > 0 and float(torch.rand((), generator=g)) < self.swap_prob:
            lq, gt = gt, lq
            if "cond_scalars" in extra:  # the target's lens becomes the source's, and the reverse
                extra["cond_scalars"] = extra["cond_scalars"][[1, 0, 2]]
            if stats is not None:
                stats = (stats[1], stats[0])
        if stats is not None:
            extra["cond_scalars"] = stats[0]
        return {"lq": lq.contiguous(), "gt": gt.contiguous(), "name": pair.name, **extra}

    def _photo_stats(self, lq: Tensor, gt: Tensor, pool: int) -> tuple[Tensor, Tensor]:
        """What ``photo_stats`` networks are conditioned on (:func:`photo_statistics`), for LQ and GT."""
        return photo_statistics(lq, self.photo_stats, pool), photo_statistics(gt, self.photo_stats, pool)

    def _shrunk_stats_match(self) -> bool:
        """Whether photo statistics can come from a shrunk copy of the photo: one view, no dark objects (drawn
        per image size), and a degradation that draws its parameters first (``Degradation.scalars_first``); otherwise the whole photo is degraded and
        the crop cut from it (exact, and about 25x slower on the bundled photos)."""
        return (
            bool(self.photo_stats)
            and not self.degrade_window
            and not self.dark_object_prob
            and self.views == 1
            and getattr(self.degradation, "scalars_first", False)
        )

    def _shrunk_photo_stats(self, pair: Pair, whole: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """The statistics of the whole clean photo shrunk ``PEAK_POOL`` times and degraded with the draws its
        crop is about to get (from a copy of ``g``): a sixteenth of the cost of degrading the whole photo. Means
        survive the shrinking (to 1-2%: a gamma taken after averaging); LQ peaks come out higher under sensor
        noise, which the shrunk photo does not average over blocks as the whole one does (1.14-1.20x at the
        low-light task's strongest noise, 1.00-1.04x at a mild one's; a window at full size around the brightest
        block misses the whole photo's noise maximum instead)."""
        factor = PEAK_POOL if min(whole.shape[-2:]) >= 2 * PEAK_POOL * self.scale else 1
        small = self._shrunk.get(pair) if self._shrunk is not None else None
        if small is None:
            small = F.avg_pool2d(whole[None], factor)[0] if factor > 1 else whole
            h, w = (side // self.scale * self.scale for side in small.shape[-2:])
            small = small[..., :h, :w]
            if self._shrunk is not None:
                self._shrunk[pair] = small
        lq, gt = self._degrade(pair, small, torch.Generator().set_state(g.get_state()))
        return self._photo_stats(lq, gt, PEAK_POOL if factor == 1 else 1)

    def _degrade(self, pair: Pair, gt: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(lq, gt)`` from a clean image: recoloured with ``recolour_prob``, darkened with ``dark_prob`` and
        given dark objects with ``dark_object_prob`` first, then the task's degradation."""
        if self.degradation is None:
            raise DataError(f"{pair.name}: clean-only data needs a degradation (task.degradation)")
        if self.recolour_prob > 0 and float(torch.rand((), generator=g)) < self.recolour_prob:
            gt = recoloured(gt, g)
        if self.dark_prob > 0 and float(torch.rand((), generator=g)) < self.dark_prob:
            gt = darkened(gt, g, self.dark_gain, self.dark_gamma)
        if self.dark_object_prob > 0 and float(torch.rand((), generator=g)) < self.dark_object_prob:
            gt = with_dark_objects(gt, g)
        lq = self.degradation(_views_on_batch(gt, self.views), g)
        return (torch.cat(list(lq)) if self.views == 2 else lq[0]), gt


class EvalDataset(_PairDataset):
    """Whole images (or a deterministic centre crop); synthetic LQ fixed by ``seed`` and the image name."""

    def __init__(
        self,
        pairs: list[Pair],
        *,
        channels: int = 3,
        scale: int = 1,
        degradation: Degradation | None = None,
        crop: int | None = None,
        upsample_lq: bool = False,
        lq_only: bool = False,
        skip_bad: bool = False,
        seed: int = 0,
        cache: bool = False,
        views: int = 1,
        renderer: BokehRenderer | None = None,
    ) -> None:
        super().__init__(pairs, channels, scale, skip_bad, cache, views, renderer)
        self.degradation, self.crop, self.upsample_lq = degradation, crop, upsample_lq
        self.lq_only, self.seed = lq_only, seed
        self._samples: dict[int, dict[str, Tensor | str]] = {}
        self.cache = cache

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        if index in self._samples:
            return self._samples[index]
        sample = self._make(index)
        if self.cache:
            self._samples[index] = sample
        return sample

    def _make(self, index: int) -> dict[str, Tensor | str]:
        if self.lq_only and self.pairs[index].gt is None:
            pair = self.pairs[index]
            return {"lq": self.loader.read(pair.lq), "name": pair.name, **self._scalars(pair)}  # type: ignore[arg-type]
        pair, lq, gt = self._load(index)
        extra = self._scalars(pair)
        g = sample_generator(self.seed, name_seed(pair.name))
        if lq is None and self.renderer is not None:
            depth, photo = centre_crop(self._depth(pair, gt)[0], gt, self.crop, 1)
            lq, gt, extra["cond_scalars"] = self._render(pair, photo, depth, g)  # type: ignore[arg-type]
        lq, gt = centre_crop(lq, gt, self.crop, self.scale)
        if lq is None:
            if self.degradation is None:
                raise DataError(f"{pair.name}: clean-only data needs a degradation (task.degradation)")
            lq = self.degradation(_views_on_batch(gt, self.views), g)
            lq = torch.cat(list(lq)) if self.views == 2 else lq[0]
        if self.upsample_lq and self.scale > 1:
            lq = upsample(lq, gt.shape[-2:])
        if self.lq_only:
            return {"lq": lq.contiguous(), "name": pair.name, **extra}
        return {"lq": lq.contiguous(), "gt": gt.contiguous(), "name": pair.name, **extra}


class EpochSampler(Sampler[int]):
    """Shuffles ``range(n)`` per epoch and yields ``epoch * n + i`` so the dataset knows the epoch.

    Lightning calls :meth:`set_epoch`; without it (or under a distributed wrapper) the epoch advances on
    every pass. :meth:`resume_at` drops the samples an interrupted run already trained on, so a resumed run
    continues the same order where it stopped (the length stays ``n``, as the trainer's step counters expect).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already consumed in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` samples of ``epoch`` (once: later epochs are whole)."""
        self._resume = (int(epoch), int(consumed)) if consumed > 0 else None

    def __len__(self) -> int:
        return self.n

    def order(self, epoch: int) -> list[int]:
        """The dataset indices of ``epoch``, in sampling order."""
        order = torch.arange(self.n)
        if self.shuffle:
            order = torch.randperm(self.n, generator=sample_generator(self.seed, epoch, 0x5EED))
        return (epoch * self.n + order).tolist()

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch
        self.epoch += 1
        indices = self.order(epoch)
        if self._resume is not None and self._resume[0] == epoch:
            indices = indices[self._resume[1] :]
            self._resume = None
        return iter(indices)
