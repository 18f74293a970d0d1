"""How a run restores photos unlike its held-out set: the held-out photos at other sizes, and photos it never saw.

A user's photos are larger or smaller than the bundled ones and show other things. For each run directory (both
stages of `python -m refusion_pl.train` on the bundled photos), the whole held-out photos are resized (bicubic,
antialiased) by each of ``--scales``, and the bundle's greyscale photographs (in no split; taken whole, as RGB)
are added. Each is degraded with the run's own degradation, seeded by the photo's name so that every size of a
photo gets the same draw (one low-light gain, one shadow layout drawn relative to the image), then restored at the
run's own settings. Reports input and restored PSNR per photo, the mean gain per size and on the unseen photos,
and the worst change. ``--mild`` degrades every photo mildly instead (`demo_recipes.MILD`): whether a photo that
needs little comes out worse at other sizes and on other content. Writes ``--out`` (.json and .md).

    .venv/bin/python benchmarks/other_photos.py RUN [RUN ...]
    .venv/bin/python benchmarks/other_photos.py RUN --scales 1 2 4 --photos camera moon
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from block_grid import best_checkpoint
from demo_recipes import MILD, combined, mean, restore_all, results_parser

from refusion_pl.data.datasets import BUNDLED_FILES, BUNDLED_SPLITS
from refusion_pl.data.degradations import build_degradation
from refusion_pl.data.io import read_image
from refusion_pl.lit import DiffusionModule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "other_photos"
# scikit-image's greyscale photographs, in none of the bundled splits: other content than any training photo.
UNSEEN = {
    "camera": "camera.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "brick": "brick.png",
    "moon": "moon.png",
}


def read_photo(file: str) -> torch.Tensor:
    """A photo from scikit-image's data folder as RGB floats in [0, 1], [3, H, W] (greyscale repeated)."""
    import skimage.data

    return read_image(Path(skimage.data.__file__).parent / file, channels=3)[0]


def resized(image: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1:
        return image
    out = F.interpolate(image[None], scale_factor=scale, mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def photo_seed(name: str) -> int:
    """The same seed for every size of a photo, different between photos, stable across runs and machines."""
    return zlib.crc32(name.encode())


def cases(scales: list[float], unseen: list[str]) -> list[tuple[str, float, torch.Tensor]]:
    """(photo, scale, clean image): each held-out photo at each scale, then each unseen photo whole."""
    photos = {name: read_photo(BUNDLED_FILES[name]) for name in BUNDLED_SPLITS["test"]}
    held = [(name, scale, resized(photo, scale)) for name, photo in photos.items() for scale in scales]
    return held + [(name, 1.0, read_photo(UNSEEN[name])) for name in unseen]


def evaluate_run(run_dir: Path, photos: list[tuple[str, float, torch.Tensor]], mild: bool = False) -> dict:
    """Every photo of ``cases`` degraded by the run's own model (one draw per photo name; ``mild``: its mild
    copy, `demo_recipes.MILD`) and restored."""
    module = DiffusionModule.from_checkpoint(best_checkpoint(run_dir))
    data_cfg = module.run_config["data"]
    if data_cfg.get("root") is not None or data_cfg.get("degradation") is None:
        raise SystemExit(f"{run_dir}: not a run on the bundled photos with a synthetic degradation")
    task = module.run_config["task"]["name"]
    if mild and task not in MILD:
        raise SystemExit(
            f"{run_dir}: --mild knows no mild degradation for task={task} (only {', '.join(MILD)})"
        )
    degradation = build_degradation({**data_cfg["degradation"], **(MILD[task] if mild else {})})
    rows = []
    for name, scale, gt in photos:
        lq = degradation(gt[None], torch.Generator().manual_seed(photo_seed(name)))[0]
        result = restore_all(module, [(name, lq, gt, None)])[0]
        rows.append({**result, "scale": scale, "unseen": name in UNSEEN})
        print(
            f"| {name} | {scale:g} | {result['size'][0]}x{result['size'][1]} | {photo_line(result)} |",
            flush=True,
        )
    return {"run": str(run_dir), "task": task + (" (mild)" if mild else ""), "photos": rows}


def photo_line(row: dict) -> str:
    return f"{row['input']:.2f} | {row['restored']:.2f} | {row['restored'] - row['input']:+.2f}"


def gain(rows: list[dict]) -> str:
    return f"{mean(rows, 'restored') - mean(rows, 'input'):+.2f}" if rows else "-"


def summary_table(runs: list[dict]) -> str:
    """One line per run: the mean gain on the held-out photos at each scale, on the unseen ones, the worst change."""
    scales = sorted({p["scale"] for run in runs for p in run["photos"] if not p["unseen"]})
    lines = [
        "| run | task | "
        + " | ".join(f"held-out x{s:g}" for s in scales)
        + " | unseen photos | worst photo |",
        "|---" * (len(scales) + 4) + "|",
    ]
    for run in runs:
        held = [[p for p in run["photos"] if not p["unseen"] and p["scale"] == s] for s in scales]
        unseen = [p for p in run["photos"] if p["unseen"]]
        worst = min(p["restored"] - p["input"] for p in run["photos"])
        cells = " | ".join(gain(rows) for rows in held)
        lines.append(
            f"| {'/'.join(Path(run['run']).parts[-2:])} | {run['task']} | {cells} | {gain(unseen)} | {worst:+.2f} |"
        )
    return "\n".join(lines)


def write(out: Path, runs: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(runs, indent=2))
    every = [
        f"| {'/'.join(Path(run['run']).parts[-2:])} | {p['name']} | {p['scale']:g} | {p['size'][0]}x{p['size'][1]} | "
        f"{photo_line(p)} |"
        for run in runs
        for p in run["photos"]
    ]
    out.with_suffix(".md").write_text(
        "Gain (dB) on the held-out photos resized, and on photos outside the bundled splits\n\n"
        f"{summary_table(runs)}\n\nEvery photo:\n\n| run | photo | scale | size | input | restored | gain |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(every) + "\n"
    )
    print(summary_table(runs))


def main() -> None:
    parser = results_parser(__doc__, RESULTS)
    parser.add_argument("--scales", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--photos", nargs="+", default=list(UNSEEN), choices=list(UNSEEN))
    parser.add_argument(
        "--mild",
        action="store_true",
        help="degrade each photo mildly instead (demo_recipes.MILD): what it loses",
    )
    args = parser.parse_args()
    if combined(parser, args, write):
        return
    if any(scale <= 0 for scale in args.scales):
        parser.error(f"--scales must be positive, got {args.scales}")
    photos = cases(args.scales, args.photos)  # read and resized once for every run
    write(args.out, [evaluate_run(run, photos, args.mild) for run in args.runs])


if __name__ == "__main__":
    main()
