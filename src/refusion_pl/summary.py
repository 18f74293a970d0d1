"""The few lines a training run ends with: what it reached, where it is, and the command that uses it next.

Built from the run's ``metrics.json`` summary, so what the console says and what the file holds agree.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

log = logging.getLogger("refusion_pl.train")


def _value(name: str, value: float) -> str:
    return f"{value:.2f} dB" if "psnr" in name or name.endswith("latent_gain") else f"{value:.4f}"


def _metric_lines(final: dict[str, float], monitor: str) -> list[str]:
    lines = []
    psnr, psnr_input = final.get("val/psnr"), final.get("val/psnr_input")
    if psnr is not None:
        versus = ""
        if psnr_input is not None:
            versus = f"   (degraded input: {psnr_input:.2f} dB, {psnr - psnr_input:+.2f} dB)"
        lines.append(f"  val/psnr         {psnr:.2f} dB{versus}")
    others = dict.fromkeys([monitor, "val/ssim", "val/lpips", "val/latent_gain"])  # ordered, no repeats
    lines += [
        f"  {name:<16} {_value(name, final[name])}" for name in others if name in final and name != "val/psnr"
    ]
    return lines


def format_run_summary(summary: dict[str, Any], output_dir: Path, monitor: str = "val/psnr") -> str:
    """The end-of-run report of a completed ``metrics.json`` summary of the run in ``output_dir``."""
    stages = summary.get("stages", {})
    last_stage = next(reversed(stages), None)
    final = summary.get("final", {})
    lines = [f"Training finished ({', '.join(stages) or 'no'} stage{'s' * (len(stages) != 1)}):"]
    lines += _metric_lines(final, monitor)
    lines.append(f"  run directory    {output_dir}")
    if summary.get("figure"):
        lines.append(f"  figure           {summary['figure']}")
    if last_stage is not None:
        checkpoint = str(stages[last_stage]["checkpoint"])
        kind = "last" if Path(checkpoint).name == "last.ckpt" else f"best by {monitor}"
        lines.append(f"  checkpoint       {checkpoint}   ({last_stage}, {kind})")
        if last_stage == "diffusion":
            command = (
                f"refusion-restore ckpt={shlex.quote(checkpoint)} input=YOUR_IMAGE_OR_FOLDER output=restored"
            )
        else:
            command = f"refusion-train stage=diffusion autoencoder.ckpt={shlex.quote(checkpoint)} (and this run's task, model, net)"
        lines.append(f"  next             {command}")
    return "\n".join(lines)


def report_run(summary: dict[str, Any], output_dir: Path, monitor: str = "val/psnr") -> str:
    """Log the end-of-run report (under Hydra: the console and the run's log file); print it when logging is
    not set up (``train`` called from Python), so it is always seen. Returns the text."""
    text = format_run_summary(summary, output_dir, monitor)
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info("%s", text)
    else:
        print(text)
    return text
