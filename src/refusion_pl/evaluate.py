"""``python -m refusion_pl.evaluate ckpt=PATH [data=PRESET data.root=DIR] [task=...]``: score a paired test set.

Restores every test image (GT is used only for scoring) and reports PSNR/SSIM on RGB and on Y after
``crop_border``, LPIPS when its weights are available locally, and seconds per image, next to the identity
baseline (LQ vs GT) so every table shows the gain. Writes a per-image CSV, a JSON summary and a Markdown table;
``-m sample_steps=10,20,50,100`` (a Hydra multirun) adds a steps/quality table over the whole sweep.
Without ``task``/``data`` the checkpoint's own task and data settings are used (its held-out test split).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from refusion_pl.config import CONFIG_DIR
from refusion_pl.data.io import DataError, write_image
from refusion_pl.files import atomic_write_json, atomic_write_text
from refusion_pl.lit.base import match_size
from refusion_pl.lit.metrics import lpips_status, split_views, view_metrics
from refusion_pl.restore import (
    RestoreError,
    Restorer,
    autocast,
    inference_settings,
    load_model,
    pick_device,
)

log = logging.getLogger("refusion_pl.evaluate")

METRICS = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips")
# Stereo samples: each view's scores next to their mean (the mean is `psnr`, `ssim`, ...).
VIEW_METRICS = ("psnr_left", "ssim_left", "psnr_right", "ssim_right")
COLUMNS = ("name", "method", *METRICS, *VIEW_METRICS, "seconds")
SUMMARY_NAME, CSV_NAME, TABLE_NAME = "summary.json", "per_image.csv", "results.md"


# ---- configuration from the checkpoint ------------------------------------------------------------------------
def stored_config(module: Any) -> dict[str, Any]:
    return dict(getattr(module, "run_config", None) or {})


def resolve_task_and_data(cfg: DictConfig, module: Any) -> None:
    """Fill ``task``/``data`` left unset from the checkpoint (so its own test split is used by default)."""
    stored = stored_config(module)
    with open_dict(cfg):
        if cfg.get("task") is None:
            task = stored.get("task") or {"name": "unknown", "crop_border": int(module.hparams.crop_border)}
            cfg.task = OmegaConf.create(task)
        if cfg.get("data") is None:
            if not stored.get("data"):
                raise RestoreError("the checkpoint stores no data settings: pass data=PRESET data.root=DIR")
            cfg.data = OmegaConf.create(stored["data"])
            cfg.data.val_size, cfg.data.max_val_images = None, None  # whole test images, all of them
        if cfg.get("crop") is not None:
            cfg.data.val_size = int(cfg.crop)


def build_datamodule(cfg: DictConfig) -> Any:
    try:
        return hydra.utils.instantiate(cfg.data)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (DataError, ValueError)):
            raise DataError(str(cause)) from None
        raise


Sample = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]


def test_pairs(datamodule: Any, max_images: int | None) -> Iterator[Sample]:
    """``(name, lq, gt, cond_scalars)`` per test image (``[C, H, W]``; LQ at its own size; stereo samples hold
    both views on channels; ``cond_scalars`` are a bokeh sample's lens scalars, else None)."""
    datamodule.setup("test")
    count = 0
    for batch in datamodule.test_dataloader():
        scalars = batch.get("cond_scalars")
        for index in range(batch["gt"].shape[0]):
            if max_images is not None and count >= max_images:
                return
            extra = None if scalars is None else scalars[index]
            yield str(batch["name"][index]), batch["lq"][index], batch["gt"][index], extra
            count += 1


# ---- scoring --------------------------------------------------------------------------------------------------
class Scorer:
    """Per-image metrics after the border crop; LPIPS only when its weights are available locally."""

    def __init__(self, crop: int, use_lpips: bool, device: torch.device, views: int = 1) -> None:
        self.crop, self.views = crop, views
        self.lpips = None
        enabled, self.lpips_message = lpips_status()
        if use_lpips and enabled:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        pred, target = pred[None].float().clamp(0, 1), target[None].float()
        values = {k: float(v[0]) for k, v in view_metrics(pred, target, self.crop, self.views).items()}
        pred, target = torch.cat(split_views(pred, self.views)), torch.cat(split_views(target, self.views))
        if self.lpips is not None and pred.shape[1] == 3:
            self.lpips.reset()
            values["lpips"] = float(self.lpips(pred.to(self.lpips.device), target.to(self.lpips.device)))
        return values


def mean_rows(rows: list[dict[str, Any]], method: str) -> dict[str, float]:
    chosen = [row for row in rows if row["method"] == method]
    out: dict[str, float] = {}
    for key in (*METRICS, *VIEW_METRICS, "seconds"):
        values = [row[key] for row in chosen if row.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


# ---- tables ---------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sampler_label(entry: dict[str, Any]) -> str:
    """The sampler, with its timestep spacing when it is not the default ``ou``."""
    sampler, spacing = entry.get("sampler"), entry.get("spacing") or "ou"
    return "-" if not sampler else sampler if spacing == "ou" else f"{sampler} ({spacing})"


def markdown_table(entries: list[dict[str, Any]]) -> str:
    """Rows of ``{"method", "sampler", "steps", metrics...}`` as a Markdown table (stereo: per-view PSNR too;
    PSNR and SSIM are then the mean of both views)."""
    stereo = any("psnr_left" in e for e in entries)
    head = "| method | sampler | steps | PSNR | SSIM | PSNR-Y | SSIM-Y | LPIPS | s/image |"
    head += " PSNR left | PSNR right |" if stereo else ""
    lines = [head, "|" + "---|" * (11 if stereo else 9)]
    for e in entries:
        line = (
            f"| {e['method']} | {_sampler_label(e)} | {e.get('steps') or '-'} | {_fmt(e.get('psnr'), 2)} | "
            f"{_fmt(e.get('ssim'), 4)} | {_fmt(e.get('psnr_y'), 2)} | {_fmt(e.get('ssim_y'), 4)} | "
            f"{_fmt(e.get('lpips'), 4)} | {_fmt(e.get('seconds'), 2)} |"
        )
        if stereo:
            line += f" {_fmt(e.get('psnr_left'), 2)} | {_fmt(e.get('psnr_right'), 2)} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def summary_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    identity = {"method": "identity (LQ vs GT)", **summary["identity"]}
    restored = {
        "method": "refusion",
        "sampler": summary["sampler"],
        "spacing": summary.get("spacing", "ou"),  # summaries written before spacing existed used ou
        "steps": summary["sample_steps"],
        **summary["refusion"],
    }
    return [identity, restored]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def sweep_table(sweep_dir: Path) -> str:
    """One table over every finished job of a multirun (the steps/quality table), written into the sweep dir."""
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{SUMMARY_NAME}"))]
    if not summaries:
        return ""
    summaries.sort(key=lambda s: (s["sampler"], s.get("spacing", "ou"), s["sample_steps"]))
    entries = [summary_entries(summaries[0])[0]] + [summary_entries(s)[1] for s in summaries]
    table = markdown_table(entries)
    atomic_write_text(sweep_dir / "steps_table.md", table)
    write_csv_entries(sweep_dir / "steps_table.csv", entries)
    return table


def write_csv_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    fields = ("method", "sampler", "spacing", "steps", *METRICS, "seconds")
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(entries)
    atomic_write_text(path, buffer.getvalue())


# ---- the run --------------------------------------------------------------------------------------------------
def evaluate(cfg: DictConfig, datamodule: Any | None = None) -> dict[str, Any]:
    """Restore and score the test set of ``cfg.data`` (or ``datamodule``); write CSV, JSON and Markdown."""
    if not cfg.get("ckpt"):
        raise RestoreError("ckpt=PATH is required")
    device = pick_device(str(cfg.device))
    autocast(device, str(cfg.precision))
    inference = inference_settings(cfg)  # checked before the (slow) model load
    module = load_model(cfg.ckpt, cfg.sampler, cfg.sample_steps, device, cfg.get("spacing"))
    module.prepare_for_inference(device, inference)
    if datamodule is None:
        resolve_task_and_data(cfg, module)
        datamodule = build_datamodule(cfg)
    crop = int(cfg.task.crop_border) if cfg.get("task") is not None else int(module.hparams.crop_border)
    # upscale=False: the LQ is brought to the GT size below, once
    restorer = Restorer.from_config(cfg, module, device, progress=False, upscale=False)
    scorer = Scorer(crop, bool(cfg.lpips), device, views=restorer.views)
    out_dir = Path(cfg.paths.output_dir)
    rows = score_all(restorer, scorer, test_pairs(datamodule, cfg.max_images), out_dir, bool(cfg.save_images))
    if not rows:
        raise DataError("the test set is empty: nothing to evaluate")
    summary = {
        "ckpt": str(cfg.ckpt),
        "task": cfg.task.get("name") if cfg.get("task") is not None else None,
        "sampler": restorer.sampler,
        "spacing": restorer.spacing,
        "samples": restorer.samples,
        "temperature": restorer.temperature,
        "shift_jitter": restorer.shift_jitter,
        "sample_steps": restorer.steps or module.sde.T,
        "trained_steps": module.sde.T,
        "prediction": module.prediction,
        "crop_border": crop,
        "images": len(rows) // 2,
        "device": str(device),
        "precision": str(cfg.precision),
        "seed": int(cfg.seed),
        "lpips": scorer.lpips_message,
        "identity": mean_rows(rows, "identity"),
        "refusion": mean_rows(rows, "refusion"),
    }
    write_csv(out_dir / CSV_NAME, rows)
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    table = markdown_table(summary_entries(summary))
    atomic_write_text(out_dir / TABLE_NAME, table)
    summary["table"] = table
    return summary


def score_all(
    restorer: Restorer,
    scorer: Scorer,
    pairs: Iterator[Sample],
    out_dir: Path,
    save_images: bool,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, lq, gt, scalars in pairs:
        lq = match_size(lq[None], gt.shape[-2:])[0]
        start = time.perf_counter()
        restored = restorer(lq, scalars)
        seconds = time.perf_counter() - start
        rows.append({"name": name, "method": "identity", **scorer(lq, gt)})
        rows.append({"name": name, "method": "refusion", **scorer(restored, gt), "seconds": seconds})
        log.info("%s: PSNR %.2f dB (LQ %.2f dB), %.1f s", name, rows[-1]["psnr"], rows[-2]["psnr"], seconds)
        if save_images:
            views = restored.chunk(restorer.views)
            suffixes = ("_L", "_R") if restorer.views == 2 else ("",)
            for view, suffix in zip(views, suffixes):
                write_image(out_dir / "images" / f"{Path(name).stem}{suffix}.png", view)
    return rows


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = evaluate(cfg)
    except (RestoreError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(2)
    print(summary["table"], end="")
    print(summary["lpips"])
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        table = sweep_table(Path(HydraConfig.get().sweep.dir))
        print(f"\nsweep so far ({HydraConfig.get().sweep.dir}/steps_table.md):\n{table}", end="")
    return summary["refusion"].get("psnr")


if __name__ == "__main__":
    main()
