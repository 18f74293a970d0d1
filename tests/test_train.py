"""Training end to end on the bundled photos: both stages, checkpoints, logs, resume, learning."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.config import ConfigError
from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.diffusion import trained_sde_differences
from refusion_pl.pipeline import restore
from refusion_pl.restore import Restorer
from refusion_pl.sampling import ou_time_schedule
from refusion_pl.train import build_datamodule, train, validation_interval


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


def test_smoke_run_writes_everything(compose_config, tmp_path):
    run = tmp_path / "run"
    cfg = compose_config(
        "task=shadow",
        "sde.steps=100",
        "experiment=smoke",
        "callbacks.throughput.window_size=2",
        output_dir=run,
    )
    metrics = train(cfg)
    for stage in ("autoencoder", "diffusion"):
        assert (run / stage / "checkpoints" / "last.ckpt").is_file()
        rows = _csv_rows(next((run / stage / "csv").rglob("metrics.csv")))
        assert _column(rows, "train/loss"), f"{stage}: no training loss logged"
        assert _column(rows, "val/psnr"), f"{stage}: no validation PSNR logged"
        # Lightning's ThroughputMonitor, once its 2-batch window is full: steps 2, 3 and 4
        assert len(_column(rows, "train/device/batches_per_sec")) == 3, f"{stage}: no throughput logged"
    assert (run / "config.yaml").read_text().count("max_sigma") >= 1
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and "val/psnr" in summary["final"]
    assert metrics["val/psnr"] == pytest.approx(summary["final"]["val/psnr"])
    # the sweep report's steps/s column: ThroughputMonitor's batches over seconds of training, as last logged
    rows = _csv_rows(next((run / "diffusion" / "csv").rglob("metrics.csv")))
    batches, seconds = _column(rows, "train/batches")[-1], _column(rows, "train/time")[-1]
    assert batches == 4 and summary["final"]["train/steps_per_sec"] == pytest.approx(batches / seconds)
    assert (run / "restorations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = safe_torch_load(run / "diffusion" / "checkpoints" / "last.ckpt")
    stored = checkpoint["refusion_pl"]
    assert stored["kind"] == "diffusion" and stored["config"]["sde"]["steps"] == 100
    assert checkpoint["hyper_parameters"]["sde"]["steps"] == 100
    assert any(k.startswith("autoencoder.") for k in checkpoint["state_dict"])  # self-contained


def test_the_figure_shows_the_kept_checkpoint_not_the_last_steps_weights(
    compose_config, tmp_path, monkeypatch
):
    """restorations.png is drawn by the checkpoint the run keeps (best by validation), which is what
    `refusion-restore ckpt=...` restores with, even when the last step's weights differ."""
    import refusion_pl.train as train_module

    shown, asked = [], []
    monkeypatch.setattr(
        train_module, "save_restoration_figure", lambda module, *args: shown.append(module) or Path("x.png")
    )
    kept_module = train_module.kept_module
    monkeypatch.setattr(
        train_module, "kept_module", lambda module, path: asked.append(path) or kept_module(module, path)
    )
    run = tmp_path / "run"
    cfg = compose_config("task=shadow", "experiment=smoke", "trainer.val_check_interval=2", output_dir=run)
    train(cfg)
    summary = json.loads((run / "metrics.json").read_text())
    kept = Path(summary["stages"]["diffusion"]["checkpoint"])
    assert kept.name.startswith("best-") and len(shown) == 1 and asked == [kept]
    state = safe_torch_load(kept)["state_dict"]
    assert all(torch.equal(value, state[key]) for key, value in shown[0].state_dict().items())
    # a module whose weights moved on since the kept checkpoint gets that checkpoint's back, its settings kept
    moved = DiffusionModule.from_checkpoint(kept)
    moved.val_cfg["sampler"] = "sde"
    with torch.no_grad():
        next(moved.net.parameters()).add_(1.0)
    expected = next(DiffusionModule.from_checkpoint(kept).net.parameters()).clone()
    assert kept_module(moved, kept.parent / "last.ckpt") is moved
    assert not torch.equal(next(moved.net.parameters()), expected)
    assert kept_module(moved, kept) is moved and torch.equal(next(moved.net.parameters()), expected)
    assert moved.val_cfg["sampler"] == "sde"


