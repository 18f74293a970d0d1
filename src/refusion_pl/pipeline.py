"""Restoring an image with a trained model: pure torch, shared by validation, figures, restore and evaluate."""

from __future__ import annotations

import torch
from torch import nn

from refusion_pl.sampling import sample
from refusion_pl.sde import IRSDE


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
) -> torch.Tensor:
    """Sample the reverse IR-SDE from the degraded image (or its latent) and return the restored image in [0, 1].

    Latent models encode LQ once, diffuse in the latent space with the LQ latent as the SDE's mean, and decode
    through the LQ's full-resolution skip features; no GT is needed.
    """
    if autoencoder is None:
        restored = sample(sde, net, lq, sampler=sampler, steps=steps, generator=generator, progress=progress)
        return restored.clamp(0, 1)
    latent, hidden = autoencoder.encode(lq)
    sampled = sample(sde, net, latent, sampler=sampler, steps=steps, generator=generator, progress=progress)
    return autoencoder.decode(sampled, hidden).clamp(0, 1)
