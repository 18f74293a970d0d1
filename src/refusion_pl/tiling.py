"""Tiled restoration of images of any size at bounded memory (pure torch).

Latent models: the autoencoder's levels above the deepest one are purely convolutional, so they are tiled
*exactly*: every tile is computed on a crop widened by a halo that covers the receptive field, the halo is
cropped away, the whole image is reflect-padded once (as the untiled path does) and tile origins are
multiples of the total downsampling factor, so strided convs and nearest upsampling see the untiled grid.
The deepest level (linear attention), the diffusion and the noise network run untiled at latent resolution,
which is small. The decoder's full-resolution skip features are recomputed per tile from the encoder (or kept
in fp16 when the budget allows), so nothing of full resolution beyond the input and output stays in memory.

Pixel models (and latents too large for one pass) use overlap blending of the noise prediction at every
sampling step: the sampler state stays global, so there are no seams, and only the network's global channel
pooling sees a tile instead of the image.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from refusion_pl.models.layers import pad_to_multiple, pointwise
from refusion_pl.models.unet_ae import ResidualLinearAttention, UNetAutoencoder
from refusion_pl.pipeline import photo_scalars, sample_mean, with_scalars
from refusion_pl.pipeline import restore as restore_untiled
from refusion_pl.sde import IRSDE

GiB = 1024**3
#: Resident memory of the Python process with torch and the project imported (measured, rounded up).
BASE_BYTES = 600 * 1024**2
MIN_TILE = 64
#: Resident bytes per byte of loaded weights (measured: 0.46 GiB of RSS for the paper nets' 0.29 GiB).
WEIGHT_RESIDENCY = 1.6
#: Latent rows per strip of the deepest level in tiled runs (its working memory stays a few MB).
DEEP_ROWS = 64
PLAN_FRACTION = 0.9

Span = tuple[int, int]


# ----------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class AEGeometry:
    """Where the autoencoder can be cut and how wide the halos of its convolutional levels are.

    All lengths are in full-resolution pixels and multiples of ``align`` (= ``2 ** depth``, the padding
    multiple), so every crop starts on the grid of every level.
    """

    depth: int
    align: int
    deep_scale: int  # resolution divisor of the deepest (attention) level = latent divisor
    encoder_halo: int
    decoder_halo: int

    @property
    def tileable(self) -> bool:
        return self.depth >= 2


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def ae_geometry(ae: UNetAutoencoder) -> AEGeometry:
    """Halos from the architecture: 3x3 conv radius 1, 4x4/s2 conv 2, nearest 2x upsampling up to its scale.

    Encoder (init conv, then two ResBlocks and a strided conv per tiled level) and decoder (the deepest level's
    upsampling conv, two ResBlocks, upsampling conv per tiled level, final conv) are summed level by level.
    """
    depth = len(ae.encoder)
    align = ae.pad_multiple
    tiled = range(depth - 1)
    encoder = 1 + sum((4 + 2) * 2**i for i in tiled)
    decoder = 2 + sum(4 * 2**i for i in tiled) + sum(2 ** (i - 1) + 2**i for i in range(1, depth))
    return AEGeometry(
        depth=depth,
        align=align,
        deep_scale=2 ** (depth - 1),
        encoder_halo=_round_up(encoder, align),
        decoder_halo=_round_up(decoder, align),
    )


def spans(size: int, tile: int) -> list[Span]:
    """Consecutive ``[start, stop)`` spans of at most ``tile`` covering ``[0, size)``."""
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


def widen(span: Span, halo: int, size: int) -> Span:
    return max(0, span[0] - halo), min(size, span[1] + halo)


def _grid(height: int, width: int, tile: int) -> list[tuple[Span, Span]]:
    return [(ys, xs) for ys in spans(height, tile) for xs in spans(width, tile)]


def _crop(x: Tensor, ys: Span, xs: Span, scale: int = 1) -> Tensor:
    return x[..., ys[0] // scale : ys[1] // scale, xs[0] // scale : xs[1] // scale]


def _inner(ys: Span, xs: Span, outer_ys: Span, outer_xs: Span) -> tuple[Span, Span]:
    """``ys, xs`` relative to the origin of the outer crop."""
    return (ys[0] - outer_ys[0], ys[1] - outer_ys[0]), (xs[0] - outer_xs[0], xs[1] - outer_xs[0])


# ------------------------------------------------------------------------------------- autoencoder parts


def hidden_scales(depth: int) -> list[int]:
    """Resolution divisor of each hidden map of the tiled levels (init conv, then two per level)."""
    return [1] + [2**i for i in range(depth - 1) for _ in range(2)]


def encode_top(ae: UNetAutoencoder, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Init conv and every level but the deepest, on an already padded image: (deep input, hidden maps)."""
    x = ae.init_conv(x)
    hidden = [x]
    for level in ae.encoder[:-1]:
        x = level.res1(x)
        hidden.append(x)
        x = level.attn(level.res2(x))
        hidden.append(x)
        x = level.down(x)
    return x, hidden