def x0_network_sampling(module: DiffusionModule, lq: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """Respaced posterior sampling written out on the x0 network's own output (``x0 = lq + net``), no noise."""
    sde, generator = module.sde, torch.Generator().manual_seed(seed)
    x = lq + sde.lam * torch.randn(lq.shape, generator=generator)
    with torch.no_grad():
        for t, s in itertools.pairwise(ou_time_schedule(sde.thetas_cumsum, steps)):
            x0 = lq + module.net(x, lq, torch.tensor([t]))
            noise = torch.randn(lq.shape, generator=generator)
            x = sde.posterior_mean_between(x, x0, lq, t, s) + sde.posterior_std_between(t, s) * noise
    return x.clamp(0, 1)


def test_checkpoint_settings_win_over_command_line(compose_config, tmp_path):
    cfg = compose_config(
        "model=pixel", "experiment=smoke", "sde.steps=12", "sde.max_sigma=30", "sde.prediction=x0"
    )
    train(cfg)
    path = Path(cfg.paths.output_dir) / "diffusion" / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match=r"sde\.steps=50 ignored.*sde\.steps=12"):
        module = DiffusionModule.from_checkpoint(path, sde_overrides={"steps": 50, "sample_steps": 3})
    assert module.sde.T == 12 and module.sde.lam == pytest.approx(30 / 255)
    assert module.prediction == "x0"
    with pytest.warns(UserWarning, match=r"sde\.prediction=noise ignored.*sde\.prediction=x0"):
        assert DiffusionModule.from_checkpoint(path, sde_overrides={"prediction": "noise"}).prediction == "x0"
    image = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(1))
    restorer = Restorer(module=module, device=torch.device("cpu"), sampler="sde", steps=3, seed=5, tile=None)
    expected = x0_network_sampling(module, image[None], steps=3, seed=5)[0]
    torch.testing.assert_close(restorer(image), expected, atol=1e-5, rtol=0)  # the command line's path
    as_noise = restore(
        module.sde, module.net, image[None], steps=3, generator=torch.Generator().manual_seed(5)
    )
    assert (as_noise[0] - expected).abs().max() > 0.05  # reading the net as a noise network is told apart
    assert module.val_cfg["sample_steps"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DiffusionModule.from_checkpoint(path, sde_overrides={"steps": 12})  # agreeing values: no warning
    out = module.restore(torch.rand(1, 3, 21, 35), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 21, 35)


def test_checkpoint_from_before_prediction_existed_predicts_noise(compose_config, tmp_path):
    cfg = compose_config("model=pixel", "experiment=smoke", "sde.steps=12")
    train(cfg)
    path = Path(cfg.paths.output_dir) / "diffusion" / "checkpoints" / "last.ckpt"
    checkpoint = safe_torch_load(path)
    del checkpoint["hyper_parameters"]["sde"]["prediction"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match=r"sde\.prediction=x0 ignored.*sde\.prediction=noise"):
        module = DiffusionModule.from_checkpoint(tmp_path / "old.ckpt", sde_overrides={"prediction": "x0"})
    assert module.prediction == "noise" and module.noise_model is module.net
    stored = checkpoint["hyper_parameters"]["sde"]
    assert trained_sde_differences(stored, {**stored, "prediction": "noise"}) == []  # resumable as noise


def test_photo_stats_train_the_diffusion_stage_only(compose_config):
    """net.nafnet.photo_stats: the diffusion stage's samples carry their photos' means and train through; the
    autoencoder stage draws its crops as without it."""
    cfg = compose_config("experiment=smoke", "net.nafnet.photo_stats=true")
    assert build_datamodule(cfg, "diffusion").photo_stats is True
    assert build_datamodule(cfg, "autoencoder").photo_stats is False
    metrics = train(cfg)
    assert metrics["val/psnr"] > 0


def test_autoencoder_dark_prob_sets_stage_ones_darkened_scenes_only(compose_config):
    """autoencoder.dark_prob: stage 1's share of darkened scenes; null follows data.dark_prob (both stages)."""
    shadow_demo = ("experiment=demo", "task=shadow")
    cfg = compose_config(*shadow_demo)
    assert (
        build_datamodule(cfg, "autoencoder").dark_prob == build_datamodule(cfg, "diffusion").dark_prob == 0.3
    )
    cfg = compose_config(*shadow_demo, "autoencoder.dark_prob=0.1")
    assert (build_datamodule(cfg, "autoencoder").dark_prob, build_datamodule(cfg, "diffusion").dark_prob) == (
        0.1,
        0.3,
    )


def test_echo_loads_fewer_pairs_per_diffusion_step(compose_config):
    """``sde.echo``: the diffusion stage's loader yields batch_size / echo pairs (stage 1 keeps its batch), and
    training runs through with the echoed batches."""
    cfg = compose_config("model=pixel", "experiment=smoke", "data.batch_size=4", "sde.echo=2")
    assert build_datamodule(cfg, "diffusion").batch_size == 2
    assert build_datamodule(cfg, "autoencoder").batch_size == cfg.autoencoder.batch_size == 4
    metrics = train(cfg)
    assert metrics["val/psnr"] > 0
    checkpoint = safe_torch_load(Path(cfg.paths.output_dir) / "diffusion" / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["sde"]["echo"] == 2


def test_not_a_diffusion_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a refusion_pl diffusion checkpoint"):
        DiffusionModule.from_checkpoint(path)


def test_resume_from_last(compose_config, tmp_path):
    run = tmp_path / "run"
    train(compose_config("model=pixel", "experiment=smoke", output_dir=run))
    first = safe_torch_load(run / "diffusion" / "checkpoints" / "last.ckpt")["global_step"]
    train(
        compose_config(
            "model=pixel", "experiment=smoke", "trainer.max_steps=8", "ckpt_path=last", output_dir=run
        )
    )
    resumed = safe_torch_load(run / "diffusion" / "checkpoints" / "last.ckpt")
    assert first == 4 and resumed["global_step"] == 8
    switched = compose_config(
        "model=pixel", "experiment=smoke", "trainer.max_steps=12", "ckpt_path=last", "sde.prediction=x0",
        output_dir=run,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"sde\.prediction='x0' \(checkpoint: 'noise'\)"):
        train(switched)
    assert safe_torch_load(run / "diffusion" / "checkpoints" / "last.ckpt")["global_step"] == 8


def _pixel_shadow(compose_config, tmp_path, name, *overrides):
    """Tiny pixel model on the bundled shadow task, validated on the 3 held-out photos (64 px centre crops)."""
    cfg = compose_config(
        "model=pixel",
        "experiment=smoke",
        "task=shadow",
        "sde.sample_steps=null",
        "data.crop_size=32",
        "data.batch_size=8",
        "data.max_val_images=3",
        "data.val_size=64",
        "val.num_images=3",
        "trainer.limit_val_batches=1.0",
        "figure.enabled=false",
        *overrides,
        output_dir=tmp_path / name,
    )
    metrics = train(cfg)
    rows = _csv_rows(next((Path(cfg.paths.output_dir) / "diffusion" / "csv").rglob("metrics.csv")))
    return metrics, _column(rows, "train/loss")


@pytest.mark.parametrize(("optim", "lr"), [("adamw", "3e-3"), ("lion", "3e-3")])
def test_pixel_model_learns_with_either_optimiser(compose_config, tmp_path, optim, lr):
    """A few hundred steps lower the loss and lift validation PSNR far above the untrained model's.

    Measured (2 CPU cores, seed 42, 250 steps, lr 3e-3): the untrained model samples noise (5.1 dB on the
    three held-out photos); after training AdamW reaches 11.7 dB and Lion 11.4 dB (the shadowed input: 11.6 dB).
    The test asks for a 2 dB gain over the untrained model; beating the input takes longer (slow test below).
    """
    steps = ("trainer.max_steps=250", "trainer.val_check_interval=250", "data.train_samples_per_epoch=2000")
    common = (f"optim={optim}", f"optim.lr={lr}")
    untrained, _ = _pixel_shadow(compose_config, tmp_path, "untrained", *common, "trainer.max_steps=1")
    trained, losses = _pixel_shadow(compose_config, tmp_path, "trained", *common, *steps)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert trained["val/psnr"] > untrained["val/psnr"] + 2.0, (untrained, trained)


def test_x0_pixel_model_beats_the_shadowed_input(compose_config, tmp_path):
    """400 steps of the tiny pixel model predicting x0 restore the held-out shadowed photos better than the input.

    Measured (2 CPU cores, 64 px centre crops of the three held-out photos): 11.85 dB against 11.60 dB for the
    shadowed input with seed 42, 12.17 dB with seed 1. The paper's noise target needs far longer (slow test
    below). The margin is thin and the shadows are not yet lifted: on 128 px crops the same run is level with
    its input (15.83 vs 15.97 dB, data.val_size=128).
    """
    steps = ("trainer.max_steps=400", "trainer.val_check_interval=400", "data.train_samples_per_epoch=3200")
    metrics, losses = _pixel_shadow(
        compose_config, tmp_path, "x0", "sde.prediction=x0", "optim=adamw", "optim.lr=1e-2", *steps
    )
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert metrics["val/psnr"] > metrics["val/psnr_input"], metrics


def test_x0_pixel_model_denoises(compose_config, tmp_path):
    """The same short run on the denoise task.

    Measured (seed 42): 26.4 dB against 20.4 dB for the noisy input; the paper's noise target reaches 18.9 dB.
    """
    cfg = compose_config(
        "model=pixel", "experiment=smoke", "task=denoise", "sde.prediction=x0", "sde.sample_steps=null",
        "optim=adamw", "optim.lr=3e-3", "trainer.max_steps=400", "trainer.val_check_interval=400",
        "data.train_samples_per_epoch=3200", "data.crop_size=32", "data.batch_size=8", "data.max_val_images=3",
        "data.val_size=64", "val.num_images=3", "trainer.limit_val_batches=1.0", "figure.enabled=false",
        output_dir=tmp_path / "denoise",
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["val/psnr"] > metrics["val/psnr_input"] + 3.0, metrics


@pytest.mark.slow
def test_pixel_model_beats_the_degraded_input(compose_config, tmp_path):
    """1500 steps of a width-16 pixel model restore held-out shadowed photos better than the input.

    Measured (2 CPU cores, seed 42, about 2.5 minutes): mean validation PSNR over the three held-out photos
    12.18 dB against 11.60 dB for the shadowed input (first photo alone: 14.75 vs 12.74 dB).
    """
    metrics, losses = _pixel_shadow(
        compose_config,
        tmp_path,
        "long",
        "optim=adamw",
        "optim.lr=3e-3",
        "net.nafnet.width=16",
        "trainer.max_steps=1500",
        "trainer.val_check_interval=1500",
        "data.train_samples_per_epoch=12000",
    )
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert metrics["val/psnr"] > metrics["val/psnr_input"], metrics


def test_autoencoder_learns_to_reconstruct(compose_config, tmp_path):
    """A short run of the tiny autoencoder raises both reconstruction PSNRs well above their start.

    Measured (2 CPU cores, seed 42, three held-out photos): after 1 step decode(latent_gt, hidden_lq) scores
    7.1 dB against GT and decode(latent_lq, hidden_lq) 10.7 dB against LQ; after 150 steps 11.5 dB and 25.3 dB.
    The test asks for gains of 3 dB and 10 dB.
    """
    base = (
        "stage=autoencoder",
        "experiment=smoke",
        "optim=adamw",
        "optim.lr=2e-3",
        "data.crop_size=48",
        "data.max_val_images=3",
        "data.val_size=64",
        "trainer.limit_val_batches=1.0",
        "autoencoder.batch_size=4",
    )
    start = train(compose_config(*base, "autoencoder.max_steps=1", output_dir=tmp_path / "start"))
    end = train(
        compose_config(
            *base,
            "autoencoder.max_steps=150",
            "trainer.val_check_interval=150",
            "data.train_samples_per_epoch=600",
            output_dir=tmp_path / "end",
        )
    )
    assert end["val/psnr"] > start["val/psnr"] + 3, (start, end)
    assert end["val_lq/psnr"] > start["val_lq/psnr"] + 10, (start, end)


def test_command_line_smoke_run(tmp_path):
    """The product's command, as an installed user types it, in a fresh process; it ends with a summary."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    run = tmp_path / "cli"
    cmd = [
        str(Path(sys.executable).parent / "refusion-train"),  # the console script
        "task=shadow",
        "sde.steps=100",
        "experiment=smoke",
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "diffusion" / "checkpoints" / "last.ckpt").is_file()

    # The closing summary, on the console and in the run's log, agrees with metrics.json.
    summary = json.loads((run / "metrics.json").read_text())
    final, checkpoint = summary["final"], summary["stages"]["diffusion"]["checkpoint"]
    text = result.stdout[result.stdout.index("Training finished (autoencoder, diffusion stages):") :]
    psnr, psnr_input = final["val/psnr"], final["val/psnr_input"]
    assert (
        f"val/psnr         {psnr:.2f} dB   (degraded input: {psnr_input:.2f} dB, {psnr - psnr_input:+.2f} dB)"
        in text
    )
    assert f"run directory    {run}\n" in text
    assert f"figure           {run / 'restorations.png'}\n" in text
    assert f"checkpoint       {checkpoint}   (diffusion, " in text
    assert (
        f"next             refusion-restore ckpt={checkpoint} input=YOUR_IMAGE_OR_FOLDER output=restored"
        in text
    )
    assert "Training finished" in (run / "train.log").read_text()


def test_command_line_config_error_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "refusion_pl.train", "sde.steps=0", f"hydra.run.dir={tmp_path}/bad"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert "sde.steps=0" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # checked before Hydra made the run directory (or any other)


def test_command_line_data_error_is_one_line(tmp_path):
    missing = tmp_path / "no_such_dataset"
    cmd = [
        sys.executable,
        "-m",
        "refusion_pl.train",
        "experiment=smoke",
        "model=pixel",
        f"data.root={missing}",
        f"hydra.run.dir={tmp_path}/bad",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert str(missing) in result.stderr and "Traceback" not in result.stderr


def test_stages_run_separately(compose_config, tmp_path):
    """stage=autoencoder, then stage=diffusion autoencoder.ckpt=PATH: the frozen weights travel along."""
    train(compose_config("stage=autoencoder", "experiment=smoke", output_dir=tmp_path / "ae"))
    ae_ckpt = tmp_path / "ae" / "autoencoder" / "checkpoints" / "last.ckpt"
    train(
        compose_config(
            "stage=diffusion",
            "experiment=smoke",
            f"autoencoder.ckpt={ae_ckpt}",
            "figure.enabled=false",
            output_dir=tmp_path / "diff",
        )
    )
    assert not (tmp_path / "diff" / "autoencoder").exists()
    ae_weights = safe_torch_load(ae_ckpt)["state_dict"]
    diffusion = safe_torch_load(tmp_path / "diff" / "diffusion" / "checkpoints" / "last.ckpt")["state_dict"]
    frozen = {k: v for k, v in diffusion.items() if k.startswith("autoencoder.")}
    assert frozen and all(torch.equal(v, ae_weights[k]) for k, v in frozen.items())
    # an autoencoder trained with other sizes is refused, naming both settings
    with pytest.raises(ValueError, match="trained with net="):
        train(
            compose_config(
                "stage=diffusion",
                "experiment=smoke",
                "net=small",
                f"autoencoder.ckpt={ae_ckpt}",
                output_dir=tmp_path / "mismatch",
            )
        )


@pytest.mark.slow
def test_pixel_demo_restores_visibly(compose_config, tmp_path):
    """`experiment=demo_pixel` on lowlight: the restored held-out photos are far better than the degraded ones.

    Measured (2 CPU cores, predicting x0 as the preset does): validation PSNR 18.9 dB against 7.4 dB for the
    input (17.1 dB with the paper's noise target).
    """
    cfg = compose_config(
        "experiment=demo_pixel", "task=lowlight", "optim=adamw", output_dir=tmp_path / "demo"
    )
    metrics = train(cfg)
    assert metrics["val/psnr"] > metrics["val/psnr_input"] + 5, metrics
    assert (tmp_path / "demo" / "restorations.png").read_bytes()[:4] == b"\x89PNG"


def worst_change_under_other_degradations(run_dir: Path) -> tuple[float, list[dict]]:
    """The worst PSNR change of any whole held-out photo under any variant of `benchmarks/degradation_shift.py`."""
    from tests.benchmark_scripts import load_benchmark

    load_benchmark("block_grid"), load_benchmark("demo_recipes")  # imported by name from the script
    rows = load_benchmark("degradation_shift").evaluate_run(run_dir, None)
    return min(p["restored"] - p["input"] for row in rows for p in row["photos"]), rows


def mild_changes(run_dir: Path, task: str) -> list[dict]:
    """Each whole held-out photo, mildly degraded (`benchmarks/demo_recipes.py`'s MILD), restored by the run's
    best checkpoint: name, input and restored PSNR."""
    from tests.benchmark_scripts import load_benchmark

    best = load_benchmark("block_grid").best_checkpoint(run_dir)
    return load_benchmark("demo_recipes").evaluate(best, task)["mild"]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "gain"), [("lowlight", 5.0), ("shadow", 1.0)])
def test_latent_demo_restores_whole_held_out_photos(compose_config, tmp_path, task, gain):
    """`make demo`'s recipe (the latent model, both stages) on whole held-out photos, validated as the demo
    restores them (deterministic ode path, temperature 0): issue 10's gains, at least 5 dB on low light and 1 dB
    on shadow; under other shadow or low-light models no photo comes out more than 3 dB worse; and on low light
    no mildly degraded photo comes out more than 0.3 dB worse than it went in.

    Measured (2 CPU cores, seed 42, `benchmarks/demo_recipes.py`, stage 2 at 2000 steps): low light 8.21 -> 20.55
    dB in 7.2 min, shadow 13.92 -> 15.90 dB in 7.9 min (seed 1: 20.61 and 17.41 dB); worst photo under other
    models +1.26 (low light) and -0.06 dB (shadow; seed 1: +0.90 and -0.52; `benchmarks/degradation_shift.py`);
    worst mild low-light photo +1.35 dB (seed 1: +5.48; `benchmarks/mild_photos.py`).
    """
    run = tmp_path / task
    metrics = train(compose_config("experiment=demo", f"task={task}", "optim=adamw", output_dir=run))
    assert metrics["val/psnr"] > metrics["val/psnr_input"] + gain, metrics
    worst, rows = worst_change_under_other_degradations(run)
    assert worst > -3.0, rows
    if task == "lowlight":
        mild = mild_changes(run, task)
        assert len(mild) == 3 and all(row["restored"] > row["input"] - 0.3 for row in mild), mild
    assert (run / "restorations.png").read_bytes()[:4] == b"\x89PNG"


def test_x0_pixel_model_brightens_lowlight_photos_in_seconds(compose_config, tmp_path):
    """The fast default-suite check of the slow demo test's claim: an x0 pixel model restores held-out lowlight
    photos better than their degraded input after 60 steps of the tiny network.

    Measured (seeds 42, 1, 2, 3, 4; 64 px centre crops of the three held-out photos; input 7.20 dB): gains of
    1.63, 2.45, 2.10, 1.64 and 1.67 dB, mean 1.90, standard deviation 0.37. The 0.7 dB asked for leaves 3.2
    standard deviations below the mean; about 3 s of CPU.
    """
    cfg = compose_config(
        "model=pixel", "experiment=smoke", "task=lowlight", "sde.prediction=x0", "optim=adamw", "optim.lr=3e-3",
        "trainer.max_steps=60", "trainer.val_check_interval=60", "data.train_samples_per_epoch=480",
        "data.crop_size=32", "data.batch_size=4", "data.val_size=64", "data.max_val_images=3", "val.num_images=3",
        "trainer.limit_val_batches=1.0", "figure.enabled=false", "logger=none", "callbacks.progress_bar=null",
        output_dir=tmp_path / "lowlight",
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["val/psnr"] > metrics["val/psnr_input"] + 0.7, metrics


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_logger_save_dir_is_honoured_per_stage(compose_config, tmp_path, logger):
    from refusion_pl.train import build_loggers

    cfg = compose_config(f"logger={logger}")
    stage_dir = Path(cfg.paths.output_dir) / "diffusion"
    (default,) = build_loggers(cfg, stage_dir, "diffusion", {})
    assert Path(default.save_dir) == stage_dir  # ${paths.output_dir}/<stage>: the run directory's layout
    elsewhere = tmp_path / "elsewhere"
    cfg = compose_config(f"logger={logger}", f"logger.{logger}.save_dir={elsewhere}")
    (moved,) = build_loggers(cfg, stage_dir, "autoencoder", {})
    assert Path(moved.save_dir) == elsewhere / "autoencoder"
    assert Path(moved.log_dir).is_relative_to(elsewhere / "autoencoder" / logger)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {"TQDMProgressBar"}),  # null: follows callbacks.progress_bar
        (["trainer.enable_progress_bar=false"], {None}),  # hides the configured bar
        (["callbacks.progress_bar=null"], {None}),
        (
            ["callbacks.progress_bar=null", "trainer.enable_progress_bar=true"],
            {"TQDMProgressBar", "RichProgressBar"},
        ),
        (
            ["callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar"],
            {"RichProgressBar"},
        ),
    ],
)
def test_trainer_enable_progress_bar_is_honoured(compose_config, tmp_path, overrides, expected):
    from refusion_pl.train import build_trainer

    cfg = compose_config("model=pixel", "experiment=smoke", "logger=none", *overrides)
    trainer = build_trainer(cfg, "diffusion", tmp_path / "diffusion", 4, {})
    bar = trainer.progress_bar_callback
    assert (type(bar).__name__ if bar is not None else None) in expected  # true: Lightning's default bar


@pytest.mark.parametrize(
    ("requested", "max_steps", "expected"),
    [(500, 800, 400), (500, 1000, 500), (500, 300, 300), (7, 20, 5), (500, 997, 500)],
)
def test_validation_lands_on_the_final_step(requested: int, max_steps: int, expected: int):
    """No more than the requested interval (nor under half of it), the last validation on the final step."""
    every = validation_interval(requested, max_steps)
    assert every == expected and every <= requested
    assert max_steps % every == 0 or max_steps == 997  # a prime: no divisor near 500, keep the request
