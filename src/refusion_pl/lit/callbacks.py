"""Small callbacks: throughput logging, and the builders for everything a training stage needs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)


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


class EMA(EMAWeightAveraging):
    """Lightning's EMA callback, optionally with a decay warm-up (see ``ema_with_warmup``)."""

    def __init__(self, decay: float = 0.995, update_every_n_steps: int = 1, warmup: bool = True) -> None:
        super().__init__(decay=decay, update_every_n_steps=update_every_n_steps)
        if warmup:
            self._kwargs["avg_fn"] = ema_with_warmup(decay)


class ThroughputLogger(Callback):
    """Logs optimiser steps and images per second of wall time, averaged between logging points."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._steps = 0
        self._images = 0
        self.last_steps_per_sec: float | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int
    ) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._steps += 1
        self._images += int(batch["gt"].shape[0])
        if self._steps % max(trainer.log_every_n_steps, 1) == 0:
            elapsed = max(time.perf_counter() - (self._start or time.perf_counter()), 1e-9)
            self.last_steps_per_sec = self._steps / elapsed
            pl_module.log("train/steps_per_sec", self.last_steps_per_sec)
            pl_module.log("train/images_per_sec", self._images / elapsed)
            self._start, self._steps, self._images = time.perf_counter(), 0, 0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = None  # validation time is not training throughput
        self._steps = self._images = 0


def build_callbacks(cfg: Any, stage: str, checkpoint_dir: Path, monitor: str) -> list[Callback]:
    """Checkpointing (last + best by ``monitor``), EMA for diffusion, LR/throughput logging, a progress bar."""
    ckpt = cfg.callbacks.checkpoint
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=str(checkpoint_dir),
            filename="best-step{step:07d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="min" if "lpips" in monitor or "loss" in monitor else "max",
            save_last=ckpt.save_last,
            save_top_k=ckpt.save_top_k,
            every_n_train_steps=ckpt.every_n_train_steps,
        )
    ]
    if stage == "diffusion" and cfg.callbacks.ema.enabled:
        callbacks.append(
            EMA(
                decay=cfg.callbacks.ema.decay,
                update_every_n_steps=cfg.callbacks.ema.update_every_n_steps,
                warmup=cfg.callbacks.ema.warmup,
            )
        )
    if cfg.callbacks.lr_monitor:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.callbacks.throughput:
        callbacks.append(ThroughputLogger())
    if cfg.callbacks.progress_bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    elif cfg.callbacks.progress_bar == "rich":
        callbacks.append(RichProgressBar())
    return callbacks