def encode_deep(ae: UNetAutoencoder, x: Tensor, rows: int | None = None) -> tuple[Tensor, list[Tensor]]:
    """The deepest level (with attention) and the latent conv: (latent, its two hidden maps).

    ``rows`` runs it in strips of that many rows (convolutions with a halo, attention in two exact passes),
    so its working memory stays small even at the latent size of a 6000x4000 photo.
    """
    level = ae.encoder[-1]
    first = strips(level.res1, [x], RESBLOCK_HALO, rows)
    second = attention(level.attn, strips(level.res2, [first], RESBLOCK_HALO, rows), rows)
    latent = strips(lambda h: pointwise(ae.latent_conv, level.down(h)), [second], 1, rows)
    return latent, [first, second]


def decode_deep(
    ae: UNetAutoencoder, latent: Tensor, deep_hidden: Sequence[Tensor], rows: int | None = None
) -> Tensor:
    """Post-latent conv and the deepest decoder level up to (not including) its upsampling conv."""
    level = ae.decoder[0]

    def first(z: Tensor, skip: Tensor) -> Tensor:
        return level.res1(torch.cat([pointwise(ae.post_latent_conv, z), skip], dim=1))

    def second(h: Tensor, skip: Tensor) -> Tensor:
        return level.res2(torch.cat([h, skip], dim=1))

    x = strips(first, [latent, deep_hidden[1]], RESBLOCK_HALO, rows)
    x = strips(second, [x, deep_hidden[0]], RESBLOCK_HALO, rows)
    return attention(level.attn, x, rows)


RESBLOCK_HALO = 2  # two 3x3 convolutions


def strips(fn: Callable[..., Tensor], inputs: Sequence[Tensor], halo: int, rows: int | None) -> Tensor:
    """``fn(*inputs)`` for a local (convolutional) ``fn``, computed in row strips widened by ``halo`` rows."""
    height = inputs[0].shape[-2]
    if rows is None or rows >= height:
        return fn(*inputs)
    out: Tensor | None = None
    for ys in spans(height, rows):
        outer = widen(ys, halo, height)
        y = fn(*(t[..., outer[0] : outer[1], :] for t in inputs))
        if out is None:
            out = y.new_empty(*y.shape[:2], height, y.shape[-1])
        out[..., ys[0] : ys[1], :] = y[..., ys[0] - outer[0] : ys[1] - outer[0], :]
    assert out is not None
    return out


def attention(module: nn.Module, x: Tensor, rows: int | None) -> Tensor:
    """``module(x)`` for the residual linear attention, in row strips when ``rows`` is set.

    Its only global quantity is the context ``sum_n softmax_n(k) v_n^T``; a first pass accumulates it with a
    running maximum (an online softmax over positions), a second applies it strip by strip.
    """
    if not isinstance(module, ResidualLinearAttention) or rows is None or rows >= x.shape[-2]:
        return module(x)
    body = module.body
    context = _attention_context(module, x, rows)

    def apply(h: Tensor) -> Tensor:
        q = _heads(body.to_qkv(module.norm(h)).chunk(3, dim=1)[0], body.heads)
        out = context.transpose(-1, -2) @ (q.softmax(dim=-2) * body.scale)
        return h + body.to_out(out.reshape(h.shape[0], -1, *h.shape[-2:]))

    return strips(apply, [x], 0, rows)


