"""How strong a block grid a latent run leaves in its restorations, and whether stage 1 already puts it there.

For each run directory (`python -m refusion_pl.train` output with both stages), restores the first whole held-out
photo and decodes its GT latent through the LQ's skips (the stage-1 ceiling), then scores each image's grid:
the mean horizontal gradient at the worst column phase modulo ``--period`` over the median phase. A clean photo
scores about 1.1; a visible grid at that period, 1.5 and above.

    .venv/bin/python benchmarks/block_grid.py outputs/lowlight/runs/A outputs/lowlight/runs/B
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from refusion_pl.benchmark import held_out_pairs
from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.metrics import psnr_per_image
from refusion_pl.restore import default_steps


def grid_score(image: torch.Tensor, period: int) -> float:
    """Worst over median column phase of the mean horizontal gradient: 1 means no column grid at `period`."""
    gradient = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    phases = torch.stack([gradient[phase::period].mean() for phase in range(period)])
    return float(phases.max() / phases.median())


def best_checkpoint(run_dir: Path) -> Path:
    found = sorted((run_dir / "diffusion" / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise FileNotFoundError(f"{run_dir}: no diffusion/checkpoints/best-*.ckpt (a latent run's output?)")
    return found[-1]


@torch.no_grad()
def score_run(run_dir: Path, period: int) -> dict[str, float]:
    module = DiffusionModule.from_checkpoint(best_checkpoint(run_dir))
    if module.autoencoder is None:
        raise ValueError(f"{run_dir} is a pixel-space run: it has no stage-1 ceiling to compare with")
    ae = module.autoencoder.eval()
    name, lq, gt, _ = held_out_pairs(module.run_config["data"])[0]
    lq, gt = lq[None], gt[None]
    latent_gt, _ = ae.encode(gt)
    _, hidden = ae.encode(lq)
    ceiling = ae.decode_restored(latent_gt, hidden).clamp(0, 1)
    restored = module.restore(lq, steps=default_steps(module), generator=torch.Generator().manual_seed(0))
    return {
        "photo": name,
        "target": grid_score(gt, period),
        "ceiling": grid_score(ceiling, period),
        "restored": grid_score(restored, period),
        "ceiling_psnr": float(psnr_per_image(ceiling, gt)[0]),
        "restored_psnr": float(psnr_per_image(restored, gt)[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of latent training runs")
    parser.add_argument("--period", type=int, default=64, help="grid period in pixels (64: the demo's)")
    args = parser.parse_args()
    print("| run | photo | grid: target | ceiling | restored | ceiling PSNR | restored PSNR |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        s = score_run(run, args.period)
        print(
            f"| {run} | {s['photo']} | {s['target']:.2f} | {s['ceiling']:.2f} | {s['restored']:.2f} | "
            f"{s['ceiling_psnr']:.2f} | {s['restored_psnr']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
