"""One job per GPU for parallel sweeps on one machine (``hydra/launcher=joblib_gpus``).

The joblib launcher runs jobs in a few reused worker processes and has no notion of devices. This Hydra
callback gives each job a GPU no other running job holds: an exclusive ``flock`` on
``<lock_dir>/gpu<ID>.lock`` from job start to job end (the OS drops it if the worker dies). The first job of a
worker sets ``CUDA_VISIBLE_DEVICES`` to its GPU before CUDA starts; since that cannot change afterwards, later
jobs of the same worker wait for that same GPU. Jobs beyond the number of GPUs simply queue, so any
``n_jobs`` is safe and ``n_jobs`` = number of GPUs keeps every GPU busy.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("refusion_pl.gpu_pool")

_pinned: str | None = None  # the GPU this process was given; CUDA_VISIBLE_DEVICES is fixed once CUDA starts


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES when set, else ``nvidia-smi -L`` (no CUDA init)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(result.stdout.splitlines()) if line.startswith("GPU ")]


def try_acquire(lock_dir: Path, devices: Sequence[str]) -> tuple[str, Any] | None:
    """Lock the first free GPU without waiting; return (device, open lock file) or None if all are taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for device in devices:
        handle = (lock_dir / f"gpu{device}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return device, handle
    return None


def acquire(lock_dir: Path, devices: Sequence[str], poll_s: float = 2.0) -> tuple[str, Any]:
    """Wait until one of ``devices`` is free (more jobs than GPUs simply queue)."""
    while (got := try_acquire(lock_dir, devices)) is None:
        time.sleep(poll_s)
    return got


class GPUPool(Callback):
    """Hydra callback: pin this job's process to one GPU of ``devices`` (default: every visible GPU)."""

    def __init__(self, lock_dir: str, devices: Sequence[int | str] | None = None) -> None:
        self.lock_dir = Path(lock_dir)
        self.devices = [str(d) for d in devices] if devices is not None else None
        self._lock: Any = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _pinned
        devices = self.devices if self.devices is not None else visible_gpus()
        if _pinned is None and not devices:
            log.info("gpu_pool: no GPU found; the job runs on the CPU")
            return
        device, self._lock = acquire(self.lock_dir, [_pinned] if _pinned is not None else devices)
        if _pinned is None:
            _pinned = os.environ["CUDA_VISIBLE_DEVICES"] = device
        log.info("gpu_pool: job %s runs on GPU %s (pid %d)", config.hydra.job.num, device, os.getpid())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock: a queued job may take this GPU
            self._lock = None
