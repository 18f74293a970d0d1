"""U-Net latent autoencoder of latent Refusion (stage 1).

The decoder consumes the encoder's hidden maps (U-Net skips), so a latent decodes *through the degraded
image's details*: this is what lets a small latent carry only what restoration must change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from refusion_pl.models.layers import LayerNorm2d, is_channels_last, pad_to_multiple, pointwise

#: How `UNetAutoencoder.decode_restored` turns a restored latent into an image.
DECODE_MODES = ("direct", "residual")


class AEHidden(list):
    """The encoder's hidden maps (a plain list of tensors, in encoder order) plus the unpadded input size.

    `decode` reads `image_size` to crop its output back; plain lists still work (then pass `size=`).
    `encode` also records its input and latent, which residual decoding (`decode_restored`) starts from.
    """

    def __init__(
        self,
        maps: Sequence[Tensor] = (),
        image_size: tuple[int, int] | None = None,
        image: Tensor | None = None,
        latent: Tensor | None = None,
    ) -> None:
        super().__init__(maps)
        self.image_size = image_size
        self.image = image
        self.latent = latent


class ConvAct(nn.Module):
    """3x3 conv (no bias) followed by SiLU."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.proj(x))


class ResBlock(nn.Module):
    """Two ConvAct layers plus a (1x1-projected when channels change) identity path."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.block1 = ConvAct(dim_in, dim_out)
        self.block2 = ConvAct(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1, bias=False) if dim_in != dim_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if isinstance(self.res_conv, nn.Identity) else pointwise(self.res_conv, x)
        return self.block2(self.block1(x)) + identity


class LinearAttention(nn.Module):
    """Linear (softmax-kernel) attention: cost linear in the number of pixels (q softmaxed over features,
    k over positions)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), LayerNorm2d(dim))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        q, k, v = (
            rearrange(p, "b (h c) x y -> b h c (x y)", h=self.heads)
            for p in pointwise(self.to_qkv, x).chunk(3, dim=1)
        )
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)  # as in the original: keeps the context sum an average, whatever the image size
        context = k @ v.transpose(-1, -2)  # b h d e
        out = context.transpose(-1, -2) @ q  # b h e n
        return self.to_out(rearrange(out, "b h c (x y) -> b (h c) x y", x=h, y=w))


