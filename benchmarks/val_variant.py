"""A copy of a run directory whose diffusion checkpoints restore with other ``val`` settings.

Every evaluation script here restores with a checkpoint's own ``val`` settings (sampler, temperature, edge
margin, shift jitter ...). To measure a setting on a trained run without training again, write a variant of the
run and evaluate both side by side. Only the diffusion checkpoints are rewritten (their ``val`` hyperparameters);
everything else in the run (the autoencoder stage, logs, figures) is linked, not copied.

    .venv/bin/python benchmarks/val_variant.py RUN RUN-jitter shift_jitter=true
    .venv/bin/python benchmarks/other_photos.py RUN RUN-jitter
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from refusion_pl.files import atomic_write


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` with a YAML value (``true``, ``0``, ``ode``), else a ValueError naming ``text``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r}: give a setting as key=value, e.g. shift_jitter=true")
    return key, yaml.safe_load(value)


def write_variant(run_dir: Path, out_dir: Path, settings: dict[str, object]) -> list[Path]:
    """``out_dir`` as ``run_dir`` with ``settings`` merged into every diffusion checkpoint's ``val``."""
    checkpoints = sorted((run_dir / "diffusion" / "checkpoints").glob("*.ckpt"))
    if not checkpoints:
        raise FileNotFoundError(
            f"{run_dir}: no diffusion/checkpoints/*.ckpt (a run directory with both stages?)"
        )
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: give a new directory")
    (out_dir / "diffusion" / "checkpoints").mkdir(parents=True)
    for entry in run_dir.iterdir():
        if entry.name != "diffusion":
            (out_dir / entry.name).symlink_to(entry.resolve())
    written = []
    for checkpoint in checkpoints:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state["hyper_parameters"]["val"] = {**(state["hyper_parameters"].get("val") or {}), **settings}
        target = out_dir / "diffusion" / "checkpoints" / checkpoint.name
        atomic_write(target, lambda path, state=state: torch.save(state, path))
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("settings", nargs="+", help="val settings as key=value")
    args = parser.parse_args()
    try:
        settings = dict(parse_setting(text) for text in args.settings)
    except ValueError as err:
        parser.error(str(err))
    for path in write_variant(args.run, args.out, settings):
        print(path)


if __name__ == "__main__":
    main()