def _heads(x: Tensor, heads: int) -> Tensor:
    """``b (h c) x y -> b h c (x y)``."""
    return x.reshape(x.shape[0], heads, -1, x.shape[-2] * x.shape[-1])


def _attention_context(module: ResidualLinearAttention, x: Tensor, rows: int) -> Tensor:
    body, positions = module.body, x.shape[-2] * x.shape[-1]
    peak = total = context = None
    for ys in spans(x.shape[-2], rows):
        _, k, v = body.to_qkv(module.norm(x[..., ys[0] : ys[1], :])).chunk(3, dim=1)
        k, v = _heads(k, body.heads).float(), _heads(v, body.heads).float() / positions
        chunk_peak = k.amax(dim=-1, keepdim=True)
        new_peak = chunk_peak if peak is None else torch.maximum(peak, chunk_peak)
        weights = torch.exp(k - new_peak)
        if peak is not None:
            rescale = torch.exp(peak - new_peak)
            total, context = total * rescale, context * rescale
        part_total, part_context = weights.sum(dim=-1, keepdim=True), weights @ v.transpose(-1, -2)
        total = part_total if total is None else total + part_total
        context = part_context if context is None else context + part_context
        peak = new_peak
    return (context / total).to(x.dtype)


def decode_top(ae: UNetAutoencoder, x: Tensor, hidden: Sequence[Tensor]) -> Tensor:
    """The deepest level's upsampling conv, the convolutional levels and the final conv."""
    skips = list(hidden)
    x = ae.decoder[0].up(x)
    for level in ae.decoder[1:]:
        x = level.res1(torch.cat([x, skips.pop()], dim=1))
        x = level.attn(level.res2(torch.cat([x, skips.pop()], dim=1)))
        x = level.up(x)
    return ae.final_conv(x + skips[0])


# ----------------------------------------------------------------------------------------- tiled encode


@dataclass
class TiledEncoding:
    """What the tiled decoder needs: the padded input (to recompute skips) or the stored fp16 skips."""

    latent: Tensor
    deep_hidden: list[Tensor]
    padded: Tensor
    size: tuple[int, int]
    skips: list[Tensor] | None = None


def _progress(items: list, desc: str, progress: bool) -> Iterator:
    return iter(tqdm(items, desc=desc, leave=False, disable=not progress or len(items) < 2))


