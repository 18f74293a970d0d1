"""``python -m refusion_pl.benchmark``: the results table of the synthetic tasks and a miniature ablation.

For each task it trains ``make demo``'s recipe with the real ``python -m refusion_pl.train`` command, then
restores the whole held-out bundled photos (fixed, seeded degradations) with the run's checkpoint and scores
them against the degraded input (the identity baseline), at the checkpoint's sampling steps and at fewer.
Then a miniature of the paper's ablations on one task as Hydra multiruns (``sde.max_sigma``; Lion / AdamW /
Adam with cosine or multistep decay; latent vs pixel), each summarised by ``refusion_pl.report``.

Every task's result is written as soon as it is done (``tasks/<task>.json``) and skipped on a rerun unless
``--force``; a failed task is recorded with its error and the others go on. These are CPU-budget miniatures,
not the paper's GPU runs.

    python -m refusion_pl.benchmark                              # 9 tasks + ablation (about 1.5 h on 1 thread)
    python -m refusion_pl.benchmark --tasks shadow sr --no-ablation
    python -m refusion_pl.benchmark --ablation-only --ablation-extra trainer.max_steps=300
    python -m refusion_pl.benchmark --quick --out /tmp/results  # seconds: experiment=smoke sizes
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refusion_pl.files import atomic_write, atomic_write_json, atomic_write_text

TASKS = ("shadow", "derain", "denoise", "deblur", "dehaze", "lowlight", "sr", "inpaint", "jpeg")
DEFAULT_OUT = Path("benchmarks/results/results")
DEFAULT_WORK = Path("outputs/benchmark")
RECIPE = ("experiment=demo", "optim=adamw")  # `make demo`'s recipe (DEMO_ARGS sets optim=adamw)
QUICK_RECIPE = ("experiment=smoke", "optim=adamw", "figure.enabled=false")
QUICK_CROP = 48  # --quick scores centre crops of the held-out photos (seconds, not minutes)
# Per task: what the latent model needs beyond the recipe (its autoencoder stage swaps LQ and GT, so the
# super-resolution LQ is brought to the target size in the batch).
TASK_OVERRIDES = {"sr": ("data.upsample_lq=true",)}
FEWER_STEPS = (5, 10)
ABLATION_STEPS = (
    20  # every ablation checkpoint restores with this many steps, so speeds compare like for like
)
ABLATION_EXTRA = ("trainer.max_steps=500",)
FIGURE_CROP = 128
# Each ablation: the Hydra multirun's swept overrides, and whether its jobs reuse one trained autoencoder
# (their choices only change the diffusion stage, so stage 1 is trained once and shared).
ABLATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "max_sigma": (("sde.max_sigma=10,30,50,70",), True),
    "optimiser": (("optim=lion,adamw,adam", "scheduler=cosine,multistep"), True),
    "model": (("experiment=demo,demo_pixel",), False),
}


class BenchmarkError(ValueError):
    """A bad option (unknown task, ablation or override); the message names it."""


class TrainingFailed(RuntimeError):
    """A training command exited with an error; the message is its last line, ``stderr`` the rest."""

    def __init__(self, message: str, command: str, stderr: str) -> None:
        super().__init__(message)
        self.command, self.stderr = command, stderr[-3000:]


# ---- training ----------------------------------------------------------------------------------------------------
def train(overrides: Sequence[str], run_dir: Path, multirun: bool = False) -> float:
    """Run ``python -m refusion_pl.train`` (a multirun into ``run_dir`` with ``multirun``); wall seconds.

    A subprocess, as a user runs it: each run gets a fresh process, so runs cannot leak state into each other.
    """
    where = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    cmd = [
        sys.executable, "-m", "refusion_pl.train", *(["-m"] if multirun else []), *overrides, "logger=csv",
        "callbacks.progress_bar=null", where,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise TrainingFailed(
            f"training failed (exit {result.returncode}): {last}", shlex.join(cmd[1:]), result.stderr
        )
    return time.perf_counter() - start


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` (stages, checkpoints, final metrics)."""
    return json.loads((run_dir / "metrics.json").read_text())


