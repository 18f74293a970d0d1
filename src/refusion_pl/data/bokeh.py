"""Bokeh effect transformation data: lens names to the network's three scalars, the NTIRE 2023 layout
(``src/``, ``tgt/``, ``alpha/``, ``meta.txt``), and synthetic bokeh rendered from photographs and a depth map.

The bokeh network is conditioned on ``(source lens, target lens, disparity)``. As in the original, a lens name
such as ``Sony50mmf1.8BS`` becomes ``+10 * f`` for Sony and ``-10 * f`` for Canon (``18.0``; ``Canon50mmf1.4BS``:
``-14.0``), and the disparity is used as it is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from refusion_pl.data.datasets import Matched, Pair, name_seed, sample_generator
from refusion_pl.data.degradations import _blur, _plasma, _uniform
from refusion_pl.data.io import DataError

#: Sign of the f-number per lens maker, as the original encodes it.
BRAND_SIGNS = {"sony": 1.0, "canon": -1.0}
LENS_PATTERN = re.compile(
    r"^(?P<brand>[A-Za-z]+?)(?P<focal>\d+(?:\.\d+)?)mm[fF](?P<f>\d+(?:\.\d+)?)(?P<tag>[A-Za-z]*)$"
)
META_NAME = "meta.txt"
#: Depth (disparity) map of the bundled stereo photograph; other bundled photos get a smooth synthetic one.
BUNDLED_DEPTH = {"motorcycle_left": "motorcycle_disp.npz"}

Scalars = tuple[float, float, float]


def lens_scalar(name: str) -> float:
    """The network's number for a lens name: ``+10 f`` (Sony) or ``-10 f`` (Canon)."""
    match = LENS_PATTERN.match(str(name).strip())
    if match is None or match["brand"].lower() not in BRAND_SIGNS:
        raise DataError(
            f"unknown lens name {name!r}: expected <Sony|Canon><focal length>mmf<f-number>[tag], "
            "e.g. Sony50mmf1.8BS or Canon50mmf1.4BS"
        )
    return BRAND_SIGNS[match["brand"].lower()] * float(match["f"]) * 10.0


def lens_value(value: Any, key: str) -> float:
    """A lens given by name (parsed) or already as the network's number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return lens_scalar(str(value))
    except DataError as err:
        raise DataError(f"{key}: {err}") from None


def read_meta(path: Path) -> dict[str, Scalars]:
    """``meta.txt`` lines ``id, src_lens, tgt_lens, disparity`` -> scalars per image id (the file stem)."""
    if not path.is_file():
        raise DataError(f"bokeh meta file not found: {path} (lines: id, src_lens, tgt_lens, disparity)")
    out: dict[str, Scalars] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in line.split(",")]
        where = f"{path}:{number}"
        if len(fields) != 4:
            raise DataError(f"{where}: expected 'id, src_lens, tgt_lens, disparity', got {line.strip()!r}")
        image_id, src, tgt, disparity = fields
        try:
            scalars = (lens_scalar(src), lens_scalar(tgt), float(disparity))
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        except ValueError:
            raise DataError(f"{where}: disparity {disparity!r} is not a number") from None
        out[Path(image_id).stem] = scalars
    return out


def bokeh_matched(found: Matched, meta: Path) -> Matched:
    """Attach each pair's lens scalars from ``meta``; an image without a meta line is an error naming both."""
    table = read_meta(meta)
    pairs = []
    for pair in found.pairs:
        key = Path(pair.name).name
        if key not in table:
            raise DataError(
                f"{pair.lq}: no line for id {key!r} in {meta} (id, src_lens, tgt_lens, disparity)"
            )
        pairs.append(Pair(pair.name, pair.gt, pair.lq, scalars=table[key]))
    return Matched(pairs, found.lq_only, found.gt_only, found.lq_dir, found.gt_dir)


