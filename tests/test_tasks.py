"""The paper's stereo SR and bokeh tasks end to end: a smoke run on the bundled defaults leaves a checkpoint
that evaluate and restore use (stereo pairs in and out, bokeh with its lens settings)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from refusion_pl import restore as restore_mod
from refusion_pl.data.io import read_image, write_image
from refusion_pl.evaluate import evaluate
from refusion_pl.restore import restore
from refusion_pl.train import train
from tests.test_restore import config as restore_config


def smoke_checkpoint(compose_config, tmp_path: Path, task: str) -> tuple[dict[str, float], Path]:
    run = tmp_path / "run"
    metrics = train(compose_config(f"task={task}", "experiment=smoke", "logger=none", output_dir=run))
    assert (run / "restorations.png").is_file()
    return metrics, run / "diffusion" / "checkpoints" / "last.ckpt"


def evaluate_checkpoint(compose_config, tmp_path: Path, ckpt: Path) -> dict:
    cfg = compose_config(
        f"ckpt={ckpt}", "crop=32", "max_images=1", "sample_steps=2", "lpips=false", "save_images=true",
        name="evaluate", output_dir=tmp_path / "eval",
    )  # fmt: skip
    return evaluate(cfg)


def test_stereo_sr_smoke_run_restores_and_evaluates_view_pairs(compose_config, tmp_path):
    metrics, ckpt = smoke_checkpoint(compose_config, tmp_path, "stereo_sr")
    assert {"val/psnr", "val/psnr_left", "val/psnr_right", "val/psnr_input"} <= set(metrics)
    assert metrics["val/psnr"] == pytest.approx(
        (metrics["val/psnr_left"] + metrics["val/psnr_right"]) / 2, abs=1e-4
    )

    summary = evaluate_checkpoint(compose_config, tmp_path, ckpt)
    assert summary["task"] == "stereo_sr" and summary["images"] == 1
    for method in ("identity", "refusion"):
        scores = summary[method]
        assert scores["psnr"] == pytest.approx((scores["psnr_left"] + scores["psnr_right"]) / 2, abs=1e-4)
    assert "PSNR left" in summary["table"]
    assert {p.name for p in (tmp_path / "eval" / "images").iterdir()} == {
        "motorcycle_L.png",
        "motorcycle_R.png",
    }

    low = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    write_image(tmp_path / "in" / "x_L.png", low[0])
    write_image(tmp_path / "in" / "x_R.png", low[1])
    done = restore(restore_config(ckpt, tmp_path / "in", tmp_path / "out"))
    assert done.written == ["x_L.png + x_R.png"] and done.ok
    assert (
        read_image(tmp_path / "out" / "x_L.png")[0].shape == read_image(tmp_path / "out" / "x_R.png")[0].shape
    )
    assert read_image(tmp_path / "out" / "x_L.png")[0].shape == (3, 48, 64)  # x4 super-resolved


def test_bokeh_smoke_run_restores_with_lens_settings(compose_config, tmp_path, monkeypatch):
    metrics, ckpt = smoke_checkpoint(compose_config, tmp_path, "bokeh")
    assert {"val/psnr", "val/psnr_input"} <= set(metrics)
    summary = evaluate_checkpoint(compose_config, tmp_path, ckpt)
    assert summary["task"] == "bokeh" and summary["images"] == 1 and summary["refusion"]["psnr"] > 0

    seen: list[list[float]] = []
    real_call = restore_mod.Restorer.__call__

    def recording(self, image, cond_scalars=None):
        seen.append(cond_scalars.tolist())
        return real_call(self, image, cond_scalars)

    monkeypatch.setattr(restore_mod.Restorer, "__call__", recording)
    write_image(tmp_path / "in" / "x.png", torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0)))
    write_image(tmp_path / "in" / "y.png", torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(1)))
    lenses = {"src_lens": "Sony50mmf16.0AS", "tgt_lens": "Sony50mmf1.8BS", "disparity": 20}
    folder = restore(restore_config(ckpt, tmp_path / "in", tmp_path / "folder", **lenses))
    assert folder.written == ["x.png", "y.png"] and seen == [[160.0, 18.0, 20.0]] * 2
    assert read_image(tmp_path / "folder" / "x.png")[0].shape == (3, 24, 32)
    seen.clear()  # a meta file's line wins for its image; the folder settings cover the others
    (tmp_path / "meta.txt").write_text("y.png, Canon50mmf1.4BS, Sony50mmf16.0AS, 7.5\n")
    meta = restore(
        restore_config(ckpt, tmp_path / "in", tmp_path / "meta", meta=str(tmp_path / "meta.txt"), **lenses)
    )
    assert meta.written == ["x.png", "y.png"] and seen == [[160.0, 18.0, 20.0], [-14.0, 160.0, 7.5]]


def _short_run(
    compose_config, tmp_path: Path, task: str, steps: int, *extra: str
) -> tuple[dict, list[float]]:
    """Smoke sizes, the paper's noise target, AdamW; validation PSNR and the logged training losses."""
    run = tmp_path / f"{task}-{steps}"
    cfg = compose_config(
        f"task={task}", "experiment=smoke", "optim=adamw", "optim.lr=2e-3", "figure.enabled=false",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.log_every_n_steps=10",
        f"data.train_samples_per_epoch={max(8, 2 * steps)}", "data.val_size=64", "sde.sample_steps=10",
        "val.sampler=posterior", *extra, output_dir=run,
    )  # fmt: skip
    metrics = train(cfg)
    rows = list(csv.DictReader(next((run / "diffusion" / "csv").rglob("metrics.csv")).open()))
    return metrics, [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["stereo_sr", "bokeh"])
def test_a_short_cpu_run_learns(compose_config, tmp_path, task):
    """400 steps (smoke sizes, noise target) lower the loss and lift validation PSNR above the untrained model.

    Measured (2 shared CPU cores, 11 min for both): stereo SR 5.09 -> 15.90 dB (bicubic input 31.45 dB), bokeh
    7.58 -> 10.78 dB (source image 44.45 dB on its 64-pixel centre crop). The paper's noise target needs far
    longer runs to reach its input (README, "What the network predicts").
    """
    extra = ("autoencoder.max_steps=300", "autoencoder.lr=2e-3") if task == "bokeh" else ()
    untrained, _ = _short_run(compose_config, tmp_path, task, 1, *extra)
    trained, losses = _short_run(compose_config, tmp_path, task, 400, *extra)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert trained["val/psnr"] > untrained["val/psnr"] + 1.5, (untrained, trained)