# ---- held-out pairs and scoring -------------------------------------------------------------------------------
Sample = tuple[str, Any, Any, Any]  # (name, lq [C,h,w], gt [C,H,W], cond_scalars or None)


def held_out_pairs(
    data_cfg: Mapping[str, Any], degradation: Mapping[str, Any] | None = None, crop: int | None = None
) -> list[Sample]:
    """Every whole held-out photo of a run's data settings, degraded with ``degradation`` (default: the run's).

    The degradation of each photo is drawn from ``data.val_seed`` and its index, so every call (and machine)
    gives the same pairs. ``crop`` centre-crops them (quick checks).
    """
    from omegaconf import OmegaConf

    from refusion_pl.evaluate import build_datamodule, test_pairs

    cfg = OmegaConf.create(dict(data_cfg))
    cfg.val_size, cfg.max_val_images = crop, None
    if degradation is not None:
        cfg.degradation = dict(degradation)
    return list(test_pairs(build_datamodule(OmegaConf.create({"data": cfg})), None))


@dataclass
class Scores:
    """Mean PSNR/SSIM of the identity baseline and of the restorations at each step count."""

    sampler: str
    default_steps: int
    images: list[str]
    identity: dict[str, float]
    restored: dict[int, dict[str, float]]  # steps -> psnr, ssim, seconds (per image)
    first: tuple[Any, Any, Any]  # (input, restored at the default steps, target) of the first photo


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def _psnr_ssim(scores: Mapping[str, float]) -> dict[str, float]:
    return {"psnr": scores["psnr"], "ssim": scores["ssim"]}


def score_checkpoint(ckpt: Path, steps: Sequence[int | None], crop: int | None = None) -> Scores:
    """Restore the run's held-out photos with ``ckpt`` at each of ``steps`` (None: its default) and score them.

    The same scoring as ``refusion-evaluate`` (RGB PSNR/SSIM after the task's border crop; the LQ brought to
    the target size first), with the checkpoint's own sampler and a fixed sampling seed.
    """
    import torch
    from omegaconf import OmegaConf

    from refusion_pl.evaluate import Scorer, resolve_task_and_data
    from refusion_pl.lit.base import match_size
    from refusion_pl.restore import Restorer, load_model

    device = torch.device("cpu")
    cfg = OmegaConf.create(
        {
            "ckpt": str(ckpt),
            "sampler": None,
            "sample_steps": None,
            "spacing": None,
            "seed": 0,
            "device": "cpu",
        }
        | {"precision": "fp32", "tile": "none", "max_memory": None, "task": None, "data": None, "crop": None}
    )
    module = load_model(ckpt, None, None, device)
    resolve_task_and_data(cfg, module)
    pairs = held_out_pairs(OmegaConf.to_container(cfg.data, resolve=True), crop=crop)  # type: ignore[arg-type]
    scorer = Scorer(int(cfg.task.get("crop_border", 0) or 0), use_lpips=False, device=device)
    inputs = [match_size(lq[None], gt.shape[-2:])[0] for _, lq, gt, _ in pairs]
    identity = _mean([_psnr_ssim(scorer(lq, pair[2])) for lq, pair in zip(inputs, pairs, strict=True)])
    base = Restorer.from_config(cfg, module, device, progress=False, upscale=False)
    default = int(base.steps or module.sde.T)
    restored: dict[int, dict[str, float]] = {}
    first = None
    for count in dict.fromkeys(int(s or default) for s in steps):
        restorer = Restorer.from_config(cfg, module, device, progress=False, upscale=False, steps=count)
        rows = []
        for lq, (_, _, gt, scalars) in zip(inputs, pairs, strict=True):
            start = time.perf_counter()
            out = restorer(lq, scalars)
            seconds = time.perf_counter() - start
            rows.append({**_psnr_ssim(scorer(out, gt)), "seconds": seconds})
            if count == default and first is None:
                first = (lq, out, gt)
        restored[count] = _mean(rows)
    if first is None:  # the default step count was not among ``steps``
        first = (inputs[0], base(inputs[0], pairs[0][3]), pairs[0][2])
    names = [name for name, *_ in pairs]
    return Scores(str(base.sampler), default, names, identity, restored, first)