@torch.no_grad()
def tiled_encode(
    ae: UNetAutoencoder, x: Tensor, tile: int, store_skips: bool = False, progress: bool = False
) -> TiledEncoding:
    """``ae.encode`` in tiles of ``tile`` pixels (rounded up to the alignment); equal up to float rounding."""
    geo = ae_geometry(ae)
    tile = _round_up(tile, geo.align)
    padded = pad_to_multiple(x, geo.align, mode="reflect")
    height, width = padded.shape[-2:]
    scales = hidden_scales(geo.depth)
    deep_in: Tensor | None = None
    skips: list[Tensor] | None = None
    for ys, xs in _progress(_grid(height, width, tile), "encoding tiles", progress):
        outer_ys, outer_xs = widen(ys, geo.encoder_halo, height), widen(xs, geo.encoder_halo, width)
        out, hidden = encode_top(ae, _crop(padded, outer_ys, outer_xs))
        in_ys, in_xs = _inner(ys, xs, outer_ys, outer_xs)
        if deep_in is None:
            deep_in = out.new_empty(*out.shape[:2], height // geo.deep_scale, width // geo.deep_scale)
        _crop(deep_in, ys, xs, geo.deep_scale).copy_(_crop(out, in_ys, in_xs, geo.deep_scale))
        if store_skips:
            if skips is None:
                skips = [
                    h.new_empty(*h.shape[:2], height // s, width // s, dtype=torch.float16)
                    for h, s in zip(hidden, scales)
                ]
            for store, h, s in zip(skips, hidden, scales):
                _crop(store, ys, xs, s).copy_(_crop(h, in_ys, in_xs, s))
        del out, hidden
        release_free_memory()
    assert deep_in is not None
    latent, deep_hidden = encode_deep(ae, deep_in, DEEP_ROWS)
    return TiledEncoding(latent, deep_hidden, padded, (x.shape[-2], x.shape[-1]), skips)


@torch.no_grad()
def tiled_decode(
    ae: UNetAutoencoder, latent: Tensor, enc: TiledEncoding, tile: int, progress: bool = False
) -> Tensor:
    """``ae.decode(latent, hidden)`` in tiles, with the skips recomputed per tile (or read from ``enc.skips``)."""
    geo = ae_geometry(ae)
    tile = _round_up(tile, geo.align)
    height, width = enc.padded.shape[-2:]
    x_deep = decode_deep(ae, latent, enc.deep_hidden, DEEP_ROWS)
    enc.deep_hidden = []  # consumed: free them before the full-resolution tiles
    scales = hidden_scales(geo.depth)
    out: Tensor | None = None
    for ys, xs in _progress(_grid(height, width, tile), "decoding tiles", progress):
        dec_ys, dec_xs = widen(ys, geo.decoder_halo, height), widen(xs, geo.decoder_halo, width)
        hidden = _skips_for(ae, enc, dec_ys, dec_xs, geo, scales)
        y = decode_top(ae, _crop(x_deep, dec_ys, dec_xs, geo.deep_scale), hidden)
        if out is None:
            out = y.new_empty(*y.shape[:2], height, width)
        in_ys, in_xs = _inner(ys, xs, dec_ys, dec_xs)
        _crop(out, ys, xs).copy_(_crop(y, in_ys, in_xs))
        del hidden, y
        release_free_memory()
    assert out is not None
    return out[..., : enc.size[0], : enc.size[1]]


def _skips_for(
    ae: UNetAutoencoder, enc: TiledEncoding, ys: Span, xs: Span, geo: AEGeometry, scales: list[int]
) -> list[Tensor]:
    """Hidden maps over the decoder crop ``ys, xs``: sliced from the fp16 store or recomputed exactly."""
    if enc.skips is not None:
        dtype = enc.latent.dtype
        return [_crop(s, ys, xs, scale).to(dtype) for s, scale in zip(enc.skips, scales)]
    height, width = enc.padded.shape[-2:]
    outer_ys, outer_xs = widen(ys, geo.encoder_halo, height), widen(xs, geo.encoder_halo, width)
    _, hidden = encode_top(ae, _crop(enc.padded, outer_ys, outer_xs))
    in_ys, in_xs = _inner(ys, xs, outer_ys, outer_xs)
    return [_crop(h, in_ys, in_xs, scale) for h, scale in zip(hidden, scales)]


# --------------------------------------------------------------------------------------- blended tiles


def window_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of overlapping windows of ``tile`` covering ``size``; aligned, the last one flush with the end."""
    if size <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> Tensor:
    """1-D blending weight, flat at image edges; at interior edges zero over the outer quarter of the overlap
    (where the window's own zero padding distorts the prediction), then rising linearly to one."""
    pos = torch.arange(length, dtype=torch.float32) + 0.5
    weight = torch.ones(length)
    margin = overlap // 4
    span = max(overlap - 2 * margin, 1)
    if overlap > 0:
        if not at_start:
            weight = torch.minimum(weight, ((pos - margin) / span).clamp(0, 1))
        if not at_end:
            weight = torch.minimum(weight, ((length - margin - pos) / span).clamp(0, 1))
    return weight


class BlendedTiles(nn.Module):
    """A noise model evaluated on overlapping windows and blended: bounded memory for huge inputs.

    Used as ``model(x, mu, t)`` by the samplers, so each step blends the noise predictions while the sampler
    state stays global (no seams from independent per-tile trajectories).
    """

    def __init__(
        self, net: nn.Module, tile: int, overlap: int = 32, align: int | None = None, whole_rows: bool = False
    ) -> None:
        super().__init__()
        self.net = net
        self.tile = tile
        # Stereo networks attend along whole image rows: their windows are bands of full-width rows.
        self.whole_rows = whole_rows
        self.overlap = min(overlap, tile // 2)
        self.align = align or getattr(net, "pad_multiple", 1)
        self.pad_multiple = getattr(net, "pad_multiple", 1)
        self._weights: dict[tuple, tuple[list, Tensor]] = {}

    def layout(self, height: int, width: int, device: torch.device) -> tuple[list, Tensor]:
        """Windows ``(ys, xs, weight)`` and the per-pixel weight sum, cached per image size."""
        key = (height, width, device)
        if key not in self._weights:
            rows = window_starts(height, self.tile, self.overlap, self.align)
            tile_width = width if self.whole_rows else self.tile
            cols = window_starts(width, tile_width, self.overlap, self.align)
            windows, total = [], torch.zeros(height, width, device=device)
            for y in rows:
                wy = ramp(min(self.tile, height), self.overlap, y == 0, y + self.tile >= height)
                for x in cols:
                    wx = ramp(min(tile_width, width), self.overlap, x == 0, x + tile_width >= width)
                    weight = (wy[:, None] * wx[None, :]).to(device)
                    ys, xs = (y, y + weight.shape[0]), (x, x + weight.shape[1])
                    windows.append((ys, xs, weight))
                    _crop(total, ys, xs).add_(weight)
            self._weights[key] = (windows, total)
        return self._weights[key]

    def forward(self, x: Tensor, mu: Tensor, t: Tensor, *args: object) -> Tensor:
        windows, total = self.layout(x.shape[-2], x.shape[-1], x.device)
        if len(windows) == 1:
            return self.net(x, mu, t, *args)
        out = torch.zeros_like(x, dtype=torch.float32)
        for ys, xs, weight in windows:
            pred = self.net(_crop(x, ys, xs), _crop(mu, ys, xs), t, *args)
            _crop(out, ys, xs).addcmul_(pred.float(), weight)
        return out.div_(total.clamp_min(1e-6)).to(x.dtype)


# ------------------------------------------------------------------------------------- memory planning


def _dims(ae: UNetAutoencoder) -> list[int]:
    return [ae.init_conv.out_channels] + [level.down.out_channels for level in ae.encoder]


def hidden_floats_per_pixel(ae: UNetAutoencoder) -> float:
    """Floats per full-resolution pixel of the skip maps of the tiled levels (48 for the paper autoencoder)."""
    dims, depth = _dims(ae), len(ae.encoder)
    return dims[0] + sum(2 * dims[i] / 4**i for i in range(depth - 1))


def top_floats_per_pixel(ae: UNetAutoencoder) -> float:
    """Floats per full-resolution crop pixel while a tile is decoded: skips plus the largest working set.

    Paper autoencoder: 252 estimated, ~230 measured (peak RSS of one tile's encode + decode).
    """
    dims = _dims(ae)
    hidden = hidden_floats_per_pixel(ae)
    # level 1's upsampling conv (2 * dims[1]: the original form's upsampled map; the default sub-pixel form
    # needs about 1.5 * dims[1]), conv outputs, concatenations
    work = 2 * dims[1] + 3.5 * (dims[1] + dims[0])
    return hidden + work


def net_floats_per_pixel(net: nn.Module) -> float:
    """Floats per input pixel of one noise-net pass plus the sampler's state (measured ~550 for width 32)."""
    width = net.intro.out_channels if hasattr(net, "intro") else 64
    return 16 * width + 12 * getattr(net, "img_channel", 3)


def deep_floats_per_latent_pixel(ae: UNetAutoencoder, net: nn.Module, tiled: bool) -> float:
    """Floats per latent pixel of the untiled parts: kept deepest-level maps plus the larger working set.

    Untiled, the deepest level's linear attention dominates (~1300 measured); tiled runs it in strips.
    """
    dims = _dims(ae)
    kept = 3 * dims[-2] + dims[-1]
    work = 0 if tiled else 8 * 128 + 4 * dims[-1]
    return kept + max(net_floats_per_pixel(net), work)


def weight_bytes(*modules: nn.Module | None) -> int:
    """Resident memory of loaded weights: the parameters and buffers, plus what loading leaves behind."""
    tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
    return int(WEIGHT_RESIDENCY * sum(t.numel() * t.element_size() for t in tensors))


def estimate_bytes(
    ae: UNetAutoencoder | None, net: nn.Module, height: int, width: int, tile: int | None, channels: int = 3
) -> int:
    """Rough peak memory of restoring one ``height x width`` image with ``tile`` (None = untiled).

    The maximum over the phases of a run: sampling (input image, kept deepest-level maps, noise net), decoding
    (input and output images, one tile) and writing (input, output and two temporaries of the writer).
    """
    pixels = height * width
    image = 4 * pixels * channels
    base = BASE_BYTES + weight_bytes(ae, net)
    writing = base + 4 * image
    if ae is None:
        crop = pixels if tile is None else min(pixels, (tile + 64) ** 2)
        state = 8 * channels * pixels  # x, mu, noise, blended prediction, weights
        return int(max(writing, base + image + 4 * (state + net_floats_per_pixel(net) * crop)))
    geo = ae_geometry(ae)
    latent_pixels = pixels / geo.deep_scale**2
    if tile is None:
        sampling = base + image + 4 * (1.25 * pixels * top_floats_per_pixel(ae) / 4)  # kept hidden maps
        sampling += 4 * deep_floats_per_latent_pixel(ae, net, tiled=False) * latent_pixels
        decoding = base + 2 * image + 4 * 1.25 * pixels * top_floats_per_pixel(ae)
        return int(max(writing, sampling, decoding))
    sampling = base + image + 4 * deep_floats_per_latent_pixel(ae, net, tiled=True) * latent_pixels
    side = tile + 2 * (geo.decoder_halo + geo.encoder_halo)
    crop = min(side, height + 2 * geo.align) * min(side, width + 2 * geo.align)
    x_deep = 4 * _dims(ae)[-1] * latent_pixels
    decoding = base + 2 * image + x_deep + 4 * top_floats_per_pixel(ae) * crop
    return int(max(writing, sampling, decoding))


def plan_tile(
    ae: UNetAutoencoder | None, net: nn.Module, height: int, width: int, budget: int, channels: int = 3
) -> int | None:
    """Largest tile (multiple of the alignment) whose estimated peak fits ``budget``; None when untiled fits.

    Plans against 90% of the budget: allocator fragmentation and estimate errors take the rest.
    """
    budget = int(budget * PLAN_FRACTION)
    if estimate_bytes(ae, net, height, width, None, channels) <= budget:
        return None
    align = ae_geometry(ae).align if ae is not None else getattr(net, "pad_multiple", 16)
    tile = _round_up(max(height, width), align)
    while tile > MIN_TILE and estimate_bytes(ae, net, height, width, tile, channels) > budget:
        tile = max(MIN_TILE, _round_up(tile * 0.8, align) - align)
    return tile


def plan_skips(
    ae: UNetAutoencoder, net: nn.Module, height: int, width: int, tile: int, budget: int, channels: int = 3
) -> bool:
    """Keep the skips in fp16 when they fit next to the tiled run (saves recomputing the encoder per tile)."""
    skips = 2 * height * width * hidden_floats_per_pixel(ae)
    return estimate_bytes(ae, net, height, width, tile, channels) + skips <= budget * PLAN_FRACTION


def release_free_memory() -> bool:
    """Hand the free pages of glibc's heap back to the system (`malloc_trim`); called between tiles and phases.

    Freed tensors of up to 32 MiB stay in the heap (glibc raises its mmap threshold to each large block freed),
    so without it the resident peak of a tiled run holds the garbage of earlier tiles and phases besides the
    live tensors. Trimming between tiles leaves the allocation policy alone: fixing the threshold instead
    (`mallopt`) kept a 6000x4000 restore at 2.88 GiB rather than 4.42, but made every training step ~2x slower
    (each large tensor freshly mapped). Returns whether it ran (False off glibc).
    """
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def default_budget(device: torch.device) -> int:
    """4 GiB on CPU; the free memory (minus a margin) on a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.85)
    return 4 * GiB


# ---------------------------------------------------------------------------------------- restoration


@torch.no_grad()
def restore_tiled(
    sde: IRSDE,
    net: nn.Module,
    lq: Tensor,
    autoencoder: UNetAutoencoder | None = None,
    sampler: str = "sde",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    tile: int | None = None,
    overlap: int = 32,
    store_skips: bool = False,
    latent_tile: int | None = None,
    cond_scalars: Tensor | None = None,
    whole_rows: bool = False,
    spacing: str = "ou",
    samples: int = 1,
    temperature: float = 1.0,
    shift_jitter: bool = False,
) -> Tensor:
    """``pipeline.restore`` with tiles of ``tile`` pixels (None: untiled); same noise draws, same result.

    Latent models tile the autoencoder exactly; pixel models blend overlapping windows of the noise net.
    ``latent_tile`` also blends the latent noise net for latents too large for one pass. ``cond_scalars``
    condition bokeh networks (every tile sees its image's scalars); ``whole_rows`` makes pixel windows bands of
    full-width rows (stereo networks attend along whole rows, so cutting a row would change the result).
    """
    cond_scalars = photo_scalars(net, lq, cond_scalars)
    if tile is None and latent_tile is None:
        return restore_untiled(
            sde,
            net,
            lq,
            autoencoder,
            sampler,
            steps,
            generator,
            progress,
            cond_scalars,
            spacing,
            samples=samples,
            temperature=temperature,
            shift_jitter=shift_jitter,
        )
    net = with_scalars(net, cond_scalars)
    how = {
        "sampler": sampler,
        "steps": steps,
        "generator": generator,
        "progress": progress,
        "spacing": spacing,
        "temperature": temperature,
        "shift_jitter": shift_jitter,
    }
    if autoencoder is None:
        model = BlendedTiles(net, tile or latent_tile, overlap, whole_rows=whole_rows)  # type: ignore[arg-type]
        return sample_mean(sde, model, lq, samples, **how).clamp_(0, 1)
    model = BlendedTiles(net, latent_tile, overlap) if latent_tile else net
    if tile is None or not ae_geometry(autoencoder).tileable:
        latent, hidden = autoencoder.encode(lq)
        sampled = sample_mean(sde, model, latent, samples, **how)
        return autoencoder.decode_restored(sampled, hidden).clamp_(0, 1)
    enc = tiled_encode(autoencoder, lq, tile, store_skips, progress)
    sampled = sample_mean(sde, model, enc.latent, samples, **how)
    release_free_memory()  # the noise net's working memory, before the full-resolution tiles
    if autoencoder.decode_mode == "direct":
        return tiled_decode(autoencoder, sampled, enc, tile, progress).clamp_(0, 1)
    # Residual decoding (UNetAutoencoder.decode_restored) in tiles: each decode consumes the deep maps.
    deep_hidden = list(enc.deep_hidden)
    restored = lq - tiled_decode(autoencoder, enc.latent, enc, tile, progress)
    enc.deep_hidden = deep_hidden
    restored += tiled_decode(autoencoder, sampled, enc, tile, progress)
    return restored.clamp_(0, 1)
