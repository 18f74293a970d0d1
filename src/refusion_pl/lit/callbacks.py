"""Training callbacks and the loop that builds them from ``conf/callbacks``.

``cfg.callbacks`` is a dict of ``_target_`` nodes (``model_checkpoint``, ``ema``, ``lr_monitor``, ...), each
instantiated as written, so any Lightning callback can be added from YAML and any can be switched off with
``callbacks.<name>=null``. The small callbacks here: EMA with a warm-up, image panels for loggers, skipping
non-finite steps, and a warning when the validation metric collapses; throughput is Lightning's
``ThroughputMonitor``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    WeightAveraging,
)
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import get_ema_avg_fn

from refusion_pl.config import ConfigError
from refusion_pl.extras import require_extras_for

log = logging.getLogger(__name__)


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates.

    A fixed decay of 0.995 updated every 10 steps keeps 86% of the random initial weights after 300 steps;
    the ramp lets short runs validate meaningful weights and converges to the fixed decay on long ones.
    """

    def update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = num_averaged.to(averaged.dtype)
        rate = torch.clamp((1 + n) / (10 + n), max=decay)
        # where nothing changed (the frozen autoencoder) keep the value bit-exact
        return torch.where(averaged == current, current, averaged * rate + current * (1 - rate))

    return update


class EMA(WeightAveraging):
    """An exponential moving average of the diffusion network's weights, optionally with a decay warm-up.

    Built on Lightning's public ``WeightAveraging`` API: the averaging function (``avg_fn``, see
    ``ema_with_warmup``) and ``should_update`` (every ``update_every_n_steps`` optimiser steps, as Lightning's
    ``EMAWeightAveraging``). Only the diffusion stage averages its weights: :func:`build_callbacks` leaves
    weight averaging out of the autoencoder stage.
    """

    def __init__(self, decay: float = 0.995, update_every_n_steps: int = 1, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay} is out of range; allowed: [0, 1]")
        if update_every_n_steps < 1:
            raise ConfigError(f"callbacks.ema.update_every_n_steps={update_every_n_steps} must be >= 1")
        self.avg_fn = ema_with_warmup(decay) if warmup else get_ema_avg_fn(decay)
        super().__init__(avg_fn=self.avg_fn)
        self.decay, self.update_every_n_steps, self.warmup = decay, update_every_n_steps, warmup

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every ``update_every_n_steps``-th optimiser step; never at epoch ends."""
        return step_idx is not None and step_idx % self.update_every_n_steps == 0


def images_in_batch(batch: Mapping[str, Any]) -> int:
    """Images in a training batch, for Lightning's ``ThroughputMonitor`` (``conf/callbacks``)."""
    return int(batch["gt"].shape[0])


class ImagePanels(Callback):
    """Sends the LQ | restored | GT panels a validation collected to every logger that takes images."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        panels = list(getattr(pl_module, "validation_panels", []) or [])
        key = getattr(pl_module, "panel_key", None) or "val/panels"
        if not panels or trainer.sanity_checking or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(key=key, images=panels, step=trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                for index, image in enumerate(panels):
                    logger.experiment.add_image(f"{key}/{index}", image, trainer.global_step)


class NonFiniteGuard(Callback):
    """Skips optimiser updates whose gradients are not finite, counts them, and stops a run that keeps diverging.

    A NaN or infinite loss gives non-finite gradients; this drops them before the optimiser (and gradient
    clipping) sees them, so the weights and optimiser state stay at the last good step. The running count is
    logged as ``train/nonfinite_steps``; after ``max_consecutive`` bad steps in a row training stops and
    :attr:`failure` says why (``train`` turns it into an error, after ``last.ckpt`` holds the last good state).
    With fp16 mixed precision (``16-mixed``) overflowing steps are normal and its GradScaler skips them, so the
    guard steps aside; fp32 and bf16 runs are guarded.
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        if max_consecutive < 1:
            raise ConfigError(f"callbacks.nonfinite.max_consecutive={max_consecutive} must be >= 1")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self.failure: str | None = None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16 mixed precision: the GradScaler skips overflowing steps and lowers its scale itself
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            self.consecutive = 0
            return
        optimizer.zero_grad(set_to_none=True)  # the optimiser skips parameters without gradients
        self.skipped += 1
        self.consecutive += 1
        pl_module.log("train/nonfinite_steps", float(self.skipped), on_step=True, on_epoch=False)
        rank_zero_warn(
            f"step {trainer.global_step}: non-finite loss or gradient, update skipped "
            f"({self.consecutive} in a row, {self.skipped} in all)"
        )
        if self.consecutive >= self.max_consecutive:
            self.failure = (
                f"training diverged: {self.consecutive} consecutive steps with a non-finite loss or gradient "
                f"(up to step {trainer.global_step}); the weights of the last good step are kept in last.ckpt. "
                "Lower optim.lr, check the data, or raise callbacks.nonfinite.max_consecutive"
            )
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))


