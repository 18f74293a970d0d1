"""The sweep report on a hand-made sweep directory: table, CSV, failed jobs, plots, CLI (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from refusion_pl import report

PNG = b"\x89PNG\r\n\x1a\n"


def _job(sweep: Path, num: int, overrides: list[str], summary: dict | None, log: str = "") -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "config.yaml").write_text("optimized_metric: val/psnr\n")
    if summary is not None:
        (job / "metrics.json").write_text(json.dumps(summary))
    if log:
        (job / "train.log").write_text(log)
    return job


def _done(psnr: float, steps_per_sec: float = 2.0) -> dict:
    final = {
        "val/psnr": psnr,
        "val/ssim": psnr / 100,
        "train/loss": 0.1,
        "train/steps_per_sec": steps_per_sec,
    }
    return {"status": "completed", "final": final, "stages": {"diffusion": {"metrics": final}}}


def _sweep(tmp_path: Path) -> Path:
    """A 2x2 sweep over a number and a choice, plus a crashed job and one that died before metrics.json."""
    sweep = tmp_path / "sweep"
    fixed = ["task=shadow", "experiment=smoke"]
    for num, (sigma, optim, psnr) in enumerate(
        [(10, "adamw", 20.0), (10, "lion", 21.0), (50, "adamw", 23.5), (50, "lion", 22.0)]
    ):
        _job(sweep, num, [*fixed, f"sde.max_sigma={sigma}", f"optim={optim}"], _done(psnr))
    crashed = {"status": "failed", "error": "RuntimeError: CUDA out of memory", "stages": {}}
    _job(sweep, 4, [*fixed, "sde.max_sigma=90", "optim=adamw"], crashed)
    log = "[2026-01-01 00:00:00][refusion_pl.train][ERROR] - sde.steps=0 is out of range; allowed: [1, inf]\n"
    _job(sweep, 5, [*fixed, "sde.max_sigma=90", "optim=lion"], None, log=log)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_table_has_swept_columns_metrics_and_failed_jobs(tmp_path):
    sweep = _sweep(tmp_path)
    text = report.report(sweep)
    assert text == (sweep / "report.md").read_text()
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert list(rows[0])[:4] == ["job", "status", "sde.max_sigma", "optim"]  # swept overrides only
    assert {"val/psnr", "val/ssim", "train/loss", "steps/s", "error"} <= set(rows[0])
    assert "task" not in rows[0] and "`task=shadow`" in text  # fixed overrides go in the header line
    assert rows[2]["sde.max_sigma"] == "50" and float(rows[2]["val/psnr"]) == 23.5
    assert float(rows[0]["steps/s"]) == 2.0
    assert [r["status"] for r in rows[4:]] == ["failed", "failed"]
    assert rows[4]["error"] == "RuntimeError: CUDA out of memory"
    assert "sde.steps=0 is out of range" in rows[5]["error"]  # from the job log: no metrics.json
    assert "Best val/psnr: 23.5 (job 2: sde.max_sigma=50, optim=adamw)" in text
    assert "- job 4 (failed): RuntimeError: CUDA out of memory" in text
    assert text.count("\n| ") == 7  # header + 6 job rows


def test_one_plot_per_swept_key_is_a_png(tmp_path):
    sweep = _sweep(tmp_path)
    text = report.report(sweep)
    plots = sorted(p.name for p in sweep.glob("plot_*.png"))
    assert plots == ["plot_val_psnr_vs_optim.png", "plot_val_psnr_vs_sde.max_sigma.png"]
    for name in plots:
        assert (sweep / name).read_bytes()[:8] == PNG
        assert f"]({name})" in text


def test_lower_is_better_metric_and_running_job(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (lr, lpips) in enumerate([("1e-5", 0.4), ("1e-4", 0.2), ("1e-3", 0.3)]):
        summary = _done(20.0)
        summary["final"]["val/lpips"] = lpips
        _job(sweep, num, [f"optim.lr={lr}"], summary)
    _job(sweep, 3, ["optim.lr=1e-2"], {"status": "running", "stages": {}})
    text = report.report(sweep, metric="val/lpips")
    assert "Best val/lpips: 0.2 (job 1: optim.lr=1e-4)" in text
    assert "job 3 (running): no final metrics: still running, or killed" in text
    assert (sweep / "plot_val_lpips_vs_optim.lr.png").read_bytes()[:8] == PNG


def test_cli(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    assert report.main([str(sweep), "--no-plots"]) == 0
    assert "| job | status | sde.max_sigma | optim | val/psnr |" in capsys.readouterr().out
    assert not list(sweep.glob("*.png"))
    assert report.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