# ---- the task table ----------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Where results go and how every run is trained (from the command line)."""

    out: Path
    work: Path
    recipe: tuple[str, ...] = RECIPE
    extra: tuple[str, ...] = ()
    ablation_extra: tuple[str, ...] = ABLATION_EXTRA
    ablation_task: str = "shadow"
    crop: int | None = None
    force: bool = False


def check_tasks(names: Sequence[str]) -> list[str]:
    """The tasks asked for, in order, once each; an unknown name is an error that names it."""
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise BenchmarkError(f"unknown task(s): {', '.join(unknown)}; choose from: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def task_path(out: Path, task: str) -> Path:
    return out / "tasks" / f"{task}.json"


def finished(path: Path) -> dict[str, Any] | None:
    """A result written by an earlier run that completed (failed ones are run again)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("status") == "ok" else None


def fresh_dir(parent: Path) -> Path:
    """A new run directory (an old one would make ``train`` resume its last checkpoint)."""
    return parent / time.strftime("%Y-%m-%d_%H-%M-%S")


def run_budget(run_dir: Path) -> dict[str, Any]:
    """What a run trained: model, network width, steps and crop of each stage (from its composed config)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    budget = {
        "model": cfg.model.name,
        "nafnet_width": cfg.net.nafnet.width,
        "diffusion_steps": cfg.trainer.max_steps,
        "crop": cfg.data.crop_size,
        "batch": cfg.data.batch_size,
    }
    if cfg.model.name == "latent" and cfg.get("stage", "auto") != "diffusion":
        budget["autoencoder_steps"] = cfg.autoencoder.max_steps
    return budget


def save_crops(path: Path, images: tuple[Any, Any, Any], size: int = FIGURE_CROP) -> Path:
    """Input | restored | target centre crops of one photo, side by side, as a PNG."""
    import torch

    from refusion_pl.data.io import write_image

    height, width = images[2].shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    crops = [image[..., top : top + size, left : left + size].clamp(0, 1) for image in images]
    return write_image(path, torch.cat(crops, dim=-1))


def run_task(task: str, settings: Settings) -> dict[str, Any]:
    """Train, score and record one task (skipped when already recorded, unless forced); never raises."""
    path = task_path(settings.out, task)
    done = finished(path)
    if done is not None and not settings.force:
        print(f"{task}: done earlier ({path}), skipped", flush=True)
        return done
    overrides = [*settings.recipe, f"task={task}", *TASK_OVERRIDES.get(task, ()), *settings.extra]
    result: dict[str, Any] = {"task": task, "overrides": overrides, "commit": git_commit()}
    try:
        run_dir = fresh_dir(settings.work / "tasks" / task)
        result["run_dir"] = str(run_dir)
        result["train_seconds"] = train(overrides, run_dir)
        stages = run_summary(run_dir)["stages"]
        checkpoint = Path(stages["diffusion"]["checkpoint"])
        scores = score_checkpoint(checkpoint, [*FEWER_STEPS, None], settings.crop)
        crops = save_crops(settings.out / "crops" / f"{task}.png", scores.first)
        result |= {
            "status": "ok",
            "budget": run_budget(run_dir),
            "checkpoint": str(checkpoint),
            "autoencoder_checkpoint": stages.get("autoencoder", {}).get("checkpoint"),
            "sampler": scores.sampler,
            "steps": scores.default_steps,
            "images": scores.images,
            "identity": scores.identity,
            "restored": scores.restored[scores.default_steps],
            "fewer_steps": {str(k): v for k, v in scores.restored.items() if k != scores.default_steps},
            "crops": crops.name,
        }
    except Exception as err:  # recorded, and the other tasks go on
        traceback.print_exc()
        result |= {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        if isinstance(err, TrainingFailed):
            result |= {"command": err.command, "stderr": err.stderr}
    atomic_write_json(path, result)
    print(task_row(result), flush=True)
    return result


TASK_COLUMNS = (
    "task", "status", "train_min", "input_psnr", "input_ssim", "restored_psnr", "restored_ssim", "gain_db",
    "steps", "psnr_5_steps", "psnr_10_steps", "sec_per_image",
)  # fmt: skip


def task_values(result: Mapping[str, Any]) -> dict[str, Any]:
    """One table row of a task result: the numbers exactly as recorded (formatting happens in the tables)."""
    values: dict[str, Any] = {"task": result["task"], "status": result.get("status", "failed")}
    if values["status"] != "ok":
        return values
    identity, restored = result["identity"], result["restored"]
    values |= {
        "train_min": result["train_seconds"] / 60,
        "input_psnr": identity["psnr"],
        "input_ssim": identity["ssim"],
        "restored_psnr": restored["psnr"],
        "restored_ssim": restored["ssim"],
        "gain_db": restored["psnr"] - identity["psnr"],
        "steps": result["steps"],
        "sec_per_image": restored["seconds"],
    }
    for steps in FEWER_STEPS:
        values[f"psnr_{steps}_steps"] = (result["fewer_steps"].get(str(steps)) or {}).get("psnr")
    return values


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


FORMATS = {"input_ssim": 4, "restored_ssim": 4, "train_min": 1, "sec_per_image": 2}


def task_row(result: Mapping[str, Any]) -> str:
    values = task_values(result)
    if values["status"] != "ok":
        error = (result.get("error") or "no error recorded").splitlines()[0][:300].replace("|", "\\|")
        return f"| {values['task']} | failed: {error} |"
    cells = [_cell(values.get(col), FORMATS.get(col, 2)) for col in TASK_COLUMNS if col != "status"]
    cells[TASK_COLUMNS.index("gain_db") - 1] = f"{values['gain_db']:+.2f}"
    return "| " + " | ".join(cells) + " |"


def task_table(results: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "| task | train (min) | input PSNR | input SSIM | restored PSNR | restored SSIM | gain (dB) | steps "
        f"| PSNR @{FEWER_STEPS[0]} | PSNR @{FEWER_STEPS[1]} | s/image |"
    )
    lines = [head, "|" + "---|" * 11]
    lines += [task_row(result) for result in results]
    return "\n".join(lines)


def task_csv(results: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*TASK_COLUMNS, "error"], lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow({**task_values(result), "error": result.get("error", "")})
    return buffer.getvalue()


def crops_figure(out: Path, results: Sequence[Mapping[str, Any]]) -> Path | None:
    """input | restored | target crops, one row per finished task, with the PSNRs of the whole photos."""
    from matplotlib.figure import Figure

    from refusion_pl.data.io import read_image

    rows = [r for r in results if r.get("status") == "ok" and (out / "crops" / r["crops"]).is_file()]
    if not rows:
        return None
    fig = Figure(figsize=(4.8, 1.75 * len(rows)), layout="constrained")  # crops near their own 128 pixels
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for row_axes, result in zip(axes, rows, strict=True):
        strip, _ = read_image(out / "crops" / result["crops"])
        titles = (
            f"{result['task']}: input {result['identity']['psnr']:.2f} dB",
            f"restored {result['restored']['psnr']:.2f} dB",
            "target",
        )
        for ax, crop, title in zip(row_axes, strip.chunk(3, dim=-1), titles, strict=True):
            ax.imshow(crop.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    return atomic_write(out / "crops.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))


# ---- ablation ----------------------------------------------------------------------------------------------------
def ablation_sweeps(settings: Settings) -> dict[str, tuple[tuple[str, ...], bool]]:
    """The ablations' swept overrides; latent vs pixel is demo vs demo_pixel under the demo recipe."""
    sweeps = dict(ABLATIONS)
    if "experiment=demo" not in settings.recipe:
        sweeps["model"] = (("model=latent,pixel",), False)
    return sweeps


def shared_autoencoder(settings: Settings) -> str:
    """The stage-1 checkpoint the diffusion-only ablations share: the task run's, else one trained here."""
    task_result = finished(task_path(settings.out, settings.ablation_task))
    shared = (task_result or {}).get("autoencoder_checkpoint")
    if shared and Path(shared).is_file():
        return str(Path(shared).resolve())  # jobs may run elsewhere (hydra.job.chdir)
    record = settings.out / "ablation" / "autoencoder.json"
    done = finished(record)
    if done is not None and Path(done["checkpoint"]).is_file() and not settings.force:
        return str(done["checkpoint"])
    run_dir = fresh_dir(settings.work / "ablation" / "autoencoder")
    task = settings.ablation_task
    overrides = [*settings.recipe, f"task={task}", *TASK_OVERRIDES.get(task, ()), "stage=autoencoder"]
    seconds = train(overrides, run_dir)
    checkpoint = str(Path(run_summary(run_dir)["stages"]["autoencoder"]["checkpoint"]).resolve())
    atomic_write_json(record, {"status": "ok", "checkpoint": checkpoint, "train_seconds": seconds})
    return str(checkpoint)


def job_seconds(job_dir: Path) -> float | None:
    """Wall time of one multirun job: its composed config written at the start to its final metrics.json."""
    start, end = job_dir / "config.yaml", job_dir / "metrics.json"
    if not (start.is_file() and end.is_file()):
        return None
    return end.stat().st_mtime - start.stat().st_mtime


def run_ablation(name: str, settings: Settings) -> dict[str, Any]:
    """One Hydra multirun on the ablation task, its sweep report, and every job scored on the held-out photos."""
    from refusion_pl.report import OK, collect, report, swept_keys

    path = settings.out / "ablation" / f"{name}.json"
    done = finished(path)
    if done is not None and not settings.force:
        print(f"ablation {name}: done earlier ({path}), skipped", flush=True)
        return done
    swept, shares_autoencoder = ablation_sweeps(settings)[name]
    task = settings.ablation_task
    base = [*settings.recipe, f"task={task}", *TASK_OVERRIDES.get(task, ()), *settings.ablation_extra]
    if shares_autoencoder:
        base += ["stage=diffusion", f"autoencoder.ckpt={shared_autoencoder(settings)}"]
    if any(o.startswith("experiment=") for o in swept):
        base = [o for o in base if not o.startswith("experiment=")]
    sweep_dir = fresh_dir(settings.work / "ablation" / name)
    result: dict[str, Any] = {"ablation": name, "overrides": [*base, *swept], "sweep_dir": str(sweep_dir)}
    result["commit"] = git_commit()
    try:
        train([*base, *swept], sweep_dir, multirun=True)
    except TrainingFailed as err:  # a failed job stops the sweep; the report lists what finished
        result["error"] = str(err).splitlines()[0]
    try:
        report(sweep_dir)
        keep = settings.out / "ablation" / name
        for made in [sweep_dir / "report.md", sweep_dir / "report.csv", *sweep_dir.glob("plot_*.png")]:
            data = made.read_bytes()
            atomic_write(keep / made.name, lambda tmp, data=data: tmp.write_bytes(data))
        jobs = collect(sweep_dir)
        keys = swept_keys(jobs)
        rows = []
        for job in jobs:
            row: dict[str, Any] = {"job": job.name, **{k: job.overrides.get(k, "") for k in keys}}
            row |= {"status": job.status, "val_psnr": job.metrics.get("val/psnr")}
            row |= {
                "steps_per_sec": job.metrics.get("train/steps_per_sec"),
                "train_seconds": job_seconds(job.path),
            }
            if job.status == OK:
                checkpoint = Path(run_summary(job.path)["stages"]["diffusion"]["checkpoint"])
                scores = score_checkpoint(checkpoint, [ABLATION_STEPS], settings.crop)
                row |= {"steps": ABLATION_STEPS, "input_psnr": scores.identity["psnr"]}
                row |= {f"restored_{k}": v for k, v in scores.restored[ABLATION_STEPS].items()}
            else:
                row["error"] = job.error
            rows.append(row)
        result |= {"status": "ok" if rows else "failed", "keys": keys, "jobs": rows}
    except Exception as err:
        traceback.print_exc()
        result |= {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    atomic_write_json(path, result)
    return result


def ablation_table(result: Mapping[str, Any]) -> str:
    """Held-out PSNR/SSIM (at ABLATION_STEPS steps), sampling and training speed of every job of a sweep."""
    if result.get("status") != "ok":
        return f"failed: {result.get('error', 'no error recorded')}"
    keys = list(result["keys"])
    head = [*keys, "status", "val/psnr", "held-out PSNR", "SSIM", "s/image", "train (min)", "steps/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for job in result["jobs"]:
        minutes = job["train_seconds"] / 60 if job.get("train_seconds") is not None else None
        cells = [
            *(str(job.get(k, "")) for k in keys),
            job["status"] if job["status"] == "completed" else f"{job['status']}: {job.get('error', '')}",
            _cell(job.get("val_psnr")),
            _cell(job.get("restored_psnr")),
            _cell(job.get("restored_ssim"), 4),
            _cell(job.get("restored_seconds"), 2),
            _cell(minutes, 1),
            _cell(job.get("steps_per_sec"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- the results page ------------------------------------------------------------------------------------------
def git_commit() -> str:
    """HEAD's commit, marked ``+changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


def recorded_commits(results: Sequence[Mapping[str, Any]]) -> str:
    """The commits the recorded results were produced at, when they differ from this page's."""
    commits = sorted({str(r["commit"]) for r in results if r.get("commit")})
    return f" (results recorded at {', '.join(f'`{c}`' for c in commits)})" if commits else ""


def machine() -> str:
    import torch

    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, {threads} thread(s) per run, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def budget_line(results: Sequence[Mapping[str, Any]]) -> str:
    budgets = {json.dumps(r["budget"], sort_keys=True) for r in results if r.get("status") == "ok"}
    return "; ".join(", ".join(f"{k}={v}" for k, v in json.loads(b).items()) for b in sorted(budgets))


def results_markdown(
    results: Sequence[Mapping[str, Any]],
    ablations: Sequence[Mapping[str, Any]],
    settings: Settings,
    command: str,
) -> str:
    trained = [r for r in results if r.get("status") == "ok"]
    minutes = sum(r["train_seconds"] for r in trained) / 60
    lines = [
        "# Results on the bundled photos (CPU-budget miniatures)",
        "",
        "**These are CPU-budget miniatures, not the paper's GPU runs.** Each task trains the recipe "
        f"(`{' '.join(settings.recipe)}`{' ' + ' '.join(settings.extra) if settings.extra else ''}: "
        f"{budget_line(results) or 'no finished run'}) for minutes on a CPU, on 6 bundled scikit-image photos "
        "with a synthetic degradation, and is scored on the 3 held-out photos (chelsea, rocket, "
        "immunohistochemistry), whole, with fixed seeded degradations. The paper trains the full-size networks "
        "for hundreds of thousands of steps on real datasets on GPUs; its numbers are not comparable with these.",
        "",
        f"- command: `{command}`",
        f"- commit: `{git_commit()}`{recorded_commits([*results, *ablations])}",
        f"- machine: {machine()}; {len(trained)} task(s) trained in {minutes:.0f} min in total",
        "",
        "## Tasks",
        "",
        "Input: the degraded photo against the target (identity baseline; sr: the LQ upsampled bicubically to "
        "the target size). Restored: the checkpoint's own sampler "
        "and step count (`steps`); PSNR @5 and @10: the same checkpoint with fewer steps. PSNR in dB on RGB, "
        "SSIM on RGB (Gaussian 11x11), both after the task's border crop, means over the held-out photos. "
        "Train: wall time of the training command (both stages, its validation and figure). s/image: sampling "
        "time per whole photo at `steps`.",
        "",
        task_table(results),
        "",
    ]
    if any(r.get("status") == "ok" for r in results):
        lines += [
            f"Centre {FIGURE_CROP}-pixel crops of the first held-out photo (input | restored | target): "
            "![crops](crops.png)",
            "",
        ]
    if ablations:
        task = settings.ablation_task
        lines += [
            f"## Ablation on {task} (miniature)",
            "",
            f"Hydra multiruns of the same recipe on `task={task}` with "
            f"{'`' + ' '.join(settings.ablation_extra) + '`' if settings.ablation_extra else 'no further overrides'}. "
            "The max_sigma and optimiser sweeps train the diffusion stage only, on one shared stage-1 "
            "autoencoder (their choices do not touch stage 1); latent vs pixel trains each model whole. Every "
            f"job's checkpoint restores the held-out photos with {ABLATION_STEPS} steps (speeds compare like "
            "for like); val/psnr is the run's own validation (the same photos, its own step count). "
            "Train: the job's wall time; steps/s: training throughput of its last stage.",
            "",
        ]
        for result in ablations:
            name = result["ablation"]
            lines += [f"### {name}", "", ablation_table(result), ""]
            if result.get("error") and result.get("status") == "ok":
                lines += [f"The sweep stopped early: {result['error']}", ""]
            lines += [
                f"Sweep report (`refusion_pl.report`): [ablation/{name}/report.md](ablation/{name}/report.md)",
                "",
            ]
    return "\n".join(lines)


def write_results(settings: Settings, tasks: Sequence[str], ablations: Sequence[str], command: str) -> None:
    """results.md, results.csv and crops.png from every recorded task and ablation (finished or failed)."""
    results = [json.loads(p.read_text()) for t in tasks if (p := task_path(settings.out, t)).is_file()]
    found = [settings.out / "ablation" / f"{name}.json" for name in ablations]
    recorded = [json.loads(p.read_text()) for p in found if p.is_file()]
    atomic_write_text(settings.out / "results.csv", task_csv(results))
    crops_figure(settings.out, results)
    atomic_write_text(settings.out / "results.md", results_markdown(results, recorded, settings, command))


# ---- entry point -----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"default: {' '.join(TASKS)}")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results (small files; default %(default)s)"
    )
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help="run directories, checkpoints (%(default)s)"
    )
    parser.add_argument(
        "--extra", nargs="*", default=[], help="overrides for every task run, e.g. trainer.max_steps=500"
    )
    parser.add_argument(
        "--ablation-task", default="shadow", help="task of the ablation (default %(default)s)"
    )
    parser.add_argument(
        "--ablation-extra",
        nargs="*",
        default=None,
        help=f"overrides for every ablation job (default: {' '.join(ABLATION_EXTRA)})",
    )
    parser.add_argument(
        "--ablations", nargs="+", default=list(ABLATIONS), help=f"default: {' '.join(ABLATIONS)}"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-ablation", action="store_true", help="the task table only")
    which.add_argument("--ablation-only", action="store_true", help="the ablation only")
    parser.add_argument(
        "--quick", action="store_true", help="experiment=smoke sizes, 48-pixel crops: seconds"
    )
    parser.add_argument("--force", action="store_true", help="rerun tasks and ablations recorded as done")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    unknown = [name for name in args.ablations if name not in ABLATIONS]
    if unknown:
        raise BenchmarkError(
            f"unknown ablation(s): {', '.join(unknown)}; choose from: {', '.join(ABLATIONS)}"
        )
    check_tasks([args.ablation_task])
    bad = [o for o in [*args.extra, *(args.ablation_extra or [])] if "=" not in o]
    if bad:
        raise BenchmarkError(f"overrides must be key=value: {', '.join(bad)}")
    extra = args.ablation_extra
    return Settings(
        out=args.out,
        work=args.work,
        recipe=QUICK_RECIPE if args.quick else RECIPE,
        extra=tuple(args.extra),
        ablation_extra=tuple(extra if extra is not None else (() if args.quick else ABLATION_EXTRA)),
        ablation_task=args.ablation_task,
        crop=QUICK_CROP if args.quick else None,
        force=args.force,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m refusion_pl.benchmark") -> int:
    args = parse_args(argv, prog)
    try:
        tasks = [] if args.ablation_only else check_tasks(args.tasks)
        settings = settings_from(args)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ablations = [] if args.no_ablation else list(dict.fromkeys(args.ablations))
    command = shlex.join([*prog.split(), *(sys.argv[1:] if argv is None else argv)])
    failed = 0
    for task in tasks:
        failed += run_task(task, settings).get("status") != "ok"
        write_results(settings, tasks, [], command)
    for name in ablations:
        failed += run_ablation(name, settings).get("status") != "ok"
        write_results(settings, tasks, ablations, command)
    write_results(settings, tasks, ablations, command)
    print((settings.out / "results.md").read_text())
    if failed:
        print(f"{failed} task(s) or ablation(s) failed: see {settings.out / 'results.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
