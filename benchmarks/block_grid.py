"""How strong a block grid and an edge frame a run leaves in its restorations, and (latent runs) whether stage 1
already puts them there.

For each run directory (`python -m refusion_pl.train` output), restores the whole held-out photos and, for latent
runs, decodes each GT latent through the LQ's skips (the stage-1 ceiling; pixel runs have none), then scores each
image:
- grid: the mean horizontal gradient at the worst column phase modulo ``--period`` over the median phase, with the
  outer ``--border`` pixels left out (a bad first column would otherwise read as a grid: column 0 is on every
  period's grid); and the same for rows (the vertical gradient), since a plaid has both. A clean photo scores
  about 1.0-1.2 (more where its content has regular edges, so compare with the target's own score); a visible
  grid at that period, 1.5 and above.
- edge: the mean absolute error on the outermost pixel frame over the mean inside; 1 means the frame is as good
  as the rest, 2 a visible frame.

    .venv/bin/python benchmarks/block_grid.py outputs/lowlight/runs/A outputs/lowlight/runs/B
    .venv/bin/python benchmarks/block_grid.py PIXEL_RUN PIXEL_RUN-jitter --period 8
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from refusion_pl.benchmark import held_out_pairs
from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.metrics import psnr_per_image
from refusion_pl.restore import default_steps


def inner(image: torch.Tensor, border: int) -> torch.Tensor:
    """`image` without its outer `border` pixels on every side."""
    return (
        image[..., border : image.shape[-2] - border, border : image.shape[-1] - border] if border else image
    )


def grid_score(image: torch.Tensor, period: int, border: int = 4, rows: bool = False) -> float:
    """Worst over median column phase of the mean horizontal gradient (``rows``: row phase of the vertical
    gradient), the outer `border` pixels left out: 1 means no column (row) grid at `period`."""
    image = inner(image, border)
    gradient = (image.transpose(-1, -2) if rows else image).diff(dim=-1).abs().mean(dim=(0, 1, 2))
    phases = torch.stack([gradient[phase::period].mean() for phase in range(period)])
    return float(phases.max() / phases.median())


def edge_score(image: torch.Tensor, target: torch.Tensor, border: int = 4) -> float:
    """Mean absolute error on the outermost pixel frame over the mean inside the outer `border` pixels."""
    error = (image - target).abs().mean(dim=(0, 1))
    frame = torch.cat([error[0], error[-1], error[1:-1, 0], error[1:-1, -1]])
    return float(frame.mean() / inner(error, border).mean())


def best_checkpoint(run_dir: Path) -> Path:
    found = sorted((run_dir / "diffusion" / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise FileNotFoundError(f"{run_dir}: no diffusion/checkpoints/best-*.ckpt (a latent run's output?)")
    return found[-1]


def ceiling_scores(ae: torch.nn.Module | None, lq: torch.Tensor, gt: torch.Tensor, period: int) -> dict:
    """Grid, edge and PSNR of the stage-1 ceiling (the GT latent through the LQ's skips); NaN without stage 1."""
    keys = ("ceiling", "ceiling_rows", "ceiling_edge", "ceiling_psnr")
    if ae is None:
        return dict.fromkeys(keys, float("nan"))
    ceiling = ae.decode_restored(ae.encode(gt)[0], ae.encode(lq)[1]).clamp(0, 1)
    scores = (grid_score(ceiling, period), grid_score(ceiling, period, rows=True), edge_score(ceiling, gt))
    return dict(zip(keys, (*scores, float(psnr_per_image(ceiling, gt)[0])), strict=True))


@torch.no_grad()
def score_run(
    run_dir: Path, period: int, photos: int | None = None, seed: int = 0
) -> list[dict[str, float | str]]:
    """Grid, edge and PSNR of the restoration and the stage-1 ceiling of each held-out photo (the first `photos`);
    pixel runs have no ceiling (NaN)."""
    module = DiffusionModule.from_checkpoint(best_checkpoint(run_dir))
    ae = None if module.autoencoder is None else module.autoencoder.eval()
    rows = []
    for name, lq, gt, _ in held_out_pairs(module.run_config["data"])[:photos]:
        lq, gt = lq[None], gt[None]
        generator = torch.Generator().manual_seed(seed)
        restored = module.restore(lq, steps=default_steps(module), generator=generator)
        row = {
            "photo": name,
            "target": grid_score(gt, period),
            "restored": grid_score(restored, period),
            "target_rows": grid_score(gt, period, rows=True),
            "restored_rows": grid_score(restored, period, rows=True),
            "restored_edge": edge_score(restored, gt),
            "restored_psnr": float(psnr_per_image(restored, gt)[0]),
        }
        rows.append({**row, **ceiling_scores(ae, lq, gt, period)})
    return rows


def cell(value: float) -> str:
    """A score to 2 decimals; ``-`` where there is none (a pixel run's ceiling)."""
    return "-" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of training runs (both stages)")
    parser.add_argument(
        "--period",
        type=int,
        default=64,
        help="grid period in pixels (64: the latent demo's; 8: the pixel demo's)",
    )
    parser.add_argument("--photos", type=int, default=None, help="score the first N held-out photos (all)")
    args = parser.parse_args()
    print(
        "| run | photo | column grid: target | ceiling | restored | row grid: target | ceiling | restored "
        "| edge: ceiling | restored | ceiling PSNR | restored PSNR |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        for s in score_run(run, args.period, args.photos):
            keys = ["target", "ceiling", "restored", "target_rows", "ceiling_rows", "restored_rows"]
            keys += ["ceiling_edge", "restored_edge", "ceiling_psnr", "restored_psnr"]
            print(f"| {run} | {s['photo']} | " + " | ".join(cell(s[key]) for key in keys) + " |", flush=True)


if __name__ == "__main__":
    main()
