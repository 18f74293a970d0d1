"""Small building blocks shared by the noise network and the autoencoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an NCHW tensor, with a scale `g` and no bias.

    The original implementation normalises with the biased variance and no shift; matching it exactly
    is what lets its checkpoints load.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if is_channels_last(x):
            # NHWC memory: the channels of a pixel are contiguous, so one fused layer_norm kernel does it all.
            normed = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.g.reshape(-1), None, self.eps)
            return normed.permute(0, 3, 1, 2)
        var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.g

    def modulated(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """`self(x) * (scale + 1) + shift` for per-image `(B, C, 1, 1)` scale and shift.

        For one NHWC image (sampling) the modulation folds into the layer_norm's own weight and bias: one pass
        over the map instead of three.
        """
        if x.shape[0] == 1 and is_channels_last(x):
            # float32 weight and bias: under autocast scale/shift are half precision, and layer_norm takes a
            # half-precision input only with float32 (or matching) parameters
            weight = (self.g * (scale + 1)).reshape(-1).float()
            bias = shift.reshape(-1).float()
            normed = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], weight, bias, self.eps)
            return normed.permute(0, 3, 1, 2)
        return self(x) * (scale + 1) + shift


def is_channels_last(x: Tensor) -> bool:
    """True for a 4-D tensor stored NHWC with more than one pixel (1x1 maps are ambiguous: keep NCHW code)."""
    return (
        x.dim() == 4
        and x.shape[-2] * x.shape[-1] > 1
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 convolution; on NHWC memory computed as one matrix multiply over channels.

    On NHWC memory the pixels are rows of a (pixels, channels) matrix, so `F.linear` needs no im2col and
    no layout copies (PyTorch's CPU conv falls back to a slow path for 1x1 kernels on one thread).
    """
    if not is_channels_last(x):
        return conv(x)
    out = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
    return out.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """Split the channels (dim 1) in two halves and multiply them: NAFNet's parameter-free activation."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of scalars (time steps, lens parameters): `[sin, cos]` of `dim` channels.

    Pure tensor ops, so it traces under torch.compile and CUDA graphs without host syncs.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"sinusoidal embedding dimension must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, values: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32) * -scale)
        args = values.reshape(-1, 1).to(torch.float32) * freqs
        return torch.cat([args.sin(), args.cos()], dim=-1)


def as_batch_vector(values: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Turn a per-image value given as a python number, a 0-d tensor, (B,) or (B, 1, 1, 1) into shape (B,).

    Shape-only logic, so it does not block compilation.
    """
    t = torch.as_tensor(values, device=device)
    t = t.reshape(-1)
    return t.expand(batch) if t.shape[0] == 1 else t


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "constant") -> Tensor:
    """Pad at the bottom/right so that H and W are multiples of `multiple`.

    `reflect` needs the pad to be smaller than the size; for tiny inputs it falls back to `replicate`
    on that axis instead of failing.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if mode != "reflect":
        return F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x
    x = F.pad(x, (0, pw, 0, 0), mode="reflect" if pw < w else "replicate") if pw else x
    return F.pad(x, (0, 0, 0, ph), mode="reflect" if ph < h else "replicate") if ph else x
