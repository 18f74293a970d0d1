"""Restoring an image with a trained model: pure torch, shared by validation, figures, restore and evaluate."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from refusion_pl.models.nafnet import photo_statistics
from refusion_pl.sampling import sample
from refusion_pl.sde import IRSDE


class WithScalars(nn.Module):
    """A noise model with per-image scalars bound, so samplers and tiling call it as ``model(x, mu, t)``."""

    def __init__(self, net: nn.Module, scalars: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.scalars = scalars
        self.pad_multiple = getattr(net, "pad_multiple", 1)

    def forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, mu, t, self.scalars.to(x.device, torch.float32))


def with_scalars(net: nn.Module, scalars: torch.Tensor | None) -> nn.Module:
    """``net`` itself without scalars, else ``net`` with them bound."""
    return net if scalars is None else WithScalars(net, scalars)


def photo_scalars(net: nn.Module, lq: torch.Tensor, cond_scalars: torch.Tensor | None) -> torch.Tensor | None:
    """``cond_scalars`` as given, else for ``photo_stats`` networks the statistics of the whole ``lq`` they take
    (``net.photo_kind``): computed before margins and tiles, so every tile is told how dark its whole photo is."""
    count, kind = getattr(net, "photo_stats", 0), getattr(net, "photo_kind", "means")
    if cond_scalars is not None or not count:
        return cond_scalars
    stats = photo_statistics(lq, kind)
    if stats.shape[-1] != count:
        raise ValueError(
            f"the network takes {count} photo statistics, but this {lq.shape[1]}-channel input gives "
            f"{stats.shape[-1]} ({kind})"
        )
    return stats


def add_edge_margin(image: torch.Tensor, margin: int) -> tuple[torch.Tensor, int]:
    """``image`` mirrored outwards by ``margin`` pixels on every side (less for images too small to mirror), and
    the margin used; ``remove_edge_margin`` crops it off again.

    Networks trained on crops see their zero-padded borders on every side yet still get the outermost pixels
    wrong (a bright or tinted frame, up to ~4x the error inside); restoring a mirrored margin puts those borders
    outside the photo.
    """
    margin = max(0, min(int(margin), image.shape[-2] - 1, image.shape[-1] - 1))
    if margin == 0:
        return image, 0
    return torch.nn.functional.pad(image, (margin,) * 4, mode="reflect"), margin


def remove_edge_margin(image: torch.Tensor, margin: int) -> torch.Tensor:
    """``image`` without the ``margin`` pixels that ``add_edge_margin`` added on every side."""
    if margin == 0:
        return image
    return image[..., margin : image.shape[-2] - margin, margin : image.shape[-1] - margin]


class ShiftJitter(nn.Module):
    """A noise model evaluated, at every call, on its inputs shifted by a fresh offset below ``period`` pixels.

    A network with ``k`` downsamplings works on a grid of ``period = 2 ** k`` pixels, and a small one leaves
    that grid in what it predicts. Sampling calls it once per step: evaluated at the same phase every time, the
    grid adds up into a visible plaid (latent models: 64-px bands); at a fresh phase every step it averages
    out. The shift mirrors ``dx`` / ``dy`` pixels in at the top left and rounds the far sides up to a multiple
    of ``period`` the same way, so the network pads no zeros. Offsets come from their own generator seeded with
    ``seed``: the result is as reproducible as without, and the sampler's noise draws are unchanged.
    """

    def __init__(self, net: nn.Module, period: int, seed: int = 0) -> None:
        super().__init__()
        self.net = net
        self.period = int(period)
        self.pad_multiple = self.period
        self.offsets = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, *args: Any) -> torch.Tensor:
        dy, dx = (int(v) for v in torch.randint(self.period, (2,), generator=self.offsets))
        height, width = x.shape[-2:]
        pads = (dx, -(width + dx) % self.period, dy, -(height + dy) % self.period)
        if not any(pads):
            return self.net(x, mu, t, *args)
        mode = "reflect" if max(pads[:2]) < width and max(pads[2:]) < height else "replicate"
        x, mu = (torch.nn.functional.pad(v, pads, mode=mode) for v in (x, mu))
        return self.net(x, mu, t, *args)[..., dy : dy + height, dx : dx + width]


def sample_mean(
    sde: IRSDE, net: nn.Module, mu: torch.Tensor, samples: int = 1, shift_jitter: bool = False, **how: Any
) -> torch.Tensor:
    """The mean of ``samples`` reverse-SDE draws from ``mu`` (drawn one after another from ``how['generator']``).

    Each draw's error has a random part (latent models: colour blotches that move with the seed); averaging keeps
    what the draws agree on, an estimate of the posterior mean: higher PSNR, less blotchy, less sharp.
    At ``how['temperature'] == 0`` every draw is the same deterministic path, so it is sampled once (unless
    ``shift_jitter`` gives each draw its own shifts, ``ShiftJitter``, whose mean then smooths the grid further).
    """
    if samples < 1:
        raise ValueError(f"samples={samples!r} must be >= 1")
    if how.get("temperature", 1.0) == 0 and not shift_jitter:
        samples = 1
    period = int(getattr(net, "pad_multiple", 1))

    def draw(index: int) -> torch.Tensor:
        model = ShiftJitter(net, period, seed=index) if shift_jitter and period > 1 else net
        return sample(sde, model, mu, **how)

    total = draw(0)
    for index in range(1, samples):
        total = total + draw(index)  # out of place: a draw may share memory with mu
    return total / samples


@torch.no_grad()
def restore(
    sde: IRSDE,
    net: nn.Module,
    lq: torch.Tensor,
    autoencoder: nn.Module | None = None,
    sampler: str = "sde",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond_scalars: torch.Tensor | None = None,
    spacing: str = "ou",
    edge_margin: int = 0,
    samples: int = 1,
    temperature: float = 1.0,
    shift_jitter: bool = False,
) -> torch.Tensor:
    """Sample the reverse IR-SDE from the degraded image (or its latent) and return the restored image in [0, 1].

    Latent models encode LQ once, diffuse in the latent space with the LQ latent as the SDE's mean, and decode
    through the LQ's full-resolution skip features; no GT is needed. ``cond_scalars`` (B, 3) condition bokeh
    networks on their lens settings (``photo_stats`` networks: the photo's means unless given); ``spacing`` picks
    the timesteps of fewer-step sampling (``sampling.sample``);
    ``edge_margin`` restores a mirrored margin around the image and crops it off (``add_edge_margin``);
    ``samples`` > 1 averages that many draws before decoding (``sample_mean``); ``temperature`` scales the
    sampler's noise (``sampling.sample``; 0: deterministic); ``shift_jitter`` evaluates the network at a fresh
    grid phase every step (``ShiftJitter``).
    """
    how = dict(
        sampler=sampler,
        steps=steps,
        generator=generator,
        progress=progress,
        spacing=spacing,
        temperature=temperature,
        shift_jitter=shift_jitter,
    )
    cond_scalars = photo_scalars(net, lq, cond_scalars)
    if edge_margin:
        padded, used = add_edge_margin(lq, edge_margin)
        restored = restore(sde, net, padded, autoencoder, cond_scalars=cond_scalars, samples=samples, **how)
        return remove_edge_margin(restored, used)
    net = with_scalars(net, cond_scalars)
    if autoencoder is None:
        return sample_mean(sde, net, lq, samples, **how).clamp(0, 1)
    latent, hidden = autoencoder.encode(lq)
    sampled = sample_mean(sde, net, latent, samples, **how)
    return autoencoder.decode_restored(sampled, hidden).clamp(0, 1)
