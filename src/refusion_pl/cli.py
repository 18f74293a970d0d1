"""Console scripts (``refusion-train``, ``refusion-restore``, ...): the installed commands of every entry point.

Each Hydra app here composes its config from the package's ``conf/`` (found from the installed location, so an
editable install and a wheel behave alike) and answers ``--help``, ``--cfg`` and ``--info`` before the module
that does the work (and torch with it) is imported. The task function is the entry module's own ``main``,
unwrapped from its ``@hydra.main``, so ``python -m refusion_pl.<name>`` and ``refusion-<name>`` run the same code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig

from refusion_pl.config import CONFIG_DIR


def _hydra_app(name: str) -> Callable[[], Any]:
    """The console script of ``refusion_pl.<name>``, whose entry config is ``conf/<name>.yaml``."""

    def task(cfg: DictConfig) -> Any:
        entry = importlib.import_module(f"refusion_pl.{name}").main
        return entry.__wrapped__(cfg)  # the plain task function under its @hydra.main

    # Hydra names the job (run directory log file, hydra.job.name) after the task function's module.
    task.__module__ = f"refusion_pl.{name}"
    task.__qualname__ = task.__name__ = name
    return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=name)(task)


train = _hydra_app("train")
restore = _hydra_app("restore")
evaluate = _hydra_app("evaluate")
convert = _hydra_app("convert")
export = _hydra_app("export")
app = _hydra_app("app")


def report(argv: Sequence[str] | None = None) -> int:
    """``refusion-report SWEEP_DIR``: the sweep report (plain argparse, no Hydra)."""
    from refusion_pl.report import main

    return main(argv, prog="refusion-report")


def benchmark(argv: Sequence[str] | None = None) -> int:
    """``refusion-benchmark``: the results table and miniature ablation (plain argparse, no Hydra)."""
    from refusion_pl.benchmark import main

    return main(argv, prog="refusion-benchmark")
