"""ConditionalNAFNet: the time-conditioned noise network of IR-SDE / Refusion, with the paper's variants.

Parameter names mirror the original implementation (`conv1`..`conv5`, `sca`, `mlp`, `norm1`...), so its
checkpoints load with few renames (see `refusion_pl.checkpoints`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refusion_pl.models.layers import (
    LayerNorm2d,
    SimpleGate,
    SinusoidalEmbedding,
    as_batch_vector,
    pad_to_multiple,
    pointwise,
)

Variant = Literal["pixel", "latent", "stereo", "bokeh"]
VARIANTS: tuple[str, ...] = ("pixel", "latent", "stereo", "bokeh")
NUM_COND_SCALARS = 3  # bokeh: source lens, target lens, disparity


def photo_means(image: Tensor) -> Tensor:
    """Per-channel means of each whole photo, ``(B, C)``: what ``photo_stats`` networks are conditioned on.

    A network trained on crops judges exposure from the crop alone: a crop of dusk sky looks like a crop of an
    underexposed wall, and the whole dusk photo gets brightened 3x. The means of the whole photo, computed before
    cropping in training and before tiling in restore, tell every crop and tile how dark its photo is.
    """
    return image.float().mean(dim=(-2, -1))


PEAK_POOL = 4  # photo_peaks averages blocks this big first: one hot or noisy pixel is not a peak
# net.nafnet.photo_stats settings: the channel means; the means and the channel peaks; the one brightest peak
PHOTO_STATS: tuple[str, ...] = ("means", "means_and_peaks", "peak")


def photo_peaks(image: Tensor, pool: int = PEAK_POOL) -> Tensor:
    """Per-channel maxima of each photo averaged over ``pool`` x ``pool`` blocks, ``(B, C)``.

    Means cannot tell a dusk scene from an underexposed day: both are dark on average. Their brightest parts
    can: a lamp or a lit window stays near white in a slightly dark photo, while a low-light degradation leaves
    nothing brighter than its gain.
    """
    h, w = image.shape[-2:]
    kernel = max(1, min(pool, h, w))
    pooled = image.float().reshape(1, -1, h, w)
    if kernel > 1:
        pooled = F.avg_pool2d(pooled, kernel)
    return pooled.amax(dim=(-2, -1)).reshape(image.shape[:-2])


def photo_stats_kind(setting: object) -> str | None:
    """The ``net.nafnet.photo_stats`` setting by name: None when off, ``means`` for true."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return "means"
    if setting not in PHOTO_STATS:
        raise ValueError(
            f"photo_stats={setting!r} is not supported; choose one of: false, {', '.join(PHOTO_STATS)}"
        )
    return str(setting)


def photo_stats_count(kind: str | None, channels: int) -> int:
    """How many statistics ``kind`` gives for a ``channels``-channel photo (0 when off)."""
    return {None: 0, "means": channels, "means_and_peaks": 2 * channels, "peak": 1}[kind]


def photo_statistics(image: Tensor, kind: str, pool: int = PEAK_POOL) -> Tensor:
    """The statistics of each whole photo that ``photo_stats`` networks take, ``(B, photo_stats_count)``:
    ``means`` the channel means; ``means_and_peaks`` those, then the channel peaks (:func:`photo_peaks` over
    ``pool`` blocks); ``peak`` the brightest channel peak alone (one number: it says how bright the photo's
    lights are, yet unlike per-channel statistics no colour balance that names the photo)."""
    if kind == "means":
        return photo_means(image)
    if kind == "means_and_peaks":
        return torch.cat([photo_means(image), photo_peaks(image, pool)], dim=-1)
    if kind == "peak":
        return photo_peaks(image, pool).amax(dim=-1, keepdim=True)
    raise ValueError(f"photo statistics {kind!r}; choose one of: {', '.join(PHOTO_STATS)}")


