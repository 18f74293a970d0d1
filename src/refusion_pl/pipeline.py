"""Restoring an image with a trained model: pure torch, shared by validation, figures, restore and evaluate."""

from __future__ import annotations

import torch
from torch import nn

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
) -> torch.Tensor:
    """Sample the reverse IR-SDE from the degraded image (or its latent) and return the restored image in [0, 1].

    Latent models encode LQ once, diffuse in the latent space with the LQ latent as the SDE's mean, and decode
    through the LQ's full-resolution skip features; no GT is needed. ``cond_scalars`` (B, 3) condition bokeh
    networks on their lens settings; ``spacing`` picks the timesteps of fewer-step sampling (``sampling.sample``).
    """
    net = with_scalars(net, cond_scalars)
    if autoencoder is None:
        restored = sample(
            sde,
            net,
            lq,
            sampler=sampler,
            steps=steps,
            generator=generator,
            progress=progress,
            spacing=spacing,
        )
        return restored.clamp(0, 1)
    latent, hidden = autoencoder.encode(lq)
    sampled = sample(
        sde,
        net,
        latent,
        sampler=sampler,
        steps=steps,
        generator=generator,
        progress=progress,
        spacing=spacing,
    )
    return autoencoder.decode_restored(sampled, hidden).clamp(0, 1)
