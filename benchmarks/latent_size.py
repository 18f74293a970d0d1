"""Stage-2 latent size against whole-photo quality: at which training crop does restoring whole photos stop degrading?

The noise network's global channel attention averages over the whole latent, so a network trained on tiny
latents sees other statistics on a whole photograph. For each ``data.crop_size`` this trains the diffusion stage
alone (``stage=diffusion``) with the real command over one fixed stage-1 checkpoint, the demo recipe and the same
number of steps and batch size, then restores the whole held-out photos (and mildly degraded copies) at full size.
Writes ``benchmarks/results/latent_size.{json,md}``.

    .venv/bin/python benchmarks/latent_size.py --task shadow --autoencoder RUN/autoencoder/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from demo_recipes import QUALITY_HEADER, evaluate, quality_cells, train

from refusion_pl.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "latent_size"
DOWNSCALE = 8  # the autoencoder's 2 ** (len(ch_mult) - 1)


def table(runs: list[dict]) -> str:
    lines = [f"| crop (px) | latent | {QUALITY_HEADER} |", "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        side = run["crop"] // DOWNSCALE
        lines.append(f"| {run['crop']} | {side}x{side} | {quality_cells(run)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="shadow")
    parser.add_argument(
        "--autoencoder", type=Path, required=True, help="a stage-1 checkpoint of the demo recipe"
    )
    parser.add_argument("--crops", nargs="+", type=int, default=[32, 64, 128, 192])
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every training run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.autoencoder.is_file():
        parser.error(f"--autoencoder {args.autoencoder}: no such checkpoint")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for crop in args.crops:
            run_dir = Path(tmp) / f"crop{crop}"
            extra = ["stage=diffusion", f"autoencoder.ckpt={args.autoencoder}", f"data.crop_size={crop}"]
            seconds = train(args.task, "latent-x0", run_dir, [*extra, *args.extra])
            summary = json.loads((run_dir / "metrics.json").read_text())
            checkpoint = Path(summary["stages"]["diffusion"]["checkpoint"])
            runs.append({"crop": crop, "train_seconds": seconds, **evaluate(checkpoint, args.task)})
            print(table(runs[-1:]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(runs, indent=2))
    how = " ".join(sys.argv[1:])
    header = f"Stage-2 crop size vs whole held-out photos, task {args.task} (`{how}`)\n\n"
    atomic_write_text(args.out.with_suffix(".md"), header + table(runs) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
