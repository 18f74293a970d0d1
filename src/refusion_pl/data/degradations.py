"""Synthetic degradations, one per task, built from kornia ops.

Each is a callable ``(gt [B,C,H,W] in [0,1], generator) -> lq`` whose randomness comes only from ``generator``,
so a seed fixes a pair on every machine (validation pairs) while training draws fresh parameters per sample.
Range parameters take a number or ``[low, high]`` and are sampled uniformly per image.
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import kornia
import numpy as np
import torch
from kornia.contrib import diamond_square
from PIL import Image
from torch import Tensor

from refusion_pl.data.io import DataError

Range = tuple[float, float]
_image_ops = getattr(kornia, "image", None)
_draw_convex_polygon = getattr(_image_ops, "draw_convex_polygon", None) or kornia.utils.draw_convex_polygon


# ------------------------------------------------------------------------------------------ parameters


class _Spec:
    """How one parameter is validated: a (low, high) range, a number, a flag or a choice."""

    def __init__(self, kind: str, low: float | None = None, high: float | None = None, choices: tuple = ()):
        self.kind, self.low, self.high, self.choices = kind, low, high, choices

    def parse(self, deg: str, key: str, value: Any) -> Any:
        if self.kind == "choice":
            if value not in self.choices:
                raise DataError(f"degradation {deg}: {key}={value!r} is not one of {list(self.choices)}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise DataError(f"degradation {deg}: {key} must be true or false, got {value!r}")
            return value
        if self.kind in ("range", "int_range"):
            pair = self._pair(deg, key, value)
            return tuple(self._number(deg, key, v) for v in pair)
        return self._number(deg, key, value)

    def _pair(self, deg: str, key: str, value: Any) -> tuple[Any, Any]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value, value
        try:
            low, high = value
        except (TypeError, ValueError):
            raise DataError(
                f"degradation {deg}: {key} must be a number or [low, high], got {value!r}"
            ) from None
        if not low <= high:
            raise DataError(f"degradation {deg}: {key}=[{low}, {high}] has low > high")
        return low, high

    def _number(self, deg: str, key: str, value: Any) -> float | int:
        integer = self.kind in ("int", "int_range")
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or not math.isfinite(value):
            what = "an integer" if integer else "a number"
            raise DataError(f"degradation {deg}: {key} must be {what}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise DataError(f"degradation {deg}: {key}={value} is outside [{self.low}, {self.high}]")
        return int(value) if integer else float(value)


def _uniform(g: torch.Generator, r: Range) -> float:
    return r[0] + (r[1] - r[0]) * torch.rand((), generator=g).item()


def _randint(g: torch.Generator, r: tuple[int, int]) -> int:
    return int(torch.randint(int(r[0]), int(r[1]) + 1, (), generator=g).item())


def _rand_fn(g: torch.Generator) -> Callable[..., Tensor]:
    """A ``torch.rand`` stand-in for kornia's plasma generator that draws from our generator."""

    def rand(shape: Any, device: Any = None, dtype: Any = None) -> Tensor:
        return torch.rand(tuple(shape), generator=g, dtype=dtype or torch.float32)

    return rand


def _plasma(h: int, w: int, roughness: float, g: torch.Generator, max_side: int = 257) -> Tensor:
    """Plasma fractal; made at most ``max_side`` wide and upsampled (it is smooth; big images stay fast)."""
    f = max(1.0, max(h, w) / max_side)
    sh, sw = max(2, round(h / f)), max(2, round(w / f))
    out = diamond_square(
        (1, 1, sh, sw), roughness=roughness, random_fn=_rand_fn(g), normalize_range=(0.0, 1.0)
    )
    return out if (sh, sw) == (h, w) else _resize(out, h, w)


