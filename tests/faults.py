"""Fault injection for the reliability tests, added to a run from the command line like any callback:

    +callbacks.fault._target_=tests.faults.SignalAt +callbacks.fault.step=3 +callbacks.fault.signal=SIGKILL

(the subprocess needs the repository root on PYTHONPATH).
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
import torch


class SignalAt(pl.Callback):
    """Sends ``signal`` to this process when the batch that would become optimiser step ``step + 1`` starts,
    i.e. after step ``step`` finished and any checkpoint written at its end is on disk (in every stage, or only
    in ``stage``: autoencoder, diffusion)."""

    def __init__(self, step: int, signal: str = "SIGKILL", stage: str | None = None) -> None:
        self.step, self.signal, self.stage = int(step), str(signal), stage

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, idx: int
    ) -> None:
        if self.stage is not None and getattr(pl_module, "kind", None) != self.stage:
            return
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


class PoisonBatches(pl.Callback):
    """Fills the targets of the batches of the given optimiser steps with NaN (bad data: the loss turns NaN)."""

    def __init__(self, steps: list[int] | None = None, from_step: int | None = None) -> None:
        self.steps = set(steps or [])
        self.from_step = from_step

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, idx: int
    ) -> None:
        step = trainer.global_step
        if step in self.steps or (self.from_step is not None and step >= self.from_step):
            batch["gt"].fill_(float("nan"))


class RecordWeights(pl.Callback):
    """Keeps a copy of the trainable weights after every optimiser step (in memory, for assertions)."""

    def __init__(self) -> None:
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, idx
    ) -> None:
        self.after_step[trainer.global_step] = {
            k: v.detach().clone() for k, v in pl_module.named_parameters() if v.requires_grad
        }
