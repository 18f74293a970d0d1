"""``python -m refusion_pl.convert options=OPTION_FILE output=OUT.ckpt``: the original's weights, made ours.

Reads one of the original implementation's option files and the `.pth` files it names (or ``weights=``,
``autoencoder_weights=``) and writes a self-contained refusion_pl checkpoint: network and SDE settings, task,
and for latent models the autoencoder's weights. ``restore`` and ``evaluate`` then take it like any other
checkpoint. Exit status 2 when the files do not fit; the message names the file, the key and the shapes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from refusion_pl.config import CONFIG_DIR
from refusion_pl.original import ConversionError, convert_original


def describe(module: Any, output: Path) -> Iterator[str]:
    """What was converted, and the command that restores with it."""
    hp, config = module.hparams, module.run_config
    source = config["converted_from"]
    yield f"wrote {output}"
    yield f"  model: {hp.model} ({hp.variant} ConditionalNAFNet, {hp.nafnet})"
    if hp.autoencoder is not None:
        yield f"  autoencoder: {hp.autoencoder} from {source['autoencoder_weights']['path']}"
    yield f"  noise network from {source['weights']['path']}"
    sde = hp.sde
    yield (
        f"  SDE: max_sigma={sde['max_sigma']:g} T={sde['steps']} {sde['schedule']} eps={sde['eps']:g}, "
        f"sampler {sde['sampler']}"
    )
    task = config["task"]
    yield f"  task: {task['name']} (scale {task['scale']}, metrics crop {task['crop_border']} px as the original)"
    if hp.variant in ("stereo", "bokeh"):
        yield f"  {hp.variant} networks restore through the Python API (refusion_pl.pretrained)"
    else:
        yield f"restore with: python -m refusion_pl.restore ckpt={output} input=PHOTOS output=OUT"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="convert")
def main(cfg: DictConfig) -> None:
    output = Path(cfg.output)
    try:
        module = convert_original(
            cfg.options, output, cfg.weights, cfg.autoencoder_weights, task=cfg.get("task")
        )
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for line in describe(module, output):
        print(line)


if __name__ == "__main__":
    main()
