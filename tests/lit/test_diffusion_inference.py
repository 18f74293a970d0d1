"""DiffusionModule: the inference switches reach both networks, in restore/evaluate and in validation."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from refusion_pl.lit.diffusion import DiffusionModule
from refusion_pl.models.inference import is_compiled
from refusion_pl.restore import RestoreError, inference_settings

TINY = {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}
AE_TINY = {"ch": 4, "ch_mult": [1, 2], "embed_dim": 4}
SDE = {"max_sigma": 50, "steps": 4, "schedule": "cosine", "eps": 0.005, "sampler": "ode"}


def latent_module(**val: object) -> DiffusionModule:
    torch.manual_seed(0)
    module = DiffusionModule(model="latent", nafnet=TINY, autoencoder=AE_TINY, sde=SDE, val=dict(val))
    for name, parameter in module.net.named_parameters():
        if name.endswith((".beta", ".gamma")):  # fresh blocks are identities; make them count
            torch.nn.init.constant_(parameter, 0.5)
    return module


def nhwc(net: torch.nn.Module) -> bool:
    weight = next(p for p in net.parameters() if p.dim() == 4 and p.shape[-1] == 3)
    return not weight.is_contiguous()


@pytest.mark.parametrize("channels_last", [True, False])
def test_prepare_for_inference_switches_both_networks_and_keeps_outputs(channels_last: bool) -> None:
    module = latent_module()
    lq = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        expected = module.restore(lq, generator=torch.Generator().manual_seed(0))
        module.prepare_for_inference("cpu", {"channels_last": channels_last, "compile": False})
        out = module.restore(lq, generator=torch.Generator().manual_seed(0))
    assert nhwc(module.net) is channels_last and nhwc(module.autoencoder) is channels_last
    assert not is_compiled(module.net)
    assert ((out - expected).abs().max() / expected.abs().max()).item() < 1e-4


@pytest.mark.parametrize("channels_last", [True, False])
def test_validation_runs_channels_last_only_while_validating(channels_last: bool) -> None:
    module = latent_module(channels_last=channels_last)
    module.on_validation_epoch_start()
    assert nhwc(module.net) is channels_last and nhwc(module.autoencoder) is channels_last
    module.on_validation_epoch_end()
    assert not nhwc(module.net) and not nhwc(module.autoencoder)  # training stays NCHW


def test_restore_config_inference_node_is_checked_before_loading() -> None:
    assert inference_settings(OmegaConf.create({})) == {"compile": None, "channels_last": None}
    cfg = OmegaConf.create({"inference": {"compile": False, "channels_last": True}})
    assert inference_settings(cfg) == {"compile": False, "channels_last": True}
    with pytest.raises(RestoreError, match=r"inference\.channels_last='fast'"):
        inference_settings(OmegaConf.create({"inference": {"channels_last": "fast"}}))


def test_channels_last_training_keeps_loss_gradients_and_its_format_through_validation() -> None:
    """Same loss and gradients on the same draw (randn_like follows the memory layout, so draws are taken NCHW)."""
    from refusion_pl.lit.speed import ChannelsLast

    gen = torch.Generator().manual_seed(0)
    xt, mu, x0 = (torch.rand(2, 4, 8, 8, generator=gen) for _ in range(3))
    t = torch.tensor([1, 3])
    results = []
    for convert in (False, True):
        module = latent_module()
        if convert:
            ChannelsLast().on_fit_start(None, module)
            assert nhwc(module.net) and nhwc(module.autoencoder)
        loss = module.sde.training_loss(module.net(xt, mu, t), xt, x0, mu, t)
        loss.backward()
        results.append((loss.detach(), module.net.intro.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)
    module.on_validation_epoch_start()
    module.on_validation_epoch_end()
    assert nhwc(module.net)  # validation hands the training format back


def test_trained_checkpoints_restore_with_an_edge_margin_by_default(compose_config) -> None:
    """`val.edge_margin` (16 in conf/train.yaml) reaches the module, so figures, validation and `restore`
    (null: the checkpoint's) use it; a module built without it (converted originals) restores without one."""
    from refusion_pl.train import build_module

    module = build_module(compose_config("model=pixel"), "diffusion", None)
    assert module.edge_margin == 16 and module.samples == 1
    assert DiffusionModule(model="pixel", nafnet={"width": 8}).edge_margin == 0
