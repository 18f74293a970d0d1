"""``python -m refusion_pl.report SWEEP_DIR``: one table and a few plots for every job of a Hydra multirun.

Reads what each job leaves behind (``.hydra/overrides.yaml``, ``metrics.json``, the job log), so it works on a
finished, failed or still-running sweep from any launcher (basic, joblib, submitit, Optuna), and writes
``report.md``, ``report.csv`` and ``plot_<metric>_vs_<key>.png`` into the sweep directory. A person sees the
effect of the noise level or the step count without opening W&B.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from refusion_pl.files import atomic_write, atomic_write_text

STEPS_PER_SEC = "train/steps_per_sec"
OK = "completed"


@dataclass
class Job:
    """One job of a sweep: its overrides, final metrics, and how it ended."""

    name: str
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    status: str = "unknown"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


# ---- collecting ------------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> Any:
    """Plain containers of a YAML file (interpolations left as written); None if missing or unreadable."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a job still writing it, or a file that is not YAML: the job is listed without it
        return None


def _split_override(text: str) -> tuple[str, str]:
    """``+optim.lr=1e-3`` -> ('optim.lr', '1e-3'); group choices (``optim=lion``) keep their key."""
    key, _, value = str(text).partition("=")
    return key.lstrip("+~"), value


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories holding a job: Hydra's ``.hydra`` record or our ``metrics.json`` (any subdir pattern)."""
    found = {p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")}
    found |= {p.parent for p in sweep_dir.glob("**/metrics.json")}
    return sorted((d for d in found if d != sweep_dir), key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _last_error_line(job_dir: Path) -> str:
    """The last ERROR line of the job's Hydra log: the error of a job that died before writing metrics.json."""
    for log in sorted(job_dir.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line]
        if lines:
            return lines[-1].split(" - ", 1)[-1].strip()
    return ""


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_job(job_dir: Path, sweep_dir: Path) -> Job:
    """Everything the report needs about one job; a missing or partial record is reported, never fatal."""
    job = Job(name=str(job_dir.relative_to(sweep_dir)), path=job_dir)
    overrides = _read_yaml(job_dir / ".hydra" / "overrides.yaml")
    summary: dict[str, Any] = {}
    if (job_dir / "metrics.json").is_file():
        try:
            summary = json.loads((job_dir / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            job.status, job.error = "failed", f"unreadable metrics.json: {err}"
    if not isinstance(overrides, list):
        overrides = summary.get("overrides") or []
    job.overrides = dict(_split_override(text) for text in overrides)
    if summary:
        job.status = str(summary.get("status", "unknown"))
        job.metrics = _numbers(summary.get("final") or _last_stage_metrics(summary))
        job.error = str(summary.get("error", ""))
    elif job.status == "unknown":
        job.status = "failed"
        job.error = _last_error_line(job_dir) or "no metrics.json: the job died before training started"
    if job.status == "running":
        job.error = job.error or "no final metrics: still running, or killed"
    return job


def _last_stage_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    stages = summary.get("stages") or {}
    return next(reversed(stages.values()), {}).get("metrics", {}) if stages else {}


def collect(sweep_dir: Path) -> list[Job]:
    return [read_job(job_dir, sweep_dir) for job_dir in _job_dirs(sweep_dir)]


# ---- tabulating ------------------------------------------------------------------------------------------------
def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs (or that only some jobs set), in first-seen order."""
    keys: dict[str, set[str | None]] = {}
    for job in jobs:
        for key in job.overrides:
            keys.setdefault(key, set())
    for job in jobs:
        for key, values in keys.items():
            values.add(job.overrides.get(key))
    return [key for key, values in keys.items() if len(values) > 1]


def fixed_overrides(jobs: Sequence[Job], swept: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for job in jobs:
        for key, value in job.overrides.items():
            if key not in swept:
                seen.setdefault(key, value)
    return [f"{key}={value}" for key, value in seen.items()]


def metric_columns(jobs: Sequence[Job], metric: str) -> list[str]:
    """The optimised metric first, then the other validation metrics, the training loss and steps/s."""
    names = {name for job in jobs for name in job.metrics}
    val = sorted(n for n in names if n.startswith("val") and n != metric)
    rest = [n for n in ("train/loss", STEPS_PER_SEC) if n in names]
    return ([metric] if metric in names else []) + val + rest


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}"


def table_rows(jobs: Sequence[Job], swept: Sequence[str], metrics: Sequence[str]) -> list[list[str]]:
    rows = []
    for job in jobs:
        row = [job.name, job.status] + [job.overrides.get(key, "") for key in swept]
        rows.append(row + [_fmt(job.metrics.get(name)) for name in metrics])
    return rows


def header(swept: Sequence[str], metrics: Sequence[str]) -> list[str]:
    return ["job", "status", *swept, *("steps/s" if m == STEPS_PER_SEC else m for m in metrics)]


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown(sweep_dir: Path, jobs: Sequence[Job], metric: str, plots: Sequence[Path]) -> str:
    swept = swept_keys(jobs)
    metrics = metric_columns(jobs, metric)
    head = header(swept, metrics)
    done = sum(job.status == OK for job in jobs)
    lines = [f"# Sweep report: `{sweep_dir}`", "", f"{len(jobs)} jobs, {done} completed."]
    fixed = fixed_overrides(jobs, swept)
    if fixed:
        lines.append("Fixed overrides: " + ", ".join(f"`{f}`" for f in fixed) + ".")
    best = best_job(jobs, metric)
    if best is not None:
        setting = ", ".join(f"{k}={best.overrides.get(k, '')}" for k in swept) or best.name
        lines.append(f"Best {metric}: {_fmt(best.metrics[metric])} (job {best.name}: {setting}).")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table_rows(jobs, swept, metrics)]
    failed = [job for job in jobs if job.status != OK]
    if failed:
        lines += ["", "## Failed or unfinished jobs", ""]
        lines += [
            f"- job {job.name} ({job.status}): {_escape(job.error or 'no error recorded')}" for job in failed
        ]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def to_csv(jobs: Sequence[Job], metric: str) -> str:
    swept = swept_keys(jobs)
    metrics = metric_columns(jobs, metric)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*header(swept, metrics), "error"])
    for job, row in zip(jobs, table_rows(jobs, swept, metrics), strict=True):
        writer.writerow([*row, job.error])
    return buffer.getvalue()


def best_job(jobs: Sequence[Job], metric: str) -> Job | None:
    """Highest metric, or lowest for losses and LPIPS (the same rule as the checkpoint callback)."""
    scored = [j for j in jobs if j.status == OK and math.isfinite(j.metrics.get(metric, math.nan))]
    if not scored:
        return None
    lower_is_better = "lpips" in metric or "loss" in metric
    pick = min if lower_is_better else max
    return pick(scored, key=lambda job: job.metrics[metric])


# ---- plotting --------------------------------------------------------------------------------------------------
def _as_float(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _series(jobs: Sequence[Job], key: str, others: Sequence[str]) -> dict[str, list[Job]]:
    """Jobs grouped by the values of the other swept keys (one line each), when that stays readable."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        label = ", ".join(f"{k}={job.overrides.get(k, '')}" for k in others) or key
        groups.setdefault(label, []).append(job)
    return groups if len(groups) <= 8 else {"all jobs": list(jobs)}


def plot_metric(jobs: Sequence[Job], key: str, metric: str, swept: Sequence[str], path: Path) -> Path:
    """Metric against one swept value: numbers on a (log, when spanning decades) axis, else categories."""
    from matplotlib.figure import Figure  # OO API: no pyplot global state, safe in any process

    done = [j for j in jobs if j.status == OK and metric in j.metrics and key in j.overrides]
    raw = sorted({j.overrides[key] for j in done}, key=lambda v: (_as_float(v) is None, _as_float(v) or 0, v))
    numeric = all(_as_float(v) is not None for v in raw)
    position = {v: (_as_float(v) if numeric else float(i)) for i, v in enumerate(raw)}
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for label, group in _series(done, key, [k for k in swept if k != key]).items():
        points = sorted((position[j.overrides[key]], j.metrics[metric]) for j in group)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    if (
        numeric
        and raw
        and min(position.values()) > 0
        and max(position.values()) / min(position.values()) > 50
    ):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(list(position.values()), raw)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {key}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0] and len(swept) > 1:
        ax.legend(fontsize="small")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def make_plots(sweep_dir: Path, jobs: Sequence[Job], metric: str) -> list[Path]:
    swept = swept_keys(jobs)
    if not any(j.status == OK and metric in j.metrics for j in jobs):
        return []
    return [
        plot_metric(jobs, key, metric, swept, sweep_dir / f"plot_{_slug(metric)}_vs_{_slug(key)}.png")
        for key in swept
    ]


# ---- entry point -----------------------------------------------------------------------------------------------
def default_metric(sweep_dir: Path, jobs: Sequence[Job]) -> str:
    """The sweep's ``optimized_metric`` (from a job's composed config), else val/psnr."""
    for job in jobs:
        config = _read_yaml(job.path / "config.yaml") or _read_yaml(job.path / ".hydra" / "config.yaml")
        if isinstance(config, dict) and config.get("optimized_metric"):
            return str(config["optimized_metric"])
    return "val/psnr"


def report(sweep_dir: str | Path, metric: str | None = None, plots: bool = True) -> str:
    """Write report.md, report.csv and the plots into ``sweep_dir``; return the Markdown."""
    sweep_dir = Path(sweep_dir)
    jobs = collect(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no jobs found (no */.hydra/overrides.yaml or */metrics.json)")
    metric = metric or default_metric(sweep_dir, jobs)
    pngs = make_plots(sweep_dir, jobs, metric) if plots else []
    text = markdown(sweep_dir, jobs, metric, pngs)
    atomic_write_text(sweep_dir / "report.md", text)
    atomic_write_text(sweep_dir / "report.csv", to_csv(jobs, metric))
    return text


def main(argv: Sequence[str] | None = None, prog: str = "python -m refusion_pl.report") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (hydra.sweep.dir)")
    parser.add_argument("--metric", help="metric to rank and plot (default: the sweep's optimized_metric)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        print(report(args.sweep_dir, metric=args.metric, plots=not args.no_plots), end="")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
