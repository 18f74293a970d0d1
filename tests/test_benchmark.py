"""The results benchmark: seeded held-out pairs, a tiny real run end to end, resume, failures, bad options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from refusion_pl import benchmark
from refusion_pl.benchmark import TrainingFailed, held_out_pairs, main


def test_held_out_pairs_are_the_same_on_every_call_and_follow_the_val_seed(compose_config):
    data = OmegaConf.to_container(compose_config("task=inpaint").data, resolve=True)
    first, again = held_out_pairs(data, crop=64), held_out_pairs(data, crop=64)
    assert [name for name, *_ in first] == ["chelsea", "rocket", "immunohistochemistry"]
    for (_, lq, gt, _), (_, lq2, gt2, _) in zip(first, again, strict=True):
        assert torch.equal(lq, lq2) and torch.equal(gt, gt2)
    other = held_out_pairs({**data, "val_seed": 1}, crop=64)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


def test_unknown_task_is_named_and_nothing_runs(tmp_path, capsys):
    assert main(["--tasks", "shadow", "deshadow", "--out", str(tmp_path / "out")]) == 2
    assert "deshadow" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["task"]: row for row in csv.DictReader(f)}


def test_quick_run_writes_table_csv_json_figure_resumes_and_records_failures(tmp_path, monkeypatch, capsys):
    real_train = benchmark.train

    def train_failing_jpeg(overrides, run_dir, multirun=False):
        if "task=jpeg" in overrides:
            raise TrainingFailed("training failed (exit 1): stand-in failure", "train task=jpeg", "")
        return real_train(overrides, run_dir, multirun)

    monkeypatch.setattr(benchmark, "train", train_failing_jpeg)
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--quick", "--tasks", "denoise", "jpeg", "--no-ablation", "--out", str(out), "--work", str(work)]
    assert main(args) == 1  # jpeg failed, denoise did not

    result = json.loads((out / "tasks" / "denoise.json").read_text())
    assert result["status"] == "ok" and result["images"] == ["chelsea", "rocket", "immunohistochemistry"]
    assert set(result["fewer_steps"]) == {"5", "10"} and result["steps"] == 2  # experiment=smoke samples 2
    failed = json.loads((out / "tasks" / "jpeg.json").read_text())
    assert failed["status"] == "failed" and "stand-in failure" in failed["error"]

    rows = _csv_rows(out / "results.csv")
    assert float(rows["denoise"]["input_psnr"]) == result["identity"]["psnr"]
    assert float(rows["denoise"]["restored_ssim"]) == result["restored"]["ssim"]
    assert float(rows["denoise"]["psnr_5_steps"]) == result["fewer_steps"]["5"]["psnr"]
    assert "stand-in failure" in rows["jpeg"]["error"]
    table = (out / "results.md").read_text()
    assert "CPU-budget miniatures, not the paper's GPU runs" in table and "- commit: `" in table
    expected = f"| {result['identity']['psnr']:.2f} | {result['identity']['ssim']:.4f} | "
    expected += f"{result['restored']['psnr']:.2f} | {result['restored']['ssim']:.4f} |"
    assert expected in table
    assert "| jpeg | failed: TrainingFailed: training failed (exit 1): stand-in failure |" in table
    assert (out / "crops.png").stat().st_size > 0 and (out / "crops" / "denoise.png").is_file()

    runs_before = sorted((work / "tasks" / "denoise").iterdir())
    capsys.readouterr()
    assert main(args) == 1  # denoise is skipped, jpeg is tried again (and fails again)
    assert "denoise: done earlier" in capsys.readouterr().out
    assert sorted((work / "tasks" / "denoise").iterdir()) == runs_before
    assert json.loads((out / "tasks" / "denoise.json").read_text()) == result


@pytest.mark.slow
def test_quick_ablation_runs_every_sweep_and_its_report(tmp_path):
    out = tmp_path / "out"
    assert main(["--quick", "--ablation-only", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    for name, expected_jobs in (("max_sigma", 4), ("optimiser", 6), ("model", 2)):
        result = json.loads((out / "ablation" / f"{name}.json").read_text())
        assert result["status"] == "ok" and len(result["jobs"]) == expected_jobs
        assert all(job["status"] == "completed" and job["restored_psnr"] > 0 for job in result["jobs"])
        assert (out / "ablation" / name / "report.md").is_file()
    assert "## Ablation on shadow" in (out / "results.md").read_text()
