"""``python -m refusion_pl.export ckpt=PATH output=MODEL.safetensors``: a model to share, with its card.

Writes the inference weights (the EMA weights where training kept them) and the settings that rebuild the
model into one safetensors file (no pickle, so opening a downloaded model cannot run code), reads it back to
check every tensor, and writes a short Markdown model card beside it: task, data, training steps and metrics
measured on the exported file itself (``measure=false`` skips them). ``restore``, ``evaluate`` and
``refusion_pl.pretrained.from_pretrained`` take the file like a checkpoint.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from refusion_pl.checkpoints import UnsafeCheckpointError, safe_torch_load
from refusion_pl.config import CONFIG_DIR
from refusion_pl.data.io import DataError
from refusion_pl.files import atomic_write_text
from refusion_pl.lit.base import CHECKPOINT_KEY
from refusion_pl.pretrained import PretrainedError, inference_state, read_export, write_export
from refusion_pl.restore import RestoreError


def card_path(cfg: DictConfig) -> Path:
    return Path(cfg.card) if cfg.get("card") else Path(cfg.output).with_suffix(".md")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"ckpt={path}: no such checkpoint file")
    try:
        checkpoint = safe_torch_load(path)
    except UnsafeCheckpointError as err:
        raise RestoreError(str(err)) from None
    meta = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, Mapping) else None
    if not meta or meta.get("kind") != "diffusion":
        raise RestoreError(
            f"ckpt={path} is not a refusion_pl diffusion checkpoint; convert the original's weights first "
            "(python -m refusion_pl.convert)"
        )
    return checkpoint


def check_round_trip(checkpoint: Mapping[str, Any], output: Path) -> None:
    """The written file holds exactly the inference tensors, bit for bit."""
    expected = inference_state(checkpoint)
    written = read_export(output)["state_dict"]
    if set(written) != set(expected):
        raise PretrainedError(f"{output}: written tensors differ from the checkpoint's")
    for key, value in expected.items():
        if written[key].dtype != value.dtype or not torch.equal(written[key], value):
            raise PretrainedError(f"{output}: tensor {key} changed when written")


def measure(cfg: DictConfig, checkpoint: Mapping[str, Any], exported: Path) -> dict[str, Any] | str:
    """Evaluate the exported file on the test split; the summary, or why nothing was measured."""
    from refusion_pl.evaluate import evaluate

    stored = (checkpoint.get(CHECKPOINT_KEY) or {}).get("config") or {}
    eval_cfg = cfg.copy()
    with open_dict(eval_cfg):
        eval_cfg.ckpt = str(exported)
        if eval_cfg.get("task") is None and stored.get("task"):
            eval_cfg.task = OmegaConf.create(stored["task"])
        if eval_cfg.get("data") is None:
            if not stored.get("data"):
                return "not measured: the checkpoint records no test data; pass data=PRESET data.root=DIR"
            eval_cfg.data = OmegaConf.create(stored["data"])
            eval_cfg.data.val_size, eval_cfg.data.max_val_images = None, None
        if eval_cfg.get("crop") is not None:
            eval_cfg.data.val_size = int(eval_cfg.crop)
    return evaluate(eval_cfg)


def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def model_card(
    checkpoint: Mapping[str, Any], info: Mapping[str, Any], output: Path, metrics: Mapping[str, Any] | str
) -> str:
    """Markdown: what the model restores, how it was trained, how well the exported file restores."""
    hp = info["hyper_parameters"]
    config = (checkpoint.get(CHECKPOINT_KEY) or {}).get("config") or {}
    task = config.get("task") or {}
    sde = hp["sde"]
    net = f"ConditionalNAFNet ({hp.get('variant') or hp['model']}) {hp['nafnet']}"
    if hp.get("autoencoder"):
        net += f", U-Net autoencoder {hp['autoencoder']}"
    lines = [
        f"# {output.stem}: Refusion, {task.get('name', 'unknown task')}",
        "",
        f"- Task: {task.get('name', 'unknown')} ({task.get('channels', hp.get('channels'))} channels, "
        f"scale {task.get('scale', 1)}, metrics after a {task.get('crop_border', hp.get('crop_border', 0))}-pixel "
        "border crop)",
        f"- Model: {hp['model']}-space Refusion; {net}",
        f"- SDE: max_sigma {sde['max_sigma']:g}, T {sde['steps']}, {sde['schedule']} schedule, eps "
        f"{sde['eps']:g}, network predicts {sde.get('prediction', 'noise')}, default sampler {sde['sampler']}",
    ]
    source = config.get("converted_from")
    if source:
        files = [source["weights"]] + (
            [source["autoencoder_weights"]] if source.get("autoencoder_weights") else []
        )
        names = " and ".join(f"`{Path(f['path']).name}` (sha256 {f['sha256'][:16]}...)" for f in files)
        lines.append(
            f"- Data and training: weights of the original implementation ({source['name']}), converted "
            f"from `{Path(source['options']).name}` with {names}; data and training are the original's"
        )
    else:
        data = config.get("data") or {}
        root = data.get("root") or "the bundled scikit-image photos with synthetic degradation"
        lines.append(f"- Data: {data.get('layout', 'unknown layout')} layout, {root}")
        lines.append(
            f"- Training: {info['global_step']} optimiser steps; "
            + ("EMA weights exported" if info["ema"] else "no EMA kept: the trained weights are exported")
        )
    lines += ["", "## Metrics measured at export", ""]
    if isinstance(metrics, str):
        lines.append(metrics)
    else:
        lines.append(
            f"{metrics['images']} test images restored with this file ({metrics['sampler']} sampler, "
            f"{metrics['sample_steps']} steps, seed {metrics['seed']}, {metrics['device']}):"
        )
        lines += ["", metrics["table"].rstrip()]
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"python -m refusion_pl.restore ckpt={output.name} input=PHOTOS output=RESTORED",
        "```",
        "",
        f"`{output.name}`: safetensors (tensors and JSON metadata only, no pickle), sha256 `{digest}`.",
        "",
    ]
    return "\n".join(lines)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the export and its card; return paths, metadata and the measured metrics."""
    if not cfg.get("ckpt") or not cfg.get("output"):
        raise RestoreError("ckpt=PATH and output=MODEL.safetensors are both required")
    output = Path(cfg.output)
    if output.suffix != ".safetensors":
        raise RestoreError(f"output={output} must end in .safetensors")
    checkpoint = read_checkpoint(cfg.ckpt)
    info = write_export(checkpoint, output)
    check_round_trip(checkpoint, output)
    metrics = measure(cfg, checkpoint, output) if cfg.measure else "not measured (measure=false)"
    card = card_path(cfg)
    atomic_write_text(card, model_card(checkpoint, info, output, metrics))
    return {"output": str(output), "card": str(card), "info": info, "metrics": metrics}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        result = export(cfg)
    except (RestoreError, PretrainedError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {result['output']} and its model card {result['card']}")
    if isinstance(result["metrics"], str):
        print(result["metrics"])
    else:
        print(result["metrics"]["table"], end="")


if __name__ == "__main__":
    main()
