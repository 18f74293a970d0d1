"""What the sampler's noise does to a latent run's restorations: each run restored at several sampling settings.

For each run directory (`python -m refusion_pl.train` output, both stages), restores every whole held-out photo
and a mildly degraded copy of each (`demo_recipes.held_out_and_mild`) with each setting ``SAMPLER:TEMPERATURE:SAMPLES``, and
reports the mean PSNR, the worst change on a mild photo and the block-grid score (`block_grid.grid_score`, 64-px
period) of the restored held-out photos. Seeds are the photo's index, as in `demo_recipes.py`. Writes
``--out`` (.json and .md).

    .venv/bin/python benchmarks/temperature.py outputs/shadow/runs/A outputs/lowlight/runs/B
    .venv/bin/python benchmarks/temperature.py RUN --settings posterior:1:4 ode:0:1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from block_grid import best_checkpoint, grid_score
from demo_recipes import held_out_and_mild, mean

from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.metrics import psnr_per_image
from refusion_pl.restore import default_steps

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "temperature"
DEFAULT_SETTINGS = ["posterior:1:4", "posterior:0.25:4", "posterior:0:1", "ode:1:4", "ode:0:1"]


def parse_setting(text: str) -> dict:
    """``SAMPLER:TEMPERATURE:SAMPLES`` -> restore() keyword arguments."""
    try:
        sampler, temperature, samples = text.split(":")
        return {"sampler": sampler, "temperature": float(temperature), "samples": int(samples)}
    except ValueError:
        raise SystemExit(f"--settings {text!r}: write SAMPLER:TEMPERATURE:SAMPLES, e.g. ode:0:1") from None


@torch.no_grad()
def score(module: DiffusionModule, pairs: list, setting: dict) -> list[dict]:
    rows = []
    for index, (name, lq, gt, _) in enumerate(pairs):
        generator = torch.Generator().manual_seed(index)
        restored = module.restore(lq[None], steps=default_steps(module), generator=generator, **setting)
        rows.append(
            {
                "name": name,
                "input": float(psnr_per_image(lq[None], gt[None])[0]),
                "restored": float(psnr_per_image(restored, gt[None])[0]),
                "grid": grid_score(restored, 64),
                "target_grid": grid_score(gt[None], 64),
            }
        )
    return rows


def evaluate_run(run_dir: Path, settings: list[str]) -> list[dict]:
    module = DiffusionModule.from_checkpoint(best_checkpoint(run_dir))
    task = module.run_config["task"]["name"]
    held, mild = held_out_and_mild(module.run_config["data"], task)
    out = []
    for text in settings:
        setting = parse_setting(text)
        row = {"run": str(run_dir), "task": task, "setting": text}
        row |= {"held_out": score(module, held, setting), "mild": score(module, mild, setting)}
        out.append(row)
        print(table_line(row), flush=True)
    return out


def table_line(row: dict) -> str:
    held, mild = row["held_out"], row["mild"]
    worst = min(r["restored"] - r["input"] for r in mild)
    return (
        f"| {'/'.join(Path(row['run']).parts[-2:])} | {row['task']} | {row['setting']} | {mean(held, 'input'):.2f} | "
        f"{mean(held, 'restored'):.2f} | {mean(held, 'restored') - mean(held, 'input'):+.2f} | "
        f"{mean(mild, 'input'):.2f} | {mean(mild, 'restored'):.2f} | {worst:+.2f} | "
        f"{mean(held, 'grid'):.2f} ({mean(held, 'target_grid'):.2f}) |"
    )


HEADER = (
    "| run | task | sampler:temperature:samples | input | restored | gain | mild input | mild restored | "
    "worst mild change | grid (target) |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    for text in args.settings:
        parse_setting(text)  # fail before the first (slow) run
    print(HEADER, flush=True)
    rows = [row for run in args.runs for row in evaluate_run(run, args.settings)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = "\n".join(table_line(row) for row in rows)
    args.out.with_suffix(".md").write_text(
        f"Sampling settings on whole held-out photos\n\n{HEADER}\n{lines}\n"
    )


if __name__ == "__main__":
    main()