def bokeh_orphan_message(found: Matched) -> str:
    """Missing targets (and targets without a source) named as the bokeh layout calls them."""
    parts = []
    if found.lq_only:
        parts.append(f"source image(s) without a target in {found.gt_dir}: {', '.join(found.lq_only[:10])}")
    if found.gt_only:
        parts.append(f"target image(s) without a source in {found.lq_dir}: {', '.join(found.gt_only[:10])}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ synthetic bokeh


def load_depth(path: str | None, name: str, height: int, width: int) -> Tensor:
    """A ``[1, H, W]`` map in [0, 1], 1 = nearest: a stored disparity map, else a smooth synthetic one.

    The synthetic map is a bottom-is-near ramp mixed with a plasma fractal, fixed by the image name, so each
    bundled photo has one depth map on every run.
    """
    if path is not None:
        disparity = np.load(path)
        values = disparity[disparity.files[0]] if hasattr(disparity, "files") else disparity
        values = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(values)
        low, high = float(values[finite].min()), float(values[finite].max())
        values = np.where(finite, values, high)
        depth = torch.from_numpy((values - low) / max(high - low, 1e-6))[None]
        if tuple(depth.shape[-2:]) != (height, width):
            raise DataError(f"depth map {path} is {tuple(depth.shape[-2:])}, its photo {(height, width)}")
        return depth
    g = sample_generator(name_seed(name), 0xDE9)
    ramp = torch.linspace(0.0, 1.0, height)[:, None].expand(height, width)
    plasma = _plasma(height, width, 0.45, g)[0, 0]
    return (0.6 * ramp + 0.4 * plasma)[None].clamp(0.0, 1.0)


class BokehRenderer:
    """Depth-dependent blur of a sharp photo as a lens of f-number ``f`` would render it.

    The blur radius of a pixel is ``disparity * |depth - focus| * reference_f / f`` pixels: a lens at the
    reference f-number blurs the farthest-from-focus pixels by ``disparity``, a stopped-down lens (f/16) barely
    at all. A source and a target are rendered from the same photo, depth and focus with two lenses drawn from
    ``lenses``, so the three scalars describe exactly how the pair was made.
    """

    defaults: Mapping[str, Any] = {
        "lenses": ["Sony50mmf16.0AS", "Sony50mmf1.8BS", "Canon50mmf1.4BS", "Canon50mmf2.8BS"],
        "disparity": [6.0, 16.0],
        "focus": [0.5, 0.95],
        "reference_f": 1.8,
        "levels": 6,
    }

    def __init__(self, **params: Any) -> None:
        params.pop("name", None)
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise DataError(
                f"degradation bokeh: unknown parameter(s) {unknown}; allowed: {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **params}
        self.lenses: list[str] = [str(lens) for lens in merged["lenses"]]
        if not self.lenses:
            raise DataError("degradation bokeh: lenses must name at least one lens")
        self.lens_values = [lens_value(lens, "degradation bokeh: lenses") for lens in self.lenses]
        self.disparity = _range("disparity", merged["disparity"], 0.0)
        self.focus = _range("focus", merged["focus"], 0.0, 1.0)
        self.reference_f = float(merged["reference_f"])
        self.levels = int(merged["levels"])
        if self.levels < 2 or self.reference_f <= 0:
            raise DataError("degradation bokeh: levels must be >= 2 and reference_f > 0")

    def draw(self, g: torch.Generator) -> tuple[Scalars, float]:
        """Random (source lens, target lens, disparity) scalars and a focus quantile (different lenses)."""
        src = int(torch.randint(len(self.lenses), (), generator=g))
        tgt = int(torch.randint(len(self.lenses), (), generator=g))
        if len(self.lenses) > 1 and tgt == src:
            tgt = (tgt + 1 + int(torch.randint(len(self.lenses) - 1, (), generator=g))) % len(self.lenses)
        disparity = _uniform(g, self.disparity)
        focus = _uniform(g, self.focus)
        return (self.lens_values[src], self.lens_values[tgt], disparity), focus

    def render(
        self, image: Tensor, depth: Tensor, lens: float, disparity: float, focus_depth: float
    ) -> Tensor:
        """``image`` ``[C, H, W]`` as seen through ``lens`` (the network's number: only ``|lens| / 10`` = f)
        focused at ``focus_depth``."""
        f_number = max(abs(lens) / 10.0, 1e-3)
        radius = disparity * (depth - focus_depth).abs() * self.reference_f / f_number  # [1, H, W]
        largest = float(radius.max())
        if largest < 0.5:
            return image.clone()
        # Blur at a few radii and interpolate per pixel between the two nearest (a layered lens blur).
        radii = torch.linspace(0.0, largest, self.levels)
        position = (radius / largest * (self.levels - 1)).clamp(0, self.levels - 1)
        out = torch.zeros_like(image)
        for level, r in enumerate(radii.tolist()):
            weight = (1.0 - (position - level).abs()).clamp(min=0.0)
            if float(weight.max()) == 0.0:
                continue
            blurred = _blur(image[None], r / 2.0)[0] if r > 0 else image
            out += weight * blurred
        return out.clamp(0.0, 1.0)

    def pair(
        self, image: Tensor, depth: Tensor, g: torch.Generator, whole_depth: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(source, target, scalars ``[3]``) rendered from a sharp ``image`` and its ``depth``.

        The focus is a quantile of ``whole_depth`` (the whole photo's map when ``image`` is a crop), so a crop
        far from the focused subject is blurred as it is in the whole photo.
        """
        (src, tgt, disparity), focus = self.draw(g)
        focus_depth = float(torch.quantile((depth if whole_depth is None else whole_depth).flatten(), focus))
        source = self.render(image, depth, src, disparity, focus_depth)
        target = self.render(image, depth, tgt, disparity, focus_depth)
        return source, target, torch.tensor([src, tgt, disparity], dtype=torch.float32)


def _range(key: str, value: Any, low: float, high: float = math.inf) -> tuple[float, float]:
    values = [float(v) for v in value] if isinstance(value, Sequence) else [float(value)] * 2
    if len(values) != 2 or not low <= values[0] <= values[1] <= high:
        raise DataError(
            f"degradation bokeh: {key}={value!r} must be a number or [low, high] within [{low}, {high}]"
        )
    return values[0], values[1]