class StereoFusion(nn.Module):
    """Stereo cross-attention (SCAM) between the left and right halves of the batch.

    Attention runs along image rows at 1/4 resolution (cheap even for wide images); each direction's
    result is scaled by a zero-initialised per-channel parameter, so a fresh block starts as identity.
    """

    def __init__(self, c: int, downscale: int = 4) -> None:
        super().__init__()
        self.downscale = downscale
        self.scale = c**-0.5
        self.norm_l = LayerNorm2d(c)
        self.norm_r = LayerNorm2d(c)
        self.l_proj1 = nn.Conv2d(c, c, 1)
        self.r_proj1 = nn.Conv2d(c, c, 1)
        self.l_proj2 = nn.Conv2d(c, c, 1)
        self.r_proj2 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        left, right = self._downscale(x).chunk(2, dim=0)
        q_l = self.l_proj1(self.norm_l(left)).permute(0, 2, 3, 1)  # B H W c
        q_r = self.r_proj1(self.norm_r(right)).permute(0, 2, 1, 3)  # B H c W
        v_l = self.l_proj2(left).permute(0, 2, 3, 1)
        v_r = self.r_proj2(right).permute(0, 2, 3, 1)
        attn = torch.matmul(q_l, q_r) * self.scale  # B H W(left) W(right)
        r2l = torch.matmul(attn.softmax(dim=-1), v_r).permute(0, 3, 1, 2) * self.beta
        l2r = torch.matmul(attn.transpose(-1, -2).softmax(dim=-1), v_l).permute(0, 3, 1, 2) * self.gamma
        delta = torch.cat([r2l, l2r], dim=0)
        return x + F.interpolate(delta, size=size, mode="nearest")

    def _downscale(self, x: Tensor) -> Tensor:
        """Bicubic 1/4 as in the original; maps smaller than 4 pixels shrink to 1 instead of to nothing."""
        h, w = x.shape[-2:]
        d = self.downscale
        if h >= d and w >= d:
            return F.interpolate(x, scale_factor=1 / d, mode="bicubic", align_corners=False)
        return F.interpolate(x, size=(max(1, h // d), max(1, w // d)), mode="bicubic", align_corners=False)


class NAFBlock(nn.Module):
    """NAFNet block modulated by the time embedding (scale/shift before attention and FFN).

    Optional extras keep the variants in one class: `cam_mlp` (scale/shift of the FFN after its gate, from
    an extra conditioning embedding) and `fusion` (a cross-view step run after the block).
    """

    def __init__(self, c: int, emb_dim: int, extra_cond: bool = False, fusion: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(emb_dim // 2, 4 * c))
        self.cam_mlp = nn.Sequential(SimpleGate(), nn.Linear(emb_dim // 2, 2 * c)) if extra_cond else None
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.fusion = StereoFusion(c) if fusion else None

    def forward(self, inp: Tensor, emb: Tensor, extra: Tensor | None = None) -> Tensor:
        mod = self.mlp(emb)[:, :, None, None]
        shift_att, scale_att, shift_ffn, scale_ffn = mod.chunk(4, dim=1)
        x = self.norm1.modulated(inp, scale_att, shift_att)
        x = self.sg(self.conv2(pointwise(self.conv1, x)))
        x = pointwise(self.conv3, x * self.sca(x))
        y = torch.addcmul(inp, x, self.beta)
        x = self.norm2.modulated(y, scale_ffn, shift_ffn)
        x = self.sg(pointwise(self.conv4, x))
        if self.cam_mlp is not None:
            if extra is None:
                raise ValueError("this block needs the extra conditioning embedding (cond_scalars)")
            scale_cam, shift_cam = self.cam_mlp(extra)[:, :, None, None].chunk(2, dim=1)
            x = x * (scale_cam + 1) + shift_cam
        out = torch.addcmul(y, pointwise(self.conv5, x), self.gamma)
        return self.fusion(out) if self.fusion is not None else out


def _embedding_mlp(in_dim: int, width: int) -> list[nn.Module]:
    """Linear(in, 8w) -> SimpleGate -> Linear(4w, 4w): how the original expands time and lens embeddings."""
    return [nn.Linear(in_dim, 8 * width), SimpleGate(), nn.Linear(4 * width, 4 * width)]


class ConditionalNAFNet(nn.Module):
    """U-shaped NAFNet predicting the IR-SDE noise from `(x_t, mu, t)`.

    Variants (method page, sections 2 and 8):
    - `pixel`: plain; `latent`: the intro features skip to the ending conv;
    - `stereo`: `x`/`cond` hold two views on channels; views run stacked on the batch with a cross-view
      fusion after every block; the output re-stacks them on channels;
    - `bokeh`: extra per-image scalars `cond_scalars` (B, 3) = (source lens, target lens, disparity)
      modulate every block's feed-forward.

    ``photo_stats`` > 0 (not with `bokeh`) conditions every block on that many per-photo statistics, passed as
    ``cond_scalars``: the whole input photo's ``photo_kind`` statistics (:func:`photo_statistics`), embedded
    from their logs and added to the time embedding through a zero-initialised layer, so a fresh network ignores them.
    """

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 64,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        middle_blk_num: int = 1,
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        variant: Variant = "pixel",
        photo_stats: int = 0,
        photo_kind: str = "means",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown ConditionalNAFNet variant {variant!r}; expected one of {VARIANTS}")
        if photo_stats < 0 or (photo_stats and variant == "bokeh"):
            raise ValueError(
                f"photo_stats={photo_stats} must be >= 0, and 0 for the bokeh variant (lens scalars)"
            )
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError("enc_blk_nums and dec_blk_nums must have the same length")
        self.img_channel = img_channel
        self.variant = variant
        self.intro_skip = variant == "latent"
        self.stereo = variant == "stereo"
        extra = variant == "bokeh"
        self.pad_multiple = 2 ** len(enc_blk_nums)
        emb_dim = 4 * width

        self.time_mlp = nn.Sequential(SinusoidalEmbedding(width), *_embedding_mlp(width, width))
        self.cam_embed = SinusoidalEmbedding(width) if extra else None
        self.cam_mlp = nn.Sequential(*_embedding_mlp(NUM_COND_SCALARS * width, width)) if extra else None
        self.photo_stats = int(photo_stats)
        self.photo_kind = photo_kind  # which statistics (photo_statistics) callers compute for it
        self.photo_mlp = nn.Sequential(*_embedding_mlp(photo_stats, width)) if photo_stats else None
        if self.photo_mlp is not None:
            nn.init.zeros_(self.photo_mlp[-1].weight)
            nn.init.zeros_(self.photo_mlp[-1].bias)

        def stage(c: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(NAFBlock(c, emb_dim, extra_cond=extra, fusion=self.stereo) for _ in range(n))

        self.intro = nn.Conv2d(2 * img_channel, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        c = width
        for n in enc_blk_nums:
            self.encoders.append(stage(c, n))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle_blks = stage(c, middle_blk_num)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(stage(c, n))
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)

    @torch.no_grad()
    def init_icnr_upsampling(self) -> ConditionalNAFNet:
        """Re-initialise each upsampling conv so that its PixelShuffle starts as nearest-neighbour upsampling
        (ICNR): the four sub-pixels of every output channel share one kernel.

        A freshly initialised conv + PixelShuffle gives each sub-pixel its own random kernel, a checkerboard at
        every level that a short run does not train away; in flat, strongly corrected areas (a lifted night sky)
        it shows as a plaid. Training only: the architecture and the loading of trained weights are unchanged.
        """
        for up in self.ups:
            conv, shuffle = up[0], up[1]
            factor = shuffle.upscale_factor**2
            kernel = torch.empty(conv.out_channels // factor, *conv.weight.shape[1:])
            nn.init.kaiming_uniform_(kernel, a=math.sqrt(5))  # nn.Conv2d's own default, for one sub-pixel
            conv.weight.copy_(kernel.repeat_interleave(factor, dim=0))
        return self

    def forward(
        self, x: Tensor, cond: Tensor, t: Tensor | float, cond_scalars: Tensor | None = None
    ) -> Tensor:
        """Predict the noise in `x` (= x_t) given the SDE mean `cond` at time step(s) `t`, shape (B,) or scalar."""
        batch, _, h, w = x.shape
        emb = self.time_mlp(as_batch_vector(t, batch, x.device))
        if self.photo_mlp is not None:
            emb = emb + self._photo_embedding(cond_scalars, batch).to(emb.dtype)
        extra = self._extra_embedding(cond_scalars, batch)
        if self.stereo:
            x, cond = torch.cat(x.chunk(2, dim=1), dim=0), torch.cat(cond.chunk(2, dim=1), dim=0)
            emb = torch.cat([emb, emb], dim=0)
        inp = pad_to_multiple(torch.cat([x - cond, cond], dim=1), self.pad_multiple)
        out = self._unet(inp, emb, extra)
        if out.shape[-2:] != (h, w):  # only when padded: even a no-op slice costs a copy in backward
            out = out[..., :h, :w]
        # Channels-last weights (prepare_for_inference) give NHWC maps; callers get plain NCHW back.
        return torch.cat(out.chunk(2, dim=0), dim=1) if self.stereo else out.contiguous()

    def _photo_embedding(self, cond_scalars: Tensor | None, batch: int) -> Tensor:
        """The photo statistics (B, photo_stats) as a time-embedding offset: logs, so dark photos are told apart."""
        assert self.photo_mlp is not None
        if cond_scalars is None or cond_scalars.numel() != batch * self.photo_stats:
            got = None if cond_scalars is None else tuple(cond_scalars.shape)
            raise ValueError(
                f"this network needs cond_scalars of shape (B, {self.photo_stats}): the photo's "
                f"statistics (photo_statistics); got {got} for batch {batch}"
            )
        stats = cond_scalars.reshape(batch, self.photo_stats).float()
        return self.photo_mlp(stats.clamp(1 / 255, 1).log())

    def _extra_embedding(self, cond_scalars: Tensor | None, batch: int) -> Tensor | None:
        """Embed the bokeh scalars (B, 3) like time steps, concatenate, and expand with `cam_mlp`."""
        if self.cam_mlp is None or self.cam_embed is None:
            return None
        if cond_scalars is None:
            raise ValueError(f"variant {self.variant!r} needs cond_scalars of shape (B, {NUM_COND_SCALARS})")
        scalars = cond_scalars.reshape(batch, NUM_COND_SCALARS)
        return self.cam_mlp(
            torch.cat([self.cam_embed(scalars[:, i]) for i in range(NUM_COND_SCALARS)], dim=1)
        )

    def _unet(self, x: Tensor, emb: Tensor, extra: Tensor | None) -> Tensor:
        x = intro = self.intro(x)
        skips = []
        for blocks, down in zip(self.encoders, self.downs):
            x = self._run(blocks, x, emb, extra)
            skips.append(x)
            x = down(x)
        x = self._run(self.middle_blks, x, emb, extra)
        for up, blocks, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = self._run(blocks, up(x) + skip, emb, extra)
        return self.ending(x + intro if self.intro_skip else x)

    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, emb: Tensor, extra: Tensor | None) -> Tensor:
        for block in blocks:
            x = block(x, emb, extra)
        return x
