"""What the network's output means: the IR-SDE noise itself (the paper) or the clean signal, turned into noise.

The samplers and the training loss only ever see noise. With ``prediction="x0"`` the network outputs
``x_0 - mu`` and :class:`NoiseFromX0` converts it with the closed-form marginal. A network that outputs zero
then already restores the input unchanged, and the noise ``(x_t - mu) / sigma_bar_t`` that dominates at large
``t`` is exact instead of learned, so short runs sample clean images (``benchmarks/prediction.py``).
"""

from __future__ import annotations

from torch import Tensor, nn

from refusion_pl.sde import IRSDE

PREDICTIONS: tuple[str, ...] = ("noise", "x0")


class NoiseFromX0(nn.Module):
    """A noise model built from a network that predicts the residual ``x_0 - mu``."""

    def __init__(self, net: nn.Module, sde: IRSDE) -> None:
        super().__init__()
        self.net = net
        self.sde = sde
        self.pad_multiple = getattr(net, "pad_multiple", 1)
        self.photo_stats = getattr(net, "photo_stats", 0)
        self.photo_kind = getattr(net, "photo_kind", "means")

    def forward(self, xt: Tensor, mu: Tensor, t: Tensor, *args: object) -> Tensor:
        x0 = mu + self.net(xt, mu, t, *args)
        return self.sde.noise_from_x0(xt, mu, x0.to(xt.dtype), t)


def noise_model(net: nn.Module, sde: IRSDE, prediction: str = "noise") -> nn.Module:
    """``net`` itself when it predicts noise, else wrapped so that it does."""
    if prediction == "noise":
        return net
    if prediction == "x0":
        return NoiseFromX0(net, sde)
    raise ValueError(f"prediction={prediction!r} is not supported; choose one of: {', '.join(PREDICTIONS)}")