class ResidualLinearAttention(nn.Module):
    """`x + attn(norm(x))`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.body = LinearAttention(dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(self.norm(x))


class UpConv(nn.Module):
    """Optional nearest 2x upsampling, then a 3x3 conv.

    `subpixel` (default on) computes the upsampling conv at the input's resolution (`upsample_conv`): the same
    function with 2.25x fewer multiply-adds. Off, it runs as the original does (the benchmarks' baseline).
    """

    def __init__(self, dim_in: int, dim_out: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.Identity()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=upsample)
        self.subpixel = True

    def forward(self, x: Tensor) -> Tensor:
        if self.subpixel and isinstance(self.upsample, nn.Upsample):
            return upsample_conv(self.conv, x)
        return self.conv(self.upsample(x))


def upsample_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """`conv(nearest_upsample_2x(x))` for a 3x3, padding-1 `conv`, without building the upsampled map.

    Output pixel `(2i + a, 2j + b)` sees input rows `i - 1 + a .. i + a` and columns `j - 1 + b .. j + b`
    only, with the 3x3 taps that fall on the same input pixel summed: per phase `(a, b)` a 2x2 conv, 4 instead
    of 9 multiply-adds per output and input channel. The four phases are one conv with 4x the output channels,
    interleaved afterwards. Zero padding matches too: the upsampled map's zero border is the input's.
    """
    c_out, h, w = conv.out_channels, x.shape[-2], x.shape[-1]
    weight = _phase_taps(_phase_taps(conv.weight, dim=2), dim=4)  # (out, in, a, 2, b, 2)
    weight = weight.permute(0, 2, 4, 1, 3, 5).reshape(4 * c_out, conv.in_channels, 2, 2)
    bias = None if conv.bias is None else conv.bias.repeat_interleave(4)
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, bias).unflatten(1, (c_out, 2, 2))
    memory_format = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    out = torch.empty(
        x.shape[0], c_out, 2 * h, 2 * w, dtype=phases.dtype, device=x.device, memory_format=memory_format
    )
    for a in (0, 1):
        for b in (0, 1):
            out[:, :, a::2, b::2] = phases[:, :, a, b, a : a + h, b : b + w]
    return out


def _phase_taps(weight: Tensor, dim: int) -> Tensor:
    """Fold the 3 taps along `dim` into 2 per upsampling phase: phase 0 `(w0, w1 + w2)`, phase 1
    `(w0 + w1, w2)`; the new phase axis goes at `dim`, the 2 taps just after it."""
    w0, w1, w2 = weight.unbind(dim)
    phase0 = torch.stack([w0, w1 + w2], dim=dim)
    phase1 = torch.stack([w0 + w1, w2], dim=dim)
    return torch.stack([phase0, phase1], dim=dim)


class EncoderLevel(nn.Module):
    """Two ResBlocks, attention at the deepest level only, then a stride-2 conv (3x3 conv at the deepest)."""

    def __init__(self, dim_in: int, dim_out: int, deepest: bool) -> None:
        super().__init__()
        self.res1 = ResBlock(dim_in, dim_in)
        self.res2 = ResBlock(dim_in, dim_in)
        self.attn = ResidualLinearAttention(dim_in) if deepest else nn.Identity()
        self.down = (
            nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False)
            if deepest
            else nn.Conv2d(dim_in, dim_out, 4, stride=2, padding=1)
        )


class DecoderLevel(nn.Module):
    """Mirror of `EncoderLevel`: each ResBlock first concatenates one encoder hidden map."""

    def __init__(self, dim_in: int, dim_out: int, skip_dim: int, deepest: bool, top: bool) -> None:
        super().__init__()
        self.res1 = ResBlock(dim_in + skip_dim, dim_in)
        self.res2 = ResBlock(dim_in + skip_dim, dim_in)
        self.attn = ResidualLinearAttention(dim_in) if deepest else nn.Identity()
        self.up = UpConv(dim_in, dim_out, upsample=not top)


class UNetAutoencoder(nn.Module):
    """Encode an image to a `2 ** (len(ch_mult) - 1)`-times smaller latent plus U-Net hidden maps; decode both.

    Inputs are reflect-padded to a multiple of `2 ** len(ch_mult)`; `decode` crops back to the input size.
    Only the deepest level holds (linear) attention; the upper levels are purely convolutional.
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        ch: int = 8,
        ch_mult: Sequence[int] = (4, 8, 8, 16),
        embed_dim: int = 8,
        decode_mode: str = "direct",
    ) -> None:
        super().__init__()
        if decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode={decode_mode!r}; choose one of: {', '.join(DECODE_MODES)}")
        self.decode_mode = decode_mode
        dims = [ch * m for m in (1, *ch_mult)]
        depth = len(ch_mult)
        self.pad_multiple = 2**depth
        self.init_conv = nn.Conv2d(in_ch, ch, 3, padding=1, bias=False)
        self.encoder = nn.ModuleList(
            EncoderLevel(dims[i], dims[i + 1], deepest=i == depth - 1) for i in range(depth)
        )
        self.latent_conv = nn.Conv2d(dims[-1], embed_dim, 1, bias=False)
        self.post_latent_conv = nn.Conv2d(embed_dim, dims[-1], 1, bias=False)
        self.decoder = nn.ModuleList(
            DecoderLevel(dims[i + 1], dims[i], dims[i], deepest=i == depth - 1, top=i == 0)
            for i in reversed(range(depth))
        )
        self.final_conv = nn.Conv2d(ch, out_ch, 3, padding=1)

    def encode(self, x: Tensor) -> tuple[Tensor, AEHidden]:
        """Return the latent and the hidden maps (init conv output, then every ResBlock/attention output)."""
        size = (x.shape[-2], x.shape[-1])
        image = x
        x = self.init_conv(pad_to_multiple(x, self.pad_multiple, mode="reflect"))
        hidden = AEHidden([x], image_size=size, image=image)
        for level in self.encoder:
            x = level.res1(x)
            hidden.append(x)
            x = level.attn(level.res2(x))
            hidden.append(x)
            x = level.down(x)
        hidden.latent = pointwise(self.latent_conv, x)
        return hidden.latent, hidden

    def decode(self, latent: Tensor, hidden: Sequence[Tensor], size: tuple[int, int] | None = None) -> Tensor:
        """Decode `latent` through `hidden`; crop to `size` (default: the size recorded by `encode`)."""
        skips = list(hidden)
        x = pointwise(self.post_latent_conv, latent)
        for level in self.decoder:
            x = level.res1(_cat(x, skips.pop()))
            x = level.attn(level.res2(_cat(x, skips.pop())))
            x = level.up(x)
        out = self.final_conv(x + skips[0])
        size = size if size is not None else getattr(hidden, "image_size", None)
        return out if size is None else out[..., : size[0], : size[1]]

    def decode_restored(self, latent: Tensor, hidden: AEHidden) -> Tensor:
        """Decode a restored latent as `decode_mode` says: ``direct`` (the original) or ``residual``.

        Residual decoding returns the encoded image plus what the latent's change does to the decoding,
        ``image + decode(latent) - decode(encoded latent)``. Wherever restoration leaves the latent alone the
        input comes back exactly, instead of through the decoder's reconstruction error (a small autoencoder
        loses several dB on a photo that needs no restoring). It costs one more decode.
        """
        restored = self.decode(latent, hidden)
        if self.decode_mode == "direct":
            return restored
        if hidden.image is None or hidden.latent is None:
            raise ValueError("residual decoding needs the hidden maps of `encode` (they carry its input)")
        return hidden.image + restored - self.decode(hidden.latent, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct `x` (encode then decode)."""
        return self.decode(*self.encode(x))

    def use_subpixel_upsampling(self, enabled: bool = True) -> UNetAutoencoder:
        """Compute the decoder's upsampling convs at low resolution (`upsample_conv`, the default) or as the
        original does (upsample, then convolve). Same function, same weights; only the speed differs."""
        for module in self.modules():
            if isinstance(module, UpConv):
                module.subpixel = enabled
        return self

    @torch.no_grad()
    def init_signal_preserving(self) -> UNetAutoencoder:
        """Re-initialise for training from scratch so that the latent matters from the first step.

        PyTorch's default conv initialisation shrinks activations about sqrt(3)x per conv and its random biases
        then dominate: through this unnormalised stack a fresh latent changes by ~0.005 between an image and its
        half-bright copy, and the decoder's output moves by ~1e-7 when the latent changes. Both ends of the
        latent path start dead, so stage 1 learns to decode through the skips alone and the diffusion stage has
        nothing to restore with. Unit-gain weights (std 1/sqrt(fan_in)) and zero biases keep the image in the
        latent (~0.4) and the output sensitive to it (~0.01). Only the starting point changes: architecture and
        checkpoint keys are those of the original, so loading trained weights is unaffected.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        return self


def _cat(x: Tensor, skip: Tensor) -> Tensor:
    return torch.cat([x, skip], dim=1)
