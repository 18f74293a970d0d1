"""How a run restores degradations it was not trained on: whole held-out photos under other degradation models.

A user's shadows or dark photos do not follow the training run's synthetic model. For each run directory (both
stages of `python -m refusion_pl.train`), restores every whole held-out photo degraded with the run's own model
("own") and with each variant in ``VARIANTS``: the same degradation family with its built-in defaults and other
parameters, so that runs trained on different settings meet the same variants. At the run's own sampling settings,
it reports input PSNR, restored PSNR and the gain per variant, with the worst photo's
change. Seeds are the photo's index, as in `demo_recipes.py`. Writes ``--out`` (.json and .md).

    .venv/bin/python benchmarks/degradation_shift.py RUN [RUN ...]
    .venv/bin/python benchmarks/degradation_shift.py RUN --variants own light soft
"""

from __future__ import annotations

import json
from pathlib import Path

from block_grid import best_checkpoint
from demo_recipes import combined, mean, restore_all, results_parser

from refusion_pl.benchmark import held_out_pairs
from refusion_pl.data.degradations import DEGRADATIONS
from refusion_pl.lit import DiffusionModule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "degradation_shift"
# Overrides of the degradation's built-in defaults ("own": the run's own degradation instead). Chosen to span what real photos show, not to
# match any test set: shadows without plasma or without polygons, hard or very soft edges, light or deep ones,
# strongly tinted ones; low light brighter or darker, noisier or cleaner, with or without the gamma crush.
VARIANTS: dict[str, dict[str, dict]] = {
    "shadow": {
        "own": {},
        "plasma-only": {"num_polygons": [0, 0], "plasma_prob": 1.0},
        "polygons-hard": {"plasma_prob": 0.0, "penumbra": [0.0, 0.001], "color_cast": 0.0},
        "soft": {"penumbra": [0.03, 0.08]},
        "light": {"intensity": [0.2, 0.4]},
        "deep-big": {"intensity": [0.7, 0.9], "polygon_size": [0.4, 0.7]},
        "blue": {"color_cast": 0.4},
    },
    "lowlight": {
        "own": {},
        "brighter": {"gain": [0.35, 0.6]},
        "darker": {"gain": [0.03, 0.08]},
        "linear": {"gamma": [1.0, 1.0]},
        "noisy": {"noise": [6.0, 15.0]},
        "clean": {"noise": [0.0, 0.0], "quantize": False},
    },
}


def variant_names(task: str) -> list[str]:
    if task not in VARIANTS:
        raise SystemExit(f"no degradation variants for task {task!r}; known: {', '.join(VARIANTS)}")
    return list(VARIANTS[task])


def variant_degradation(run_degradation: dict, overrides: dict, own: bool) -> dict:
    """The run's own degradation, or its family's built-in defaults with `overrides`."""
    if own:
        return dict(run_degradation)
    name = run_degradation["name"]
    return {"name": name, **DEGRADATIONS[name].defaults, **overrides}


def evaluate_run(run_dir: Path, names: list[str] | None) -> list[dict]:
    module = DiffusionModule.from_checkpoint(best_checkpoint(run_dir))
    task = module.run_config["task"]["name"]
    data_cfg = module.run_config["data"]
    known = variant_names(task)
    unknown = [name for name in names or [] if name not in known]
    if unknown:
        raise SystemExit(f"--variants {unknown[0]!r} is not a {task} variant; known: {', '.join(known)}")
    rows = []
    for name in names or known:
        degradation = variant_degradation(data_cfg["degradation"], VARIANTS[task][name], own=name == "own")
        row = {"run": str(run_dir), "task": task, "variant": name, "degradation": degradation}
        row["photos"] = restore_all(module, held_out_pairs(data_cfg, degradation))
        rows.append(row)
        print(table_line(row), flush=True)
    return rows


def table_line(row: dict) -> str:
    photos = row["photos"]
    worst = min(p["restored"] - p["input"] for p in photos)
    gain = mean(photos, "restored") - mean(photos, "input")
    return (
        f"| {'/'.join(Path(row['run']).parts[-2:])} | {row['task']} | {row['variant']} | "
        f"{mean(photos, 'input'):.2f} | {mean(photos, 'restored'):.2f} | {gain:+.2f} | {worst:+.2f} |"
    )


HEADER = (
    "| run | task | degradation | input | restored | gain | worst photo's change |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = results_parser(__doc__, RESULTS)
    parser.add_argument(
        "--variants", nargs="+", default=None, help="variant names (default: all of the task's)"
    )
    args = parser.parse_args()
    if combined(parser, args, write):
        return
    print(HEADER, flush=True)
    write(args.out, [row for run in args.runs for row in evaluate_run(run, args.variants)])


def gain_table(rows: list[dict]) -> str:
    """One line per run and task: the gain under each variant, then the worst change of any photo."""
    runs: dict[tuple[str, str], dict[str, dict]] = {}
    for row in rows:
        runs.setdefault((row["run"], row["task"]), {})[row["variant"]] = row
    lines = []
    for task in dict.fromkeys(task for _, task in runs):
        names = list(VARIANTS.get(task, {})) or sorted(
            {v for (_, t), vs in runs.items() if t == task for v in vs}
        )
        lines += [f"| run ({task}) | {' | '.join(names)} | worst photo |", "|---" * (len(names) + 2) + "|"]
        for (run, run_task), variants in runs.items():
            if run_task != task:
                continue
            photos = [p for row in variants.values() for p in row["photos"]]
            cells = [
                f"{mean(variants[n]['photos'], 'restored') - mean(variants[n]['photos'], 'input'):+.2f}"
                if n in variants
                else "-"
                for n in names
            ]
            worst = min(p["restored"] - p["input"] for p in photos)
            lines.append(f"| {'/'.join(Path(run).parts[-2:])} | {' | '.join(cells)} | {worst:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def write(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = "\n".join(table_line(row) for row in rows)
    out.with_suffix(".md").write_text(
        "Whole held-out photos under other degradation models (PSNR in dB)\n\n"
        f"Gain per degradation model:\n\n{gain_table(rows)}\nEvery row:\n\n{HEADER}\n{lines}\n"
    )
    print(gain_table(rows))


if __name__ == "__main__":
    main()
