"""Optimisers and schedules built from plain config mappings."""

from __future__ import annotations

import itertools

import pytest
import torch
from lion_pytorch import Lion
from lion_pytorch.foreach import Lion as MultiTensorLion

from refusion_pl.lit.optim import build_optimizer, build_scheduler


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_lion_and_adamw():
    lion = build_optimizer(_params(), {"name": "lion", "lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0})
    assert isinstance(lion, MultiTensorLion) and lion.defaults["lr"] == pytest.approx(1e-4)
    adamw = build_optimizer(_params(), {"name": "adamw", "lr": 2e-4, "betas": [0.9, 0.999]}, lr=3e-4)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="adam_w"):
        build_optimizer(_params(), {"name": "adam_w", "lr": 1e-4, "betas": [0.9, 0.99]})


def _trained(optimizer_cfg: dict, steps: int = 5) -> list[torch.Tensor]:
    """Parameters of a small regression after a few optimiser steps (same data and start every call)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    optimizer = build_optimizer(net.parameters(), optimizer_cfg)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("name", ["adamw", "adam", "lion"])
def test_fused_update_is_the_per_parameter_update(name):
    """`optim.fused` only changes how the update runs: the same weights come out (fp32 rounding aside)."""
    cfg = {"name": name, "lr": 1e-2, "betas": [0.9, 0.99], "weight_decay": 0.01}
    fused, looped = _trained({**cfg, "fused": True}), _trained({**cfg, "fused": False})
    moved = _trained({**cfg, "fused": False}, steps=0)
    for a, b, start in zip(fused, looped, moved, strict=True):
        assert not torch.equal(a, start)  # the steps did move the weights
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_defaults():
    """Auto (null) fuses Adam(W) unless an fp16 gradient scaler runs (Lightning clips before the step), and
    always uses lion-pytorch's multi-tensor Lion; `false` keeps the per-parameter loops."""
    adamw = {"name": "adamw", "lr": 1e-4, "betas": [0.9, 0.999]}
    assert build_optimizer(_params(), adamw).defaults["fused"] is True
    assert build_optimizer(_params(), adamw, grad_scaling=True).defaults["fused"] is False
    assert build_optimizer(_params(), {**adamw, "fused": False}).defaults["fused"] is False
    assert build_optimizer(_params(), {**adamw, "fused": True}, grad_scaling=True).defaults["fused"] is True
    lion = {"name": "lion", "lr": 1e-4, "betas": [0.9, 0.99]}
    assert isinstance(build_optimizer(_params(), lion), MultiTensorLion)
    assert type(build_optimizer(_params(), {**lion, "fused": False})) is Lion


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", ["adamw", "adam", "lion"])
def test_a_step_without_gradients_changes_nothing(name, fused):
    """A skipped step (the non-finite guard drops every gradient) must not fail nor move the weights, in either
    implementation; lion-pytorch's multi-tensor step alone would fail on the empty tensor list."""
    cfg = {"name": name, "lr": 1e-2, "betas": [0.9, 0.99], "weight_decay": 0.01, "fused": fused}
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    optimizer = build_optimizer(params, cfg)
    params[0].grad = torch.ones(3)
    optimizer.step()  # one real step first, so state exists
    after_one = [p.detach().clone() for p in params]
    optimizer.zero_grad(set_to_none=True)
    assert optimizer.step(lambda: torch.tensor(1.0)) == 1.0
    for p, before in zip(params, after_one, strict=True):
        assert torch.equal(p.detach(), before)
    assert not torch.equal(after_one[0], torch.ones(3))  # the real step did move the weights


def test_optimizer_state_resumes_across_fused_settings():
    """A checkpoint's optimiser state (saved fused or not) loads into either implementation and continues."""
    cfg = {"name": "adamw", "lr": 1e-2, "betas": [0.9, 0.999]}
    params = _params()
    looped = build_optimizer(params, {**cfg, "fused": False})
    params[0].grad = torch.ones(3)
    looped.step()
    fused = build_optimizer(params, {**cfg, "fused": True})
    fused.load_state_dict(looped.state_dict())
    fused.step()
    assert float(fused.state[params[0]]["step"]) == 2


def test_adam_is_plain_adam_with_coupled_weight_decay():
    cfg = {"name": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.01, "lr_scale": 20}
    adam = build_optimizer(_params(), cfg)
    assert type(adam) is torch.optim.Adam  # not AdamW (a subclass of Adam in recent torch)
    assert adam.defaults["lr"] == pytest.approx(2e-3) and adam.defaults["weight_decay"] == 0.01


def test_optim_adam_composes(compose_config):
    cfg = compose_config("optim=adam", "scheduler=multistep")
    assert cfg.optim.name == "adam" and cfg.scheduler.name == "multistep"


def _lrs(cfg, steps=100):
    opt = build_optimizer(_params(), {"name": "adamw", "lr": 1.0, "betas": [0.9, 0.999]})
    sched = build_scheduler(opt, cfg, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt.param_groups[0]["lr"]


def test_cosine_anneals_to_eta_min_after_warmup():
    lrs, final = _lrs({"name": "cosine", "eta_min": 1e-3, "warmup_steps": 10})
    assert lrs[0] < 0.01 and lrs[9] < lrs[10]  # linear warm-up
    assert lrs[10] == pytest.approx(1.0)
    assert final == pytest.approx(1e-3, rel=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_multistep_and_constant():
    lrs, _ = _lrs({"name": "multistep", "milestones": [0.5, 0.75], "gamma": 0.5})
    assert lrs[49] == pytest.approx(1.0) and lrs[50] == pytest.approx(0.5) and lrs[75] == pytest.approx(0.25)
    lrs, final = _lrs({"name": "constant"})
    assert set(lrs) == {1.0} and final == 1.0


def test_lr_scale_multiplies_the_chosen_optimisers_rate():
    cfg = {"name": "lion", "lr": 1e-4, "betas": [0.9, 0.99], "lr_scale": 10}
    assert build_optimizer(_params(), cfg).defaults["lr"] == pytest.approx(1e-3)
    assert build_optimizer(_params(), cfg, lr=2e-4).defaults["lr"] == pytest.approx(2e-3)
