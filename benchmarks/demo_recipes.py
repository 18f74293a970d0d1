"""What `make demo`'s recipe restores on whole held-out photographs: latent (x0 and noise targets) and pixel.

For each task and recipe it runs the real ``python -m refusion_pl.train experiment=demo ...`` command, then
restores the whole held-out bundled photos (not validation crops) with the run's checkpoint, at their full size,
and a mildly degraded copy of each (a photo that needs almost nothing must not come out worse). Writes
``benchmarks/results/demo_recipes.{json,md}`` with training time, input and restored PSNR.

    .venv/bin/python benchmarks/demo_recipes.py                          # shadow + lowlight x 3 recipes
    .venv/bin/python benchmarks/demo_recipes.py --tasks lowlight --recipes latent-x0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from refusion_pl.benchmark import Sample, held_out_pairs
from refusion_pl.benchmark import train as train_run
from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.metrics import psnr_per_image
from refusion_pl.restore import default_steps

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo_recipes"
RECIPES = {
    "latent-x0": ["experiment=demo"],
    "latent-noise": ["experiment=demo", "sde.prediction=noise", "sde.loss=mean"],  # the paper's objective
    "pixel-x0": ["experiment=demo_pixel"],
}
# Degradations a photo barely needs restoring from (the task's own model with gentle parameters).
MILD = {
    "shadow": {"intensity": [0.05, 0.1], "plasma_prob": 0.0, "num_polygons": [1, 1]},
    "lowlight": {"gain": [0.9, 0.95], "gamma": [1.0, 1.05], "noise": [0.5, 1.0]},
}


def train(task: str, recipe: str, run_dir: Path, extra: list[str]) -> float:
    return train_run([*RECIPES[recipe], f"task={task}", *extra], run_dir)


@torch.no_grad()
def restore_all(module: DiffusionModule, samples: list[Sample]) -> list[dict]:
    rows = []
    for index, (name, lq, gt, _) in enumerate(samples):
        generator = torch.Generator().manual_seed(index)
        restored = module.restore(lq[None], steps=default_steps(module), generator=generator)
        rows.append(
            {
                "name": name,
                "size": list(gt.shape[-2:]),
                "input": float(psnr_per_image(lq[None], gt[None])[0]),
                "restored": float(psnr_per_image(restored, gt[None])[0]),
            }
        )
    return rows


def held_out_and_mild(data_cfg: dict, task: str) -> tuple[list[Sample], list[Sample]]:
    """The whole held-out photos degraded as the run was trained, and their mild copies (``MILD``)."""
    mild = {**data_cfg["degradation"], **MILD.get(task, {})}
    return held_out_pairs(data_cfg), held_out_pairs(data_cfg, mild)


def evaluate(checkpoint: Path, task: str) -> dict:
    module = DiffusionModule.from_checkpoint(checkpoint)
    held, mild = held_out_and_mild(module.run_config["data"], task)
    return {"held_out": restore_all(module, held), "mild": restore_all(module, mild)}


def mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def quality_cells(run: dict) -> str:
    """Train minutes, then input / restored / gain on the held-out photos and on their mild copies."""
    held, mild = run["held_out"], run["mild"]
    return (
        f"{run['train_seconds'] / 60:.1f} | {mean(held, 'input'):.2f} | {mean(held, 'restored'):.2f} | "
        f"{mean(held, 'restored') - mean(held, 'input'):+.2f} | {mean(mild, 'input'):.2f} | "
        f"{mean(mild, 'restored'):.2f} | {min(r['restored'] - r['input'] for r in mild):+.2f} (worst)"
    )


QUALITY_HEADER = "train (min) | input (dB) | restored (dB) | gain | mild input | mild restored | mild gain"


def table(runs: list[dict]) -> str:
    lines = [f"| task | recipe | {QUALITY_HEADER} |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {run['task']} | {run['recipe']} | {quality_cells(run)} |" for run in runs]
    return "\n".join(lines)


def results_parser(doc: str | None, out: Path) -> argparse.ArgumentParser:
    """The parser of a script over run directories: RUN..., ``--out`` and ``--combine`` (merge earlier results)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument(
        "--combine", nargs="+", type=Path, default=None, help="only merge these results (.json) into --out"
    )
    return parser


def combined(parser: argparse.ArgumentParser, args: argparse.Namespace, write: Callable) -> bool:
    """True when ``--combine`` merged its result files into ``--out`` (nothing left to do); no runs is an error."""
    if args.combine:
        write(args.out, [item for path in args.combine for item in json.loads(path.read_text())])
        return True
    if not args.runs:
        parser.error("give at least one run directory (or --combine RESULTS.json ...)")
    return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["shadow", "lowlight"])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every training run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories (figures) here")
    parser.add_argument(
        "--combine", nargs="+", type=Path, default=None, help="only merge these results (.json) into --out"
    )
    args = parser.parse_args()
    if args.combine:
        runs = [run for path in args.combine for run in json.loads(path.read_text())]
        write(args.out, runs, "combined: " + " ".join(p.name for p in args.combine))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        for task in args.tasks:
            for recipe in args.recipes:
                run_dir = Path(tmp) / f"{task}-{recipe}"
                seconds = train(task, recipe, run_dir, args.extra)
                summary = json.loads((run_dir / "metrics.json").read_text())
                checkpoint = Path(summary["stages"]["diffusion"]["checkpoint"])
                run = {"task": task, "recipe": recipe, "train_seconds": seconds, **evaluate(checkpoint, task)}
                runs.append(run)
                print(table([run]).splitlines()[-1], flush=True)
    write(args.out, runs, " ".join(sys.argv[1:]) or "defaults")


def write(out: Path, runs: list[dict], how: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(runs, indent=2))
    header = f"Demo recipes on whole held-out photos (`{how}`)\n\n"
    out.with_suffix(".md").write_text(header + table(runs) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
