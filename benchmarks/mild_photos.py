"""Where a run damages photos that need little or nothing: stage 1 or stage 2, brightness, the edge margin.

Issue 10's mild-photo goal asks that a mildly degraded photo never comes out more than 0.3 dB worse. For each run
directory (both stages of `python -m refusion_pl.train`), restores the whole held-out photos three ways: degraded
as the run was trained (``held_out``), mildly degraded (``mild``: `demo_recipes.MILD`) and not degraded at all
(``clean``: the target itself as input). Per photo it reports:
- input and restored PSNR at the checkpoint's settings, and restored without the mirrored edge margin (``m0``);
- latent runs: the stage-1 ceiling (the GT latent decoded through the input's skips) and the RMS change the
  sampler makes to the input's latent against the true change (GT latent minus input latent): a ceiling far above
  the restoration with a change several times the true one puts the damage in stage 2;
- the mean brightness of input, restoration and target (a model that lifts a clean night photo has learnt an
  exposure, not a degradation).

    .venv/bin/python benchmarks/mild_photos.py RUN [RUN ...] [--out benchmarks/results/mild_photos]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from block_grid import best_checkpoint
from demo_recipes import combined, held_out_and_mild, results_parser

from refusion_pl.benchmark import Sample
from refusion_pl.lit import DiffusionModule
from refusion_pl.lit.metrics import psnr_per_image
from refusion_pl.pipeline import photo_scalars, sample_mean, with_scalars
from refusion_pl.restore import default_steps

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mild_photos"


def cases(data_cfg: dict, task: str) -> dict[str, list[Sample]]:
    """The held-out photos degraded as trained, mildly degraded, and clean (the target as its own input)."""
    held, mild = held_out_and_mild(data_cfg, task)
    return {"held_out": held, "mild": mild, "clean": [(name, gt, gt, extra) for name, _, gt, extra in held]}


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    return float(psnr_per_image(image, target)[0])


@torch.no_grad()
def latent_anatomy(
    module: DiffusionModule, lq: torch.Tensor, gt: torch.Tensor, seed: int
) -> tuple[dict, torch.Tensor]:
    """Stage-1 ceiling and the sampler's latent change against the true one, plus the restoration without the
    edge margin that this sampling decodes to (what ``module.restore(lq, edge_margin=0)`` returns)."""
    autoencoder = module.autoencoder
    latent, hidden = autoencoder.encode(lq)
    target = autoencoder.encode(gt)[0]
    net = module.noise_model
    sampled = sample_mean(
        module.sde,
        with_scalars(net, photo_scalars(net, lq, None)),  # photo_stats networks: the photo's statistics
        latent,
        module.samples,
        sampler=module.val_cfg["sampler"],
        steps=default_steps(module),
        generator=torch.Generator().manual_seed(seed),
        spacing=module.val_cfg.get("spacing", "ou"),
        temperature=module.temperature,
        shift_jitter=module.shift_jitter,
    )
    ceiling = autoencoder.decode_restored(target, hidden).clamp(0, 1)
    scores = {
        "ceiling": psnr(ceiling, gt),
        "latent_change": rms(sampled - latent),
        "true_change": rms(target - latent),
    }
    return scores, autoencoder.decode_restored(sampled, hidden).clamp(0, 1)


@torch.no_grad()
def photo_row(module: DiffusionModule, name: str, lq: torch.Tensor, gt: torch.Tensor, seed: int) -> dict:
    lq, gt = lq[None], gt[None]
    how = {"steps": default_steps(module)}
    restored = module.restore(lq, generator=torch.Generator().manual_seed(seed), **how)
    row = {
        "name": name,
        "size": list(gt.shape[-2:]),
        "input": psnr(lq, gt),
        "restored": psnr(restored, gt),
        "margin": module.edge_margin,
        "mean_input": float(lq.mean()),
        "mean_restored": float(restored.mean()),
        "mean_target": float(gt.mean()),
    }
    unmargined = None
    if module.autoencoder is not None:
        scores, unmargined = latent_anatomy(module, lq, gt, seed)
        row |= scores
    if module.edge_margin:
        if unmargined is None:  # pixel models: no latent sampling to reuse
            unmargined = module.restore(
                lq, generator=torch.Generator().manual_seed(seed), edge_margin=0, **how
            )
        row["restored_m0"] = psnr(unmargined, gt)
    return row


def run_anatomy(run_dir: Path) -> dict:
    module = DiffusionModule.from_checkpoint(best_checkpoint(run_dir)).eval()
    task = module.run_config["task"]["name"]
    photos = cases(module.run_config["data"], task)
    return {
        "run": str(run_dir),
        "task": task,
        "cases": {
            case: [photo_row(module, name, lq, gt, i) for i, (name, lq, gt, _) in enumerate(samples)]
            for case, samples in photos.items()
        },
    }


def cell(row: dict, key: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(row[key]) if key in row else "-"


def table(runs: list[dict]) -> str:
    lines = [
        "| run | case | photo | input | restored | no margin | ceiling | latent change (true) | mean in -> out (target) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        label = "/".join(Path(run["run"]).parts[-2:])
        for case, rows in run["cases"].items():
            for row in rows:
                change = (
                    f"{row['latent_change']:.3f} ({row['true_change']:.3f})"
                    if "latent_change" in row
                    else "-"
                )
                lines.append(
                    f"| {label} | {case} | {row['name']} | {row['input']:.2f} | {row['restored']:.2f} | "
                    f"{cell(row, 'restored_m0')} | {cell(row, 'ceiling')} | {change} | "
                    f"{row['mean_input']:.3f} -> {row['mean_restored']:.3f} ({row['mean_target']:.3f}) |"
                )
    return "\n".join(lines)


def write(out: Path, runs: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(runs, indent=2))
    out.with_suffix(".md").write_text(
        "Held-out photos degraded as trained, mildly degraded and clean (PSNR in dB; clean inputs score the "
        "cap)\n\n" + table(runs) + "\n"
    )
    print(table(runs))


def main() -> None:
    parser = results_parser(__doc__, RESULTS)
    args = parser.parse_args()
    if combined(parser, args, write):
        return
    write(args.out, [run_anatomy(run) for run in args.runs])


if __name__ == "__main__":
    main()
