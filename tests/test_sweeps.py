"""Hydra multiruns as users type them (a real ``python -m refusion_pl.train -m`` process): a 2x2 grid, a
failing job, an Optuna search, and the one-job-per-GPU pool of the joblib launcher."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from refusion_pl import gpu_pool, report
from tests.conftest import FAST_SMOKE

FAST = FAST_SMOKE  # two steps on 16-pixel crops: a job takes a few seconds


def multirun(sweep_dir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``python -m refusion_pl.train -m ...`` in a fresh process, with the sweep in ``sweep_dir``."""
    cmd = [sys.executable, "-m", "refusion_pl.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=sweep_dir.parent)


def _summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def test_grid_sweep_and_report(tmp_path):
    """2x2 grid: four job directories with config, checkpoint and metrics; the report tabulates and plots them."""
    sweep = tmp_path / "grid"
    result = multirun(sweep, *FAST, "sde.max_sigma=10,30", "optim=adamw,lion")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = set()
    for num in range(4):
        job = sweep / str(num)
        summary = _summary(job)
        assert summary["status"] == "completed" and math.isfinite(summary["final"]["val/psnr"])
        assert (job / "config.yaml").is_file() and (job / "diffusion/checkpoints/last.ckpt").is_file()
        composed = yaml.safe_load((job / "config.yaml").read_text())
        seen.add((composed["sde"]["max_sigma"], composed["optim"]["name"]))
        assert f"optim={composed['optim']['name']}" in summary["overrides"]
    assert seen == {(10, "adamw"), (10, "lion"), (30, "adamw"), (30, "lion")}

    text = report.report(sweep)
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert list(rows[0])[:4] == ["job", "status", "sde.max_sigma", "optim"]
    assert {"val/psnr", "val/ssim", "train/loss", "steps/s"} <= set(rows[0])
    assert all(float(r["steps/s"]) > 0 for r in rows)
    assert text.count("| completed |") == 4
    for key in ("sde.max_sigma", "optim"):
        assert (sweep / f"plot_val_psnr_vs_{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_job_keeps_the_others(tmp_path):
    """Job 0 fails while it runs (its dataset is missing), job 1 still runs and keeps its results; the report
    names the failure. (A bad config value fails the whole sweep before any job: tests/test_config.py.)"""
    sweep = tmp_path / "failing"
    missing = tmp_path / "no_such_dataset"
    result = multirun(sweep, *FAST, f"data.root={missing},null")
    assert result.returncode != 0  # Hydra reports the failure ...
    failed, done = _summary(sweep / "0"), _summary(sweep / "1")
    assert failed["status"] == "failed" and str(missing) in failed["error"]
    assert done["status"] == "completed" and "val/psnr" in done["final"]  # ... and loses nothing else
    text = report.report(sweep)
    assert "2 jobs, 1 completed." in text
    assert "- job 0 (failed): DataError: " in text and str(missing) in text


def test_optuna_search(tmp_path):
    """hparams_search=optuna: two trials drawn from the documented space; the returned PSNR is optimised."""
    sweep = tmp_path / "optuna"
    result = multirun(sweep, *FAST, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optim.lr", "sde.max_sigma", "sde.steps", "sde.prediction", "optim"}
    finals = [_summary(sweep / str(n))["final"]["val/psnr"] for n in range(2)]
    assert best["best_value"] == pytest.approx(max(finals))  # the value main() returned to the sweeper
    rows = list(csv.DictReader(io.StringIO(report.to_csv(report.collect(sweep), "val/psnr"))))
    assert len(rows) == 2 and "optim.lr" in rows[0]


def test_gpu_pool_gives_each_process_its_own_gpu(tmp_path):
    """Slots are exclusive while held and free again once released (as when a worker process exits)."""
    first = gpu_pool.try_acquire(tmp_path, ["3", "5"])
    second = gpu_pool.try_acquire(tmp_path, ["3", "5"])
    assert first is not None and second is not None and {first[0], second[0]} == {"3", "5"}
    assert gpu_pool.try_acquire(tmp_path, ["3", "5"]) is None  # all taken: a third worker waits
    first[1].close()
    third = gpu_pool.try_acquire(tmp_path, ["3", "5"])
    assert third is not None and third[0] == first[0]


def test_gpu_pool_callback_pins_cuda_visible_devices(tmp_path, monkeypatch):
    """A worker's first job picks a free GPU; its later jobs keep that GPU (CUDA cannot switch) and wait for it."""
    monkeypatch.setattr(gpu_pool, "_pinned", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    config = OmegaConf.create({"hydra": {"job": {"num": 0}}})
    other = gpu_pool.try_acquire(tmp_path, ["2"])  # another worker's running job holds GPU 2
    pool = gpu_pool.GPUPool(lock_dir=str(tmp_path))
    pool.on_job_start(config)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert gpu_pool.try_acquire(tmp_path, ["3"]) is None  # held while the job runs
    pool.on_job_end(config, job_return=None)
    other[1].close()
    pool.on_job_start(config)  # GPU 2 is free now, but this process is bound to GPU 3
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and gpu_pool._pinned == "3"
    pool.on_job_end(config, job_return=None)


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_on_distinct_devices(tmp_path):
    """hydra/launcher=joblib_gpus with two fake GPU ids: two workers, each job logs the GPU it was given."""
    sweep = tmp_path / "joblib"
    result = multirun(
        sweep,
        *FAST,
        "hydra/launcher=joblib_gpus",
        "hydra.launcher.n_jobs=2",
        "hydra.callbacks.gpu_pool.devices=[0,1]",
        "trainer.accelerator=cpu",
        "optim=adamw,lion",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = [(sweep / str(n) / "train.log").read_text() for n in range(2)]
    assert all(_summary(sweep / str(n))["status"] == "completed" for n in range(2))
    devices = {
        line.split("runs on GPU ")[1].split()[0]
        for log in logs
        for line in log.splitlines()
        if "runs on GPU" in line
    }
    assert devices == {"0", "1"}
