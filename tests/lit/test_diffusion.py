import pytest
import torch

from refusion_pl.lit import DiffusionModule

TINY = {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]}
SDE = {"max_sigma": 50, "steps": 100, "schedule": "cosine", "eps": 0.005, "sampler": "posterior"}


def test_untrained_x0_model_returns_its_input():
    """The last convolution starts at zero, so x0 = mu: sampling walks back to the degraded image."""
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "x0"}).eval()
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = module.restore(lq, generator=torch.Generator().manual_seed(1))
    assert (out - lq).abs().max() < 1e-3


def test_noise_model_keeps_the_published_initialisation():
    module = DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "noise"})
    assert module.noise_model is module.net and module.net.ending.weight.abs().sum() > 0


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match=r"sde\.prediction='eps'"):
        DiffusionModule(model="pixel", nafnet=TINY, sde={**SDE, "prediction": "eps"})