class MetricCollapseWarning(Callback):
    """Warns when a validation metric falls more than ``margin`` below its best (late collapse).

    Users of the original implementation report validation PSNR dropping from 45 to 7 dB late in training; the
    best checkpoint (``model_checkpoint``) keeps the good weights, and this says so while the run goes on.
    ``margin`` is in the metric's units (dB for PSNR); ``mode="auto"`` treats losses and LPIPS as lower-is-better.
    """

    def __init__(self, monitor: str = "val/psnr", margin: float = 3.0, mode: str = "auto") -> None:
        if mode == "auto":
            mode = "min" if "loss" in monitor.lower() or "lpips" in monitor.lower() else "max"
        if mode not in ("min", "max"):
            raise ConfigError(f"callbacks.collapse_warning.mode={mode!r}; allowed: auto, min, max")
        self.monitor, self.margin, self.mode = monitor, float(margin), mode
        self.best: float | None = None
        self.best_step: int | None = None
        self.warnings: list[str] = []

    def _drop(self, value: float) -> float:
        """How far ``value`` is below the best (positive = worse), infinite for NaN."""
        if not math.isfinite(value):
            return math.inf
        assert self.best is not None
        return self.best - value if self.mode == "max" else value - self.best

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = float(metric)
        if self.best is None or (math.isfinite(value) and self._drop(value) < 0):
            self.best, self.best_step = value, trainer.global_step
            return
        drop = self._drop(value)
        if drop > self.margin:
            best_path = getattr(trainer.checkpoint_callback, "best_model_path", "") or "(none saved)"
            message = (
                f"{self.monitor} collapsed to {value:.3g} at step {trainer.global_step}: {drop:.3g} worse than "
                f"its best {self.best:.3g} (step {self.best_step}). The best checkpoint is kept: {best_path}"
            )
            self.warnings.append(message)
            log.warning(message)
            rank_zero_warn(message)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_step = state_dict.get("best"), state_dict.get("best_step")


def callback_nodes(cfg: Any) -> dict[str, Any]:
    """``cfg.callbacks`` as {name: node}; nodes set to null (or false) are switched off and left out."""
    nodes = cfg.callbacks if cfg.get("callbacks") is not None else {}
    out = {}
    for name, node in nodes.items():
        if node is None or node is False:
            continue
        if not isinstance(node, (DictConfig, Mapping)) or "_target_" not in node:
            raise ConfigError(
                f"callbacks.{name} must be a node with a _target_ (a Callback class), or null to switch it "
                f"off; got {OmegaConf.to_container(node) if OmegaConf.is_config(node) else node!r}"
            )
        out[str(name)] = node
    return out


def build_callbacks(cfg: Any, stage: str, checkpoint_dir: Path, has_logger: bool = True) -> list[Callback]:
    """Instantiate every ``cfg.callbacks`` node in order; checkpoints go to ``checkpoint_dir`` unless set.

    Weight averaging (EMA) belongs to the diffusion network, so it is left out of the autoencoder stage; the
    learning-rate monitor needs a logger, so it is left out of runs without one (``logger=none``).
    """
    callbacks: list[Callback] = []
    for name, node in callback_nodes(cfg).items():
        cls = hydra.utils.get_class(node["_target_"])
        require_extras_for(cls, f"callbacks.{name}")  # e.g. RichProgressBar: pip install 'refusion_pl[rich]'
        if stage != "diffusion" and issubclass(cls, WeightAveraging):
            continue
        if not has_logger and issubclass(cls, LearningRateMonitor):
            continue
        extra = {}
        if issubclass(cls, ModelCheckpoint) and node.get("dirpath") is None:
            extra["dirpath"] = str(checkpoint_dir)
        callback = hydra.utils.instantiate(node, **extra)
        if not isinstance(callback, Callback):
            raise ConfigError(f"callbacks.{name}: {node['_target_']} is not a Lightning Callback")
        callbacks.append(callback)
    return callbacks


def has_progress_bar(callbacks: list[Callback]) -> bool:
    return any(isinstance(callback, ProgressBar) for callback in callbacks)
