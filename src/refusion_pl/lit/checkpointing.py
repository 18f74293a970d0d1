"""Checkpoints that always hold the latest state: a fresh ``last.ckpt``, atomic writes, graceful preemption.

Lightning's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when it also saves a top-k checkpoint,
and writes ``last-v1.ckpt`` beside an old ``last.ckpt`` after a resume. :class:`RunCheckpoint` keeps Lightning's
top-k logic for the best checkpoint (judged at validation) and writes one ``last.ckpt`` itself: every
``every_n_train_steps`` steps and/or ``every_n_minutes``, after every validation, at the end of training, and
when a stop signal (SIGTERM, SLURM's warning signals) arrives. Writes go through :class:`AtomicCheckpointIO`, so
an interrupted write never replaces a good file.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from refusion_pl.config import ConfigError
from refusion_pl.files import OutputError, atomic_write, remove_stale_temporaries

log = logging.getLogger(__name__)

LAST_NAME = "last.ckpt"
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes through a temporary file in the target folder, fsync'd, then renamed over the target.

    A kill or a full disk during the write leaves the previous checkpoint untouched; a failed write raises an
    :class:`~refusion_pl.files.OutputError` naming the path.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        remove_stale_temporaries(path)  # left by a write that was killed earlier
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def _signal_numbers(names: list[str] | tuple[str, ...]) -> list[signal.Signals]:
    numbers = []
    for name in names:
        try:
            numbers.append(signal.Signals[str(name).upper()])
        except KeyError:
            raise ConfigError(
                f"callbacks.model_checkpoint.stop_signals: unknown signal {name!r} (e.g. SIGTERM, SIGUSR1)"
            ) from None
    return numbers


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` needs (array jobs: ``<array job>_<task>``), or None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class RunCheckpoint(ModelCheckpoint):
    """Best checkpoint by ``monitor`` (Lightning's top-k, at validation) plus one always-fresh ``last.ckpt``.

    Args (beyond ModelCheckpoint's): ``every_n_train_steps`` / ``every_n_minutes`` set how often ``last.ckpt``
    is refreshed during training (either or both; it is also refreshed after every validation and at the end);
    ``mode="auto"`` minimises metrics named like a loss or LPIPS and maximises the rest; ``stop_signals`` end
    training after the current step with a fresh ``last.ckpt``; ``requeue`` then runs ``scontrol requeue`` when
    the job runs under SLURM, so the requeued job resumes from this run directory.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str | None = "best-step{step:07d}",
        monitor: str | None = "val/psnr",
        mode: str = "auto",
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_train_steps: int | None = None,
        every_n_minutes: float | None = None,
        stop_signals: list[str] | tuple[str, ...] = DEFAULT_STOP_SIGNALS,
        requeue: bool = True,
        verbose: bool = False,
    ) -> None:
        if mode == "auto":
            name = (monitor or "").lower()
            mode = "min" if "loss" in name or "lpips" in name else "max"
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ConfigError(
                f"callbacks.model_checkpoint.every_n_train_steps={every_n_train_steps} must be >= 1 (or null)"
            )
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ConfigError(
                f"callbacks.model_checkpoint.every_n_minutes={every_n_minutes} must be > 0 (or null)"
            )
        # Top-k is judged at validation only (fresh metrics); last.ckpt is handled below, never versioned.
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k,
            save_last=False,
            auto_insert_metric_name=False,
            verbose=verbose,
        )
        self.keep_last = save_last
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self.stop_signals = _signal_numbers(stop_signals)
        self.requeue = requeue
        self.last_written_step: int | None = None
        self.stopped_by: str | None = None  # name of the signal that ended training early
        self._last_time = time.monotonic()
        self._received: signal.Signals | None = None
        self._previous_handlers: dict[signal.Signals, Any] = {}

    @property
    def last_path(self) -> Path:
        return Path(str(self.dirpath)) / LAST_NAME

    def save_last_now(self, trainer: pl.Trainer, again: bool = False) -> None:
        """Write ``last.ckpt`` for the current step (every rank takes part, rank 0 writes).

        Once per step unless ``again``: after a validation the state holds the new metrics and best score.
        """
        if not self.keep_last or trainer.sanity_checking:
            return
        if self.last_written_step == trainer.global_step and not again:
            return
        trainer.save_checkpoint(str(self.last_path), weights_only=False)
        self.last_written_step = trainer.global_step
        self._last_time = time.monotonic()

    # ---- when to refresh last.ckpt -------------------------------------------------------------------------------
    @staticmethod
    def _validation_follows(trainer: pl.Trainer) -> bool:
        """Whether a validation runs right after this step (it refreshes last.ckpt itself, with its metrics)."""
        interval = trainer.val_check_interval
        return (
            isinstance(interval, int)
            and trainer.check_val_every_n_epoch is None
            and trainer.enable_validation
            and trainer.global_step % interval == 0
        )

    def _due(self, trainer: pl.Trainer) -> bool:
        by_steps = bool(self.every_n_train_steps) and trainer.global_step % self.every_n_train_steps == 0
        by_time = False
        if self.every_n_minutes is not None:
            elapsed = (
                time.monotonic() - self._last_time >= timedelta(minutes=self.every_n_minutes).total_seconds()
            )
            by_time = bool(trainer.strategy.broadcast(elapsed))  # rank 0's clock decides, so no rank hangs
        return by_steps or by_time

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_time = time.monotonic()
        self.last_written_step = trainer.global_step  # the resumed state is already on disk
        self._install_signal_handlers()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stop = trainer.strategy.reduce_boolean_decision(self._received is not None, all=False)
        if stop:
            self._stop(trainer)
        elif self._due(trainer) and not self._validation_follows(trainer):
            self.save_last_now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.save_last_now(trainer, again=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.save_last_now(trainer)  # the final steps are never only in memory

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_signal_handlers()
        super().teardown(trainer, pl_module, stage)

    # ---- stop signals ----------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Note the signal; the step in progress finishes first. A second one acts as it did before (a second
        Ctrl+C interrupts at once)."""
        self._received = signal.Signals(signum)
        previous = self._previous_handlers.get(self._received)
        signal.signal(self._received, previous if previous is not None else signal.SIG_DFL)

    def _install_signal_handlers(self) -> None:
        for number in self.stop_signals:
            try:
                self._previous_handlers[number] = signal.signal(number, self._on_signal)
            except ValueError:  # not the main thread: leave the signals to whoever owns them
                rank_zero_warn(
                    f"cannot handle {number.name} outside the main thread; it will not save last.ckpt"
                )
                return

    def _restore_signal_handlers(self) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _stop(self, trainer: pl.Trainer) -> None:
        """Save the state of the step that just finished, requeue under SLURM if asked, and end training now.

        Lightning's own ``SIGTERMException`` ends ``fit`` at once: ``should_stop`` would first run a validation,
        which a preemption warning may not leave time for.
        """
        self.stopped_by = self._received.name if self._received is not None else "a signal on another rank"
        self.save_last_now(trainer)
        rank_zero_info(
            f"{self.stopped_by}: stopped at step {trainer.global_step}, state saved to {self.last_path}"
        )
        job = slurm_job_id()
        if self.requeue and job is not None and trainer.is_global_zero:
            self._requeue(job)
        raise SIGTERMException

    @staticmethod
    def _requeue(job: str) -> None:
        scontrol = shutil.which("scontrol")
        if scontrol is None:
            rank_zero_warn(
                f"SLURM job {job}: scontrol not found, cannot requeue; start the run again in its directory"
            )
            return
        result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            rank_zero_info(f"requeued SLURM job {job}; it resumes from this run directory")
        else:
            rank_zero_warn(f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")


__all__ = ["LAST_NAME", "AtomicCheckpointIO", "OutputError", "RunCheckpoint", "slurm_job_id"]