def _resize(x: Tensor, h: int, w: int) -> Tensor:
    return kornia.geometry.transform.resize(x, (h, w), interpolation="bilinear", align_corners=False)


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur whose kernel stays valid for reflect padding on small images."""
    if sigma <= 0:
        return x
    if sigma > 2:  # wide blurs of smooth masks: blur a downscaled copy (same look, far cheaper)
        f = int(sigma)
        h, w = x.shape[-2:]
        small = kornia.geometry.transform.resize(x, (max(1, h // f), max(1, w // f)), antialias=True)
        return _resize(_blur(small, sigma / f), h, w)
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * min(x.shape[-2:]) - 1)
    k = k if k % 2 else k - 1
    if k < 3:
        return x
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def _noise(x: Tensor, sigma255: float, g: torch.Generator) -> Tensor:
    if sigma255 <= 0:
        return x
    return x + torch.randn(x.shape, generator=g, dtype=x.dtype) * (sigma255 / 255.0)


# ------------------------------------------------------------------------------------------ base class


class Degradation(ABC):
    """A synthetic degradation: ``lq = deg(gt, generator)``; ``scale`` > 1 only for super-resolution."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    specs: ClassVar[dict[str, _Spec]]
    scale: int = 1
    # every random parameter of one image is drawn before anything whose draws depend on its size: copies of one
    # generator degrade a photo and its shrunk copy with the same parameters (photo statistics; TrainDataset)
    scalars_first: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise DataError(
                f"degradation {self.name}: unknown parameter(s) {unknown}; allowed: {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **params}
        self.params = {k: self.specs[k].parse(self.name, k, v) for k, v in merged.items()}

    def __call__(self, gt: Tensor, generator: torch.Generator) -> Tensor:
        if gt.ndim != 4:
            raise DataError(
                f"degradation {self.name}: expected a [B,C,H,W] tensor, got shape {tuple(gt.shape)}"
            )
        out = [self.apply_one(gt[i : i + 1].float(), generator) for i in range(gt.shape[0])]
        return torch.cat(out).clamp_(0.0, 1.0)

    @abstractmethod
    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Degrade one image ``[1,C,H,W]``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def _range(low: float | None = None, high: float | None = None) -> _Spec:
    return _Spec("range", low, high)


def _int_range(low: int | None = None, high: int | None = None) -> _Spec:
    return _Spec("int_range", low, high)


# ------------------------------------------------------------------------------------------ tasks


def random_convex_polygon(h: int, w: int, g: torch.Generator, size: Range) -> Tensor:
    """``(n, 2)`` xy corners of a random convex polygon with a radius of ``size`` (fraction of the short side):
    points on a random ellipse, sorted by angle, are always convex."""
    n = _randint(g, (3, 8))
    radius = min(h, w) * _uniform(g, size)
    centre = torch.rand(2, generator=g) * torch.tensor([w, h])
    radii = radius * (0.5 + torch.rand(2, generator=g))
    angles = torch.sort(torch.rand(n, generator=g) * 2 * math.pi).values
    rot = torch.rand((), generator=g) * math.pi
    ex, ey = radii[0] * torch.cos(angles), radii[1] * torch.sin(angles)
    xs = centre[0] + ex * torch.cos(rot) - ey * torch.sin(rot)
    ys = centre[1] + ex * torch.sin(rot) + ey * torch.cos(rot)
    return torch.stack([xs, ys], dim=-1)


def with_dark_objects(
    x: Tensor,
    g: torch.Generator,
    count: tuple[int, int] = (1, 3),
    size: Range = (0.1, 0.4),
    blur: Range = (0.005, 0.06),
    value: Range = (0.03, 0.35),
    opacity: Range = (0.7, 1.0),
) -> Tensor:
    """``x`` (C, H, W) with dark, flat-coloured, soft-edged objects painted over it: content, not a degradation.

    A shadow darkens what lies under it and keeps its texture; a dark object in front of it hides it. Shown only
    shadows, a model lifts every soft dark region it meets (the out-of-focus brown blobs behind a cat come out
    orange); painted into the clean photo before it is degraded, such objects teach it that dark and blurred is
    not the same as shadowed (``data.dark_object_prob``; README, "Dark objects"). Each object's colour has a
    random hue, a saturation of 0-0.6 and a brightness in ``value``; its edge is blurred by ``blur`` (fraction of
    the short side: sharp to out of focus).
    """
    c, h, w = x.shape
    out = x[None]
    for _ in range(_randint(g, count)):
        for _attempt in range(4):  # one that barely touches the image is redrawn (a few times at most)
            corners = random_convex_polygon(h, w, g, size)[None]
            mask = _draw_convex_polygon(torch.zeros(1, 1, h, w), corners, torch.ones(1, 1))
            if mask.mean() > 0.01:
                break
        mask = _blur(mask, _uniform(g, blur) * min(h, w)).clamp(0.0, 1.0) * _uniform(g, opacity)
        brightness, saturation = _uniform(g, value), 0.6 * float(torch.rand((), generator=g))
        hue = 2 * math.pi * float(torch.rand((), generator=g))
        if c == 3:
            hsv = torch.tensor([hue, saturation, brightness]).view(1, 3, 1, 1)
            colour = kornia.color.hsv_to_rgb(hsv)
        else:
            colour = torch.full((1, c, 1, 1), brightness)
        out = out * (1.0 - mask) + colour * mask
    return out[0]


class Shadow(Degradation):
    """Plasma shadows plus hard-edged polygons with a blurred penumbra: multiplicative, slightly blue."""

    name = "shadow"
    defaults: ClassVar = {
        "intensity": [0.4, 0.85],
        "color_cast": 0.15,
        "num_polygons": [1, 3],
        "polygon_size": [0.15, 0.5],
        "penumbra": [0.002, 0.02],
        "plasma_prob": 0.5,
        "plasma_roughness": [0.3, 0.6],
    }
    specs: ClassVar = {
        "intensity": _range(0.0, 1.0),
        "color_cast": _Spec("float", 0.0, 1.0),
        "num_polygons": _int_range(0, 50),
        "polygon_size": _range(0.0, 2.0),
        "penumbra": _range(0.0, 0.5),
        "plasma_prob": _Spec("float", 0.0, 1.0),
        "plasma_roughness": _range(0.0, 1.0),
    }

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        p = self.params
        _, c, h, w = x.shape
        mask = self._polygons(h, w, g)
        if torch.rand((), generator=g).item() < p["plasma_prob"]:
            mask = torch.maximum(mask, self._plasma_mask(h, w, g))
        strength = _uniform(g, p["intensity"])
        cast = p["color_cast"] * torch.rand((), generator=g).item()
        tint = torch.tensor([1.0 + cast, 1.0, 1.0 - cast]) if c == 3 else torch.ones(c)
        atten = (strength * tint).clamp(0.0, 0.97).view(1, c, 1, 1)
        return x * (1.0 - mask * atten)

    def _polygons(self, h: int, w: int, g: torch.Generator) -> Tensor:
        p = self.params
        mask = torch.zeros(1, 1, h, w)
        n = _randint(g, p["num_polygons"])
        for attempt in range(n + 4):  # a polygon that misses the image is redrawn (a few times at most)
            if attempt >= n and (n == 0 or mask.mean() > 0.02):
                break
            poly = random_convex_polygon(h, w, g, p["polygon_size"])
            mask = _draw_convex_polygon(mask, poly[None], torch.ones(1, 1))
        return _blur(mask, _uniform(g, p["penumbra"]) * min(h, w)).clamp(0.0, 1.0)

    def _plasma_mask(self, h: int, w: int, g: torch.Generator) -> Tensor:
        plasma = _plasma(h, w, _uniform(g, self.params["plasma_roughness"]), g)
        threshold = _uniform(g, (0.45, 0.7))
        return torch.sigmoid((plasma - threshold) / 0.03)


class Derain(Degradation):
    """Rain streaks: sparse drops smeared by a near-vertical motion blur, screen-blended (brightens)."""

    name = "derain"
    defaults: ClassVar = {
        "density": [0.002, 0.01],
        "length": [11, 31],
        "angle": [-20.0, 20.0],
        "brightness": [0.4, 0.9],
        "width": [0.0, 0.8],
    }
    specs: ClassVar = {
        "density": _range(0.0, 1.0),
        "length": _int_range(1, 501),
        "angle": _range(-90.0, 90.0),
        "brightness": _range(0.0, 1.0),
        "width": _range(0.0, 10.0),
    }

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        p = self.params
        _, _, h, w = x.shape
        drops = (torch.rand(1, 1, h, w, generator=g) < _uniform(g, p["density"])).float()
        drops = drops * (0.5 + 0.5 * torch.rand(1, 1, h, w, generator=g))
        k = _odd(min(_randint(g, p["length"]), 2 * min(h, w) - 1))
        streaks = drops
        if k >= 3:
            angle = torch.tensor([90.0 + _uniform(g, p["angle"])])
            streaks = kornia.filters.motion_blur(drops, k, angle, torch.zeros(1), border_type="reflect") * k
        streaks = _blur(streaks, _uniform(g, p["width"])).clamp(0.0, 1.0) * _uniform(g, p["brightness"])
        return 1.0 - (1.0 - x) * (1.0 - streaks)


def _odd(k: int) -> int:
    return k if k % 2 else k - 1


class Denoise(Degradation):
    """Additive white Gaussian noise, sigma in /255 units (``sigma: 25`` means 25/255)."""

    name = "denoise"
    scalars_first = True
    defaults: ClassVar = {"sigma": 25.0, "clip": True}
    specs: ClassVar = {"sigma": _range(0.0, 255.0), "clip": _Spec("bool")}

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        return _noise(x, _uniform(g, self.params["sigma"]), g)

    def __call__(self, gt: Tensor, generator: torch.Generator) -> Tensor:
        out = [self.apply_one(gt[i : i + 1].float(), generator) for i in range(gt.shape[0])]
        lq = torch.cat(out)
        return lq.clamp_(0.0, 1.0) if self.params["clip"] else lq


class Deblur(Degradation):
    """Linear motion blur of random length and angle (kornia ``motion_blur``), optional noise."""

    name = "deblur"
    scalars_first = True
    defaults: ClassVar = {
        "kernel_size": [9, 25],
        "angle": [0.0, 180.0],
        "direction": [-1.0, 1.0],
        "noise": 0.0,
    }
    specs: ClassVar = {
        "kernel_size": _int_range(3, 301),
        "angle": _range(-360.0, 360.0),
        "direction": _range(-1.0, 1.0),
        "noise": _range(0.0, 255.0),
    }

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        p = self.params
        k = _odd(min(_randint(g, p["kernel_size"]), 2 * min(x.shape[-2:]) - 1))
        angle = torch.tensor([_uniform(g, p["angle"])])
        direction = torch.tensor([_uniform(g, p["direction"])])
        if k >= 3:
            x = kornia.filters.motion_blur(x, k, angle, direction, border_type="reflect")
        return _noise(x, _uniform(g, p["noise"]), g)


class Dehaze(Degradation):
    """Atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)``, smooth random depth ``d``."""

    name = "dehaze"
    defaults: ClassVar = {
        "beta": [0.8, 2.0],
        "airlight": [0.7, 1.0],
        "airlight_tint": 0.05,
        "depth_range": [0.3, 1.0],
        "depth_gradient": [0.3, 0.8],
        "depth_roughness": [0.3, 0.5],
    }
    specs: ClassVar = {
        "beta": _range(0.0, 10.0),
        "airlight": _range(0.0, 1.0),
        "airlight_tint": _Spec("float", 0.0, 0.5),
        "depth_range": _range(0.0, 10.0),
        "depth_gradient": _range(0.0, 1.0),
        "depth_roughness": _range(0.0, 1.0),
    }

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        p = self.params
        _, c, h, w = x.shape
        t = torch.exp(-_uniform(g, p["beta"]) * self._depth(h, w, g))
        tint = (torch.rand(c, generator=g) * 2 - 1) * p["airlight_tint"] if c == 3 else torch.zeros(c)
        airlight = (_uniform(g, p["airlight"]) + tint).clamp(0.0, 1.0).view(1, c, 1, 1)
        return x * t + airlight * (1.0 - t)

    def _depth(self, h: int, w: int, g: torch.Generator) -> Tensor:
        """Far at the top (a vertical ramp) mixed with a smooth plasma, scaled into ``depth_range``."""
        p = self.params
        ramp = torch.linspace(1.0, 0.0, h).view(1, 1, h, 1).expand(1, 1, h, w)
        plasma = _blur(_plasma(h, w, _uniform(g, p["depth_roughness"]), g), 0.02 * min(h, w))
        mix = _uniform(g, p["depth_gradient"])
        d = kornia.enhance.normalize_min_max(mix * ramp + (1 - mix) * plasma)
        low, high = p["depth_range"]
        return low + (high - low) * d


class SuperResolution(Degradation):
    """Downscale by ``scale`` (antialiased, kornia resize): the LQ is ``scale`` times smaller than the GT."""

    name = "sr"
    scalars_first = True
    defaults: ClassVar = {"scale": 4, "kernel": "bicubic", "blur": 0.0, "noise": 0.0}
    specs: ClassVar = {
        "scale": _Spec("int", 1, 16),
        "kernel": _Spec("choice", choices=("bicubic", "bilinear", "area", "nearest")),
        "blur": _range(0.0, 10.0),
        "noise": _range(0.0, 255.0),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.scale = self.params["scale"]

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        p = self.params
        h, w = x.shape[-2] // self.scale, x.shape[-1] // self.scale
        if h < 1 or w < 1:
            raise DataError(f"degradation sr: image {tuple(x.shape[-2:])} is smaller than scale {self.scale}")
        x = _blur(x, _uniform(g, p["blur"]))
        antialias = p["kernel"] in ("bicubic", "bilinear")
        lq = kornia.geometry.transform.resize(x, (h, w), interpolation=p["kernel"], antialias=antialias)
        return _noise(lq, _uniform(g, p["noise"]), g)


class Inpaint(Degradation):
    """Random free-form brush strokes and boxes filled with ``fill``."""

    name = "inpaint"
    scalars_first = True
    defaults: ClassVar = {
        "num_strokes": [1, 4],
        "stroke_width": [0.02, 0.08],
        "stroke_vertices": [3, 8],
        "num_boxes": [0, 2],
        "box_size": [0.1, 0.3],
        "fill": 1.0,
    }
    specs: ClassVar = {
        "num_strokes": _int_range(0, 100),
        "stroke_width": _range(0.0, 1.0),
        "stroke_vertices": _int_range(1, 100),
        "num_boxes": _int_range(0, 100),
        "box_size": _range(0.0, 1.0),
        "fill": _Spec("float", 0.0, 1.0),
    }

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        mask = self.mask(x.shape[-2], x.shape[-1], g)
        return x * (1.0 - mask) + self.params["fill"] * mask

    def mask(self, h: int, w: int, g: torch.Generator) -> Tensor:
        """1 where pixels are missing; never empty (one stroke at least)."""
        p = self.params
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        mask = torch.zeros(h, w, dtype=torch.bool)
        n_strokes = max(_randint(g, p["num_strokes"]), 0 if p["num_boxes"][0] > 0 else 1)
        for _ in range(n_strokes):
            mask |= self._stroke(xs, ys, g)
        for _ in range(_randint(g, p["num_boxes"])):
            mask |= self._box(xs, ys, g)
        return mask.float()[None, None]

    def _stroke(self, xs: Tensor, ys: Tensor, g: torch.Generator) -> Tensor:
        h, w = xs.shape
        short = min(h, w)
        radius = max(_uniform(g, self.params["stroke_width"]) * short / 2, 0.75)
        point = torch.rand(2, generator=g) * torch.tensor([w, h])
        hit = torch.zeros(h, w, dtype=torch.bool)
        for _ in range(_randint(g, self.params["stroke_vertices"])):
            angle = torch.rand((), generator=g) * 2 * math.pi
            step = (0.1 + 0.3 * torch.rand((), generator=g)) * short
            nxt = (point + step * torch.stack([torch.cos(angle), torch.sin(angle)])).clamp(
                torch.zeros(2), torch.tensor([w, h], dtype=torch.float32)
            )
            _paint_segment(hit, xs, ys, point, nxt, radius)
            point = nxt
        return hit

    def _box(self, xs: Tensor, ys: Tensor, g: torch.Generator) -> Tensor:
        h, w = xs.shape
        bh, bw = (_uniform(g, self.params["box_size"]) * s for s in (h, w))
        top, left = torch.rand((), generator=g) * (h - bh), torch.rand((), generator=g) * (w - bw)
        return (ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw)


def _paint_segment(hit: Tensor, xs: Tensor, ys: Tensor, a: Tensor, b: Tensor, radius: float) -> None:
    """Mark pixels within ``radius`` of the segment, looking only inside its bounding box."""
    h, w = hit.shape
    x0, x1 = int(max(0, min(a[0], b[0]) - radius - 1)), int(min(w, max(a[0], b[0]) + radius + 2))
    y0, y1 = int(max(0, min(a[1], b[1]) - radius - 1)), int(min(h, max(a[1], b[1]) + radius + 2))
    if x1 <= x0 or y1 <= y0:
        return
    win = (slice(y0, y1), slice(x0, x1))
    hit[win] |= _segment_distance(xs[win], ys[win], a, b) <= radius


def _segment_distance(xs: Tensor, ys: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance of every pixel centre to the segment ``a``-``b`` (for brush strokes)."""
    d = b - a
    length2 = (d * d).sum().clamp_min(1e-8)
    t = (((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / length2).clamp(0.0, 1.0)
    return torch.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1]))


class LowLight(Degradation):
    """Under-exposure: ``gain * x ** gamma`` (kornia ``adjust_gamma``), sensor noise, 8-bit quantisation."""

    name = "lowlight"
    scalars_first = True
    defaults: ClassVar = {"gain": [0.08, 0.35], "gamma": [1.2, 2.0], "noise": [1.0, 6.0], "quantize": True}
    specs: ClassVar = {
        "gain": _range(0.0, 1.0),
        "gamma": _range(0.1, 10.0),
        "noise": _range(0.0, 255.0),
        "quantize": _Spec("bool"),
    }

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        p = self.params
        dark = kornia.enhance.adjust_gamma(x, _uniform(g, p["gamma"]), _uniform(g, p["gain"]))
        dark = _noise(dark, _uniform(g, p["noise"]), g).clamp(0.0, 1.0)
        return torch.round(dark * 255.0) / 255.0 if p["quantize"] else dark


class Jpeg(Degradation):
    """JPEG compression artifacts at a random quality.

    Uses the real libjpeg codec through Pillow rather than kornia's differentiable JPEG: the artifacts are the
    ones real files have, and it is ~100x faster on CPU (this runs per training sample in the data loader).
    """

    name = "jpeg"
    scalars_first = True
    defaults: ClassVar = {"quality": [10, 50]}
    specs: ClassVar = {"quality": _int_range(1, 100)}

    def apply_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        quality = _randint(g, self.params["quality"])
        arr = (x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        out = np.asarray(Image.open(buf).convert(img.mode), dtype=np.float32) / 255.0
        out = out[..., None] if out.ndim == 2 else out
        return torch.from_numpy(out.copy()).permute(2, 0, 1)[None]


DEGRADATIONS: dict[str, type[Degradation]] = {
    cls.name: cls
    for cls in (Shadow, Derain, Denoise, Deblur, Dehaze, SuperResolution, Inpaint, LowLight, Jpeg)
}


def _plain(cfg: Any) -> dict[str, Any]:
    """Accept dicts and OmegaConf nodes alike."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if not isinstance(cfg, Mapping):
        raise DataError(f"degradation config must be a mapping with a 'name', got {cfg!r}")
    return dict(cfg)


def build_degradation(cfg: Mapping[str, Any]) -> Degradation:
    """``{"name": "shadow", **params}`` -> a :class:`Degradation`; unknown names/params fail naming the allowed."""
    params = _plain(cfg)
    name = params.pop("name", None)
    if name not in DEGRADATIONS:
        raise DataError(f"unknown degradation name {name!r}; allowed: {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[name](**params)
