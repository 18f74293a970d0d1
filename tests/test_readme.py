"""The README's commands, exactly as written, run as dry runs: the README cannot drift from the code.

Every command line of the README's ```bash blocks is checked, and a command the test cannot classify fails it,
so a new kind of command gets a check when it is documented:

- Hydra apps (``python -m refusion_pl.<app>`` and ``refusion-<app>``): the console script's function runs
  in-process with the README's arguments. Hydra parses them and composes the config against the typed schema
  (an unknown key, preset or choice fails). Training then runs its start-up checks (``ValidateConfig``: on the
  run, or on every job of a grid sweep) and stops where it would create the run directory; the other apps run
  with their task function replaced by a recorder. Nothing trains, loads a checkpoint or launches a job.
- ``refusion_pl.report DIR``: the command line is parsed, the report itself replaced by a recorder.
- ``make TARGET [VAR=value]``: ``make -n`` (the recipe printed, not run); the ``refusion_pl`` commands it would
  run are dry-run as above.

Placeholders in angle brackets are filled in first (``<time>``: a run directory's timestamp); an unknown one
fails the test. Capitalised placeholders (``PATH``, ``SSR.ckpt``) are valid values as they stand. The import
lines of the ```python blocks are executed: the names the examples use exist.
"""

from __future__ import annotations

import ast
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hydra.core.global_hydra import GlobalHydra

from refusion_pl import benchmark, cli, config, report

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HYDRA_APPS = ("train", "restore", "evaluate", "convert", "export", "app")
PLACEHOLDERS = {
    "<time>": "2025-01-31_12-00-00-000000"
}  # as a run directory is named (conf/hydra/default.yaml)


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def readme_commands() -> list[list[str]]:
    """Each command of the README's bash blocks as argv (continuation lines joined, comments dropped)."""
    commands = []
    for block in fenced_blocks(README.read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for placeholder, value in PLACEHOLDERS.items():
                line = line.replace(placeholder, value)
            assert "<" not in line.split("#")[0], (
                f"README.md: fill in the placeholder of {line!r} in {__file__}"
            )
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def entry_point(argv: list[str]) -> tuple[str, list[str]]:
    """(entry name, its arguments) of ``python -m refusion_pl.<name> ...``, ``refusion-<name> ...`` or make."""
    if argv[0] == "python" and argv[1] == "-m" and argv[2].startswith("refusion_pl."):
        return argv[2].removeprefix("refusion_pl."), argv[3:]
    if argv[0].startswith("refusion-"):
        return argv[0].removeprefix("refusion-"), argv[1:]
    if argv[0] in ("make", ".venv/bin/python"):  # the second: what `make -n` prints for the venv's python
        return argv[0], argv[1:]
    raise AssertionError(f"the README runs {shlex.join(argv)!r}, which tests/test_readme.py cannot check")


class DryRun(SystemExit):
    """Training's start-up checks passed; stop before the run (or sweep) directory is made."""

    def __init__(self) -> None:
        super().__init__(0)


def dry_run_hydra_app(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run ``refusion-<name> *args`` in-process as a dry run; return the configs the task function got."""
    received: list[Any] = []
    recorder = SimpleNamespace(main=SimpleNamespace(__wrapped__=received.append))
    monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=lambda module: recorder))
    for hook in ("on_run_start", "on_multirun_start"):
        checks = getattr(config.ValidateConfig, hook)

        def checked_then_stop(self: Any, config: Any, _checks: Any = checks, **kwargs: Any) -> None:
            _checks(self, config, **kwargs)
            raise DryRun

        monkeypatch.setattr(config.ValidateConfig, hook, checked_then_stop)
    monkeypatch.setattr(sys, "argv", [f"refusion-{name}", *args])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    GlobalHydra.instance().clear()
    try:
        getattr(cli, name)()
    except DryRun:
        received.append("checked")
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level
    return received


def dry_run(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name, args = entry_point(argv)
    if name in HYDRA_APPS:
        assert dry_run_hydra_app(name, args, monkeypatch), f"{shlex.join(argv)}: the task never ran"
    elif name == "report":
        seen: list[Path] = []
        monkeypatch.setattr(report, "report", lambda sweep_dir, **kwargs: seen.append(sweep_dir) or "")
        Path(args[0]).mkdir(parents=True)  # what the sweep command before it would have made
        assert report.main(args) == 0 and seen == [Path(args[0])]
    elif name == "benchmark":  # the options are checked; nothing is trained
        options = benchmark.parse_args(args, "refusion-benchmark")
        benchmark.settings_from(options)
        benchmark.check_tasks(options.tasks)
    elif name == "make":
        done = subprocess.run(
            ["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
        for line in done.stdout.splitlines():
            if "-m refusion_pl." in line:
                dry_run(shlex.split(line), monkeypatch, tmp_path)
    elif name == ".venv/bin/python":  # `.venv/bin/python -m refusion_pl.<name> ...`, printed by make -n
        dry_run(["python", *args], monkeypatch, tmp_path)
    else:
        raise AssertionError(f"the README runs {shlex.join(argv)!r}: no such entry point")


COMMANDS = readme_commands()


def test_the_readme_documents_commands_of_every_kind():
    names = {entry_point(argv)[0] for argv in COMMANDS}
    assert {"train", "restore", "evaluate", "convert", "export", "app", "report", "make"} <= names
    multiruns = [argv for argv in COMMANDS if "-m" in argv[3:]]
    assert len(multiruns) >= 4  # sweeps: grid, Optuna, joblib and SLURM launchers


@pytest.mark.parametrize("argv", COMMANDS, ids=[shlex.join(argv)[:70] for argv in COMMANDS])
def test_readme_command_runs_as_written(argv, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # run directories a command makes (evaluate's sweep jobs) land here
    dry_run(argv, monkeypatch, tmp_path)


def test_readme_python_examples_import_what_they_use():
    blocks = fenced_blocks(README.read_text(), "python")
    assert blocks
    for block in blocks:
        imports = [node for node in ast.parse(block).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert imports
        exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})
