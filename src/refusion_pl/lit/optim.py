"""Optimisers and learning-rate schedules from plain config mappings (so checkpoints hold no objects)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from lion_pytorch import Lion as LoopLion
from lion_pytorch.foreach import Lion as ForeachLion
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    cfg: Mapping[str, Any],
    lr: float | None = None,
    *,
    grad_scaling: bool = False,
) -> torch.optim.Optimizer:
    """AdamW or Adam from torch, or Lion from lion-pytorch.

    ``lr`` overrides ``cfg['lr']`` (the autoencoder stage); ``cfg['lr_scale']`` multiplies either, so short
    presets can raise the learning rate of whichever optimiser is chosen without pinning it.
    ``cfg['fused']`` (None: auto) updates all parameters at once: torch's fused Adam(W) kernel (3.5x faster
    than its per-parameter loop on a CPU, a sizeable share of a small network's step) and lion-pytorch's
    multi-tensor Lion. Auto leaves Adam(W) unfused under an fp16 gradient scaler (``grad_scaling``): a fused
    step unscales the gradients itself, so Lightning cannot clip them first.
    """
    params = list(params)
    name = cfg["name"]
    kwargs = {
        "lr": float(lr if lr is not None else cfg["lr"]) * float(cfg.get("lr_scale", 1.0)),
        "betas": tuple(float(b) for b in cfg["betas"]),
        "weight_decay": float(cfg.get("weight_decay", 0.0)),
    }
    fused = cfg.get("fused")
    if name in ("adamw", "adam"):
        if fused is None:
            fused = not grad_scaling and _fused_supported(params)
        optimizer = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return optimizer(params, fused=bool(fused), **kwargs)
    if name == "lion":
        return (Lion if fused is None or fused else LoopLion)(params, **kwargs)
    raise ValueError(f"optim.name={name!r} is not supported; choose one of: adamw, adam, lion")


class Lion(ForeachLion):
    """lion-pytorch's multi-tensor Lion, stepping only the parameter groups that have gradients.

    Upstream fails on an empty tensor list, which is exactly what a skipped step leaves (the non-finite guard
    drops every gradient); the per-parameter Lion and torch's optimisers simply skip such parameters.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        self.param_groups = [g for g in groups if any(p.grad is not None for p in g["params"])]
        try:
            if self.param_groups:
                super().step()
        finally:
            self.param_groups = groups
        return loss


def _fused_supported(params: list[torch.nn.Parameter]) -> bool:
    """torch's fused Adam(W) takes floating-point parameters on CPUs and CUDA devices."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _main_schedule(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], steps: int) -> LRScheduler:
    name = cfg["name"]
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(steps, 1), eta_min=float(cfg.get("eta_min", 0.0)))
    if name == "multistep":
        milestones = sorted({max(1, round(float(m) * steps)) for m in cfg.get("milestones", [])})
        return MultiStepLR(optimizer, milestones=milestones, gamma=float(cfg.get("gamma", 0.5)))
    if name == "constant":
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"scheduler.name={name!r} is not supported; choose one of: cosine, multistep, constant")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], max_steps: int) -> LRScheduler:
    """Per-step schedule over ``max_steps``, with an optional linear warm-up in front."""
    warmup = int(cfg.get("warmup_steps", 0) or 0)
    main = _main_schedule(optimizer, cfg, max_steps - warmup)
    if warmup <= 0:
        return main
    ramp = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[ramp, main], milestones=[warmup])
