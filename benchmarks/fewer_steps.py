"""Quality against the number of sampling steps: PSNR at sample_steps 1..100 vs each sampler's most steps.

Runs ``refusion_pl.evaluate`` in-process on a checkpoint's own test split (the bundled photos for models trained
on the bundled default) for every sampler and step count, and writes a Markdown table and
``benchmarks/results/fewer_steps.json``. Stochastic samplers are averaged over ``--seeds``. The
exponential-integrator samplers (``mr_*``) are included; ``mr_ode1`` and ``mr_sde1`` give the same numbers as
``ode`` and ``posterior`` (the same jumps), so pass ``--samplers`` to skip them.

    .venv/bin/python benchmarks/fewer_steps.py outputs/.../diffusion/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from statistics import mean

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from refusion_pl.config import CONFIG_DIR
from refusion_pl.evaluate import evaluate
from refusion_pl.sampling import SPACINGS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fewer_steps"


def run_one(
    ckpt: Path, sampler: str, steps: int, seed: int, extra: list[str], out: Path, device: str
) -> dict:
    GlobalHydra.instance().clear()
    overrides = [
        f"ckpt={ckpt}", f"sampler={sampler}", f"sample_steps={steps}", f"seed={seed}",
        f"paths.output_dir={out}", f"device={device}", *extra,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    return evaluate(cfg)


def table(rows: list[dict]) -> str:
    lines = ["| sampler | steps | PSNR | Δ PSNR vs T | SSIM | s/image |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['psnr']:.2f} | {r['delta_psnr']:+.2f} | {r['ssim']:.4f} | "
            f"{r['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50, 100])
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=["sde", "posterior", "ode", "mr_ode1", "mr_ode2", "mr_sde1", "mr_sde2"],
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--extra", nargs="*", default=[], help="more evaluate overrides, e.g. crop=128")
    parser.add_argument(
        "--spacing",
        choices=SPACINGS,
        default=None,
        help="timestep spacing for fewer steps (default: the checkpoint's), passed to evaluate as spacing=...",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.spacing is not None:
        args.extra.append(f"spacing={args.spacing}")

    rows, identity = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.samplers:
            per_steps = []
            for steps in sorted(args.steps):
                runs = [
                    run_one(
                        args.ckpt,
                        sampler,
                        steps,
                        seed,
                        args.extra,
                        Path(tmp) / f"{sampler}-{steps}-{seed}",
                        args.device,
                    )
                    for seed in args.seeds
                ]
                identity = runs[0]["identity"]
                per_steps.append(
                    {
                        "sampler": sampler,
                        "steps": steps,
                        "trained_steps": runs[0]["trained_steps"],
                        "images": runs[0]["images"],
                        **{k: mean(r["refusion"][k] for r in runs) for k in ("psnr", "ssim", "seconds")},
                    }
                )
            reference = per_steps[-1]["psnr"]
            for row in per_steps:
                row["delta_psnr"] = row["psnr"] - reference
            rows += per_steps
    text = (
        table(rows) + f"\nidentity (LQ vs GT): PSNR {identity['psnr']:.2f} dB, SSIM {identity['ssim']:.4f}\n"
    )
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "ckpt": str(args.ckpt),
        "device": args.device,
        "spacing": args.spacing or "default",
        "seeds": args.seeds,
        "identity": identity,
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
