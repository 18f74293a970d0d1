import pytest
import torch
from torch import nn

from refusion_pl.models import ConditionalNAFNet, NoiseFromX0, noise_model
from refusion_pl.sampling import sample
from refusion_pl.sde import IRSDE


class Constant(nn.Module):
    """A 'network' that predicts the same x0 - mu everywhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, mu, t):
        return torch.full_like(x, self.value)


def test_noise_prediction_is_the_network_itself():
    net, sde = ConditionalNAFNet(width=8, enc_blk_nums=[1], dec_blk_nums=[1]), IRSDE(50, 10)
    assert noise_model(net, sde, "noise") is net


def test_unknown_prediction_names_the_choices():
    with pytest.raises(ValueError, match=r"prediction='eps'.*noise, x0"):
        noise_model(Constant(0.0), IRSDE(50, 10), "eps")


def test_x0_network_output_becomes_the_marginal_noise():
    sde = IRSDE(50, 100, "cosine", 0.005)
    g = torch.Generator().manual_seed(3)
    x0, mu, z = (torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([5, 80])
    xt = sde.forward_sample(x0, mu, t, z)

    class Oracle(nn.Module):
        def forward(self, x, m, tt):
            return x0 - m

    torch.testing.assert_close(NoiseFromX0(Oracle(), sde)(xt, mu, t), z, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["sde", "ode", "posterior"])
def test_zero_x0_network_restores_the_input_unchanged(sampler):
    """A network that outputs zero predicts x0 = mu: every sampler walks back to the degraded input."""
    sde = IRSDE(50, 100, "cosine", 0.005)
    mu = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    out = sample(
        sde, NoiseFromX0(Constant(0.0), sde), mu, sampler=sampler, generator=torch.Generator().manual_seed(0)
    )
    assert (out - mu).abs().max() < 0.02


def test_x0_network_output_steers_the_sample():
    sde = IRSDE(50, 100, "cosine", 0.005)
    mu = torch.full((1, 3, 16, 16), 0.3)
    out = sample(sde, NoiseFromX0(Constant(0.4), sde), mu, sampler="ode")
    torch.testing.assert_close(out, torch.full_like(mu, 0.7), atol=0.02, rtol=0)


def test_wrapper_keeps_the_padding_multiple_for_tiling():
    net = ConditionalNAFNet(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    assert NoiseFromX0(net, IRSDE(50, 10)).pad_multiple == net.pad_multiple == 4
