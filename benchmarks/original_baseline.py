"""The yardstick of `bench.py`: the original implementation's noise network and ODE sampler as it runs them.

Written from the method description (`../shared/docs/refusion-method.md`, sections 1-2), not copied: plain eager
fp32 NCHW, the channel LayerNorm as separate `var` and `mean` reductions, the time embedding expanded by every
block into a `(B, 4c, 1, 1)` tensor, blocks chained through `[x, t]` lists, a `torch.tensor([t])` made per step
and the reverse ODE step written from the SDE tables. Parameter names equal `ConditionalNAFNet`'s, so the same
weights load into both (`load_state_dict(strict=True)`); `bench.py` checks that the outputs agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refusion_pl.sde import IRSDE


class ChannelLayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class SimpleGate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device) * -scale)
        args = x[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class Block(nn.Module):
    def __init__(self, c: int, time_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(time_dim // 2, c * 4))
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = ChannelLayerNorm(c)
        self.norm2 = ChannelLayerNorm(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        inp, time = x
        emb = self.mlp(time)
        shift_att, scale_att, shift_ffn, scale_ffn = emb.reshape(*emb.shape, 1, 1).chunk(4, dim=1)
        x_ = self.norm1(inp) * (scale_att + 1) + shift_att
        x_ = self.sg(self.conv2(self.conv1(x_)))
        x_ = self.conv3(x_ * self.sca(x_))
        y = inp + x_ * self.beta
        x_ = self.norm2(y) * (scale_ffn + 1) + shift_ffn
        x_ = self.conv5(self.sg(self.conv4(x_)))
        return [y + x_ * self.gamma, time]


class OriginalNAFNet(nn.Module):
    """Pixel (`intro_skip=False`) and latent (`intro_skip=True`) ConditionalNAFNet, eager NCHW."""

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 64,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        middle_blk_num: int = 1,
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        intro_skip: bool = False,
    ) -> None:
        super().__init__()
        self.intro_skip = intro_skip
        time_dim = width * 4
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(width),
            nn.Linear(width, time_dim * 2),
            SimpleGate(),
            nn.Linear(time_dim, time_dim),
        )
        self.intro = nn.Conv2d(2 * img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = (nn.ModuleList() for _ in range(4))
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[Block(chan, time_dim) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[Block(chan, time_dim) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[Block(chan, time_dim) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp: Tensor, cond: Tensor, time: Tensor | int) -> Tensor:
        if isinstance(time, (int, float)):
            time = torch.tensor([time]).to(inp.device)
        x = torch.cat([inp - cond, cond], dim=1)
        t = self.time_mlp(time)
        _, _, h, w = x.shape
        x = F.pad(x, (0, (-w) % self.padder_size, 0, (-h) % self.padder_size))
        x = intro = self.intro(x)
        encs = []
        for encoder, down in zip(self.encoders, self.downs):
            x, _ = encoder([x, t])
            encs.append(x)
            x = down(x)
        x, _ = self.middle_blks([x, t])
        for decoder, up, enc_skip in zip(self.decoders, self.ups, encs[::-1]):
            x = up(x) + enc_skip
            x, _ = decoder([x, t])
        x = self.ending(x + intro if self.intro_skip else x)
        return x[..., :h, :w]


@torch.no_grad()
def original_reverse_ode(sde: IRSDE, net: nn.Module, mu: Tensor, x_T: Tensor) -> Tensor:
    """The original's probability-flow loop over all `T` steps: one network call and one Euler step each."""
    x = x_T.clone()
    thetas, sigmas, sigma_bars = sde.thetas, sde.sigmas, sde.sigma_bars
    for t in reversed(range(1, sde.T + 1)):
        noise = net(x, mu, t)
        score = -noise / sigma_bars[t]
        drift = (thetas[t] * (mu - x) - 0.5 * sigmas[t] ** 2 * score) * sde.dt
        x = x - drift
    return x
