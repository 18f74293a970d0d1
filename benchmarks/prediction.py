"""Short-run quality of the two network targets: ``sde.prediction=noise`` (the paper) against ``x0``.

Trains the tiny pixel model for a few hundred steps on the bundled photos for each task, target and seed, with
the real ``python -m refusion_pl.train`` command (two runs side by side), and reads validation PSNR back from
each run's ``metrics.json``. Writes ``benchmarks/results/prediction.{json,md}``.

    .venv/bin/python benchmarks/prediction.py                      # 5 tasks x 2 targets, 2 runs at a time
    .venv/bin/python benchmarks/prediction.py --tasks shadow --steps 1500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prediction"
PREDICTIONS = ("noise", "x0")


def overrides(task: str, prediction: str, seed: int, steps: int, lr: float, val_size: int) -> list[str]:
    return [
        f"task={task}", "model=pixel", "experiment=smoke", "optim=adamw", f"optim.lr={lr}",
        f"sde.prediction={prediction}", "sde.sample_steps=null", f"seed={seed}",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=1.0",
        "data.crop_size=32", "data.batch_size=8", f"data.train_samples_per_epoch={8 * steps}",
        f"data.val_size={val_size}", "data.max_val_images=3", "val.num_images=3",
        "figure.enabled=false", "logger=csv", "callbacks.progress_bar=null",
    ]  # fmt: skip


def run_one(job: tuple[str, str, int], args: argparse.Namespace, tmp: Path) -> dict:
    task, prediction, seed = job
    run_dir = tmp / f"{task}-{prediction}-{seed}"
    cmd = [
        sys.executable, "-m", "refusion_pl.train",
        *overrides(task, prediction, seed, args.steps, args.lr, args.val_size), f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    if result.returncode != 0:
        raise RuntimeError(f"{task}/{prediction}/seed {seed} failed:\n{result.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())["final"]
    print(f"{task:8s} {prediction:5s} seed {seed}: {metrics['val/psnr']:.2f} dB", flush=True)
    return {"task": task, "prediction": prediction, "seed": seed, **metrics}


def table(runs: list[dict], tasks: list[str]) -> str:
    lines = [
        "| task | input PSNR | noise (paper) | x0 | noise - input | x0 - input |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        psnr = {
            p: mean(r["val/psnr"] for r in runs if r["task"] == task and r["prediction"] == p)
            for p in PREDICTIONS
        }
        lq = next(r["val/psnr_input"] for r in runs if r["task"] == task)
        lines.append(
            f"| {task} | {lq:.2f} | {psnr['noise']:.2f} | {psnr['x0']:.2f} | "
            f"{psnr['noise'] - lq:+.2f} | {psnr['x0'] - lq:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["shadow", "denoise", "derain", "deblur", "dehaze"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val-size", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    jobs = [(t, p, s) for t in args.tasks for p in PREDICTIONS for s in args.seeds]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(job, args, Path(tmp)), jobs))
    setup = (
        f"tiny pixel model (width 8), {args.steps} steps AdamW lr {args.lr}, batch 8 of 32 px crops, "
        f"validation: 3 held-out photos ({args.val_size} px centre crops), all T=100 steps, seeds {args.seeds}"
    )
    text = table(runs, args.tasks) + f"\n{setup}\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    keep = ("task", "prediction", "seed", "val/psnr", "val/ssim", "val/psnr_input")
    result = {"setup": setup, "runs": [{k: r[k] for k in keep if k in r} for r in runs]}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
