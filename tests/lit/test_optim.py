"""Optimisers and schedules built from plain config mappings."""

from __future__ import annotations

import itertools

import pytest
import torch
from lion_pytorch import Lion

from refusion_pl.lit.optim import build_optimizer, build_scheduler


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_lion_and_adamw():
    lion = build_optimizer(_params(), {"name": "lion", "lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0})
    assert isinstance(lion, Lion) and lion.defaults["lr"] == pytest.approx(1e-4)
    adamw = build_optimizer(_params(), {"name": "adamw", "lr": 2e-4, "betas": [0.9, 0.999]}, lr=3e-4)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="adam_w"):
        build_optimizer(_params(), {"name": "adam_w", "lr": 1e-4, "betas": [0.9, 0.99]})


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
