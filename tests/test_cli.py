"""The console scripts as an installed user runs them: one per entry point, each with a useful, fast --help."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# console script -> (its Hydra entry config, or None for argparse) and text its --help must show
SCRIPTS = {
    "refusion-train": (
        "train",
        ["Usage: refusion-train", "task: ", "lowlight", "experiment: ", "demo_pixel"],
    ),
    "refusion-restore": ("restore", ["ckpt=PATH input=FILE_OR_DIR output=DIR", "sample_steps: null"]),
    "refusion-evaluate": ("evaluate", ["Usage: refusion-evaluate ckpt=PATH", "max_images: null"]),
    "refusion-convert": ("convert", ["options=OPTION_FILE output=OUT.ckpt", "autoencoder_weights: null"]),
    "refusion-export": ("export", ["ckpt=PATH output=MODEL.safetensors", "measure: true"]),
    "refusion-app": ("app", ["refusion_pl[app]", "port: 7860"]),
    "refusion-report": (None, ["usage: refusion-report", "sweep_dir", "--metric"]),
    "refusion-benchmark": (
        None,
        ["usage: refusion-benchmark", "--tasks", "--quick", "CPU-budget miniatures"],
    ),
}
# `python -m` tools for developers, not users: app_browser takes the README's screenshot (selenium, dev extra)
DEVELOPER_TOOLS = {"app_browser"}


def _declared_scripts() -> dict[str, str]:
    """The installed distribution's console scripts (pyproject's [project.scripts] as of the last install)."""
    return {
        ep.name: ep.value for ep in distribution("refusion_pl").entry_points if ep.group == "console_scripts"
    }


def test_every_entry_module_has_a_console_script():
    entry_modules = {
        path.stem
        for path in (ROOT / "src" / "refusion_pl").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    } - DEVELOPER_TOOLS
    declared = _declared_scripts()
    assert set(declared) == set(SCRIPTS)
    assert {name.removeprefix("refusion-") for name in declared} == entry_modules


@pytest.fixture(scope="module")
def help_runs() -> dict[str, subprocess.CompletedProcess]:
    """``<script> --help`` of every console script, started together (each is a fresh interpreter)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}  # every import is listed on stderr
    missing = [script for script in SCRIPTS if not (BIN / script).is_file()]
    assert not missing, f"{missing} not in {BIN}: reinstall the package (pip install -e .) to create them"
    running = {
        script: subprocess.Popen(
            [str(BIN / script), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for script in SCRIPTS
    }
    runs = {}
    for script, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        runs[script] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return runs


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_help_is_useful_and_does_not_import_torch(help_runs, script):
    result = help_runs[script]
    assert result.returncode == 0, result.stderr[-2000:]
    for text in SCRIPTS[script][1]:
        assert text in result.stdout, f"{script} --help lacks {text!r}:\n{result.stdout}"
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "hydra" in imported or SCRIPTS[script][0] is None  # the import listing worked
    assert "torch" not in imported and "lightning" not in imported


def _help_keys(help_text: str) -> list[str]:
    """The config keys a help template names in its key/option list (first column, before ``=``)."""
    section = re.search(r"== (?:Keys users set most|Options)[^\n]*==\n(.*?)\n\n", help_text, re.S)
    assert section, help_text
    keys = []
    for line in section.group(1).splitlines():
        head = line.strip().split("  ")[0]
        keys += [token.split("=")[0] for token in re.split(r"[ ,]+", head) if token]
    return keys


@pytest.mark.parametrize("name", sorted({config for config, _ in SCRIPTS.values() if config}))
def test_help_names_only_keys_the_config_has(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from refusion_pl.config import CONFIG_DIR

    template = OmegaConf.load(CONFIG_DIR / "hydra" / "help" / f"{name}.yaml").template
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(name)
    keys = _help_keys(template)
    assert len(keys) >= 4
    for key in keys:
        node = cfg
        for part in key.split("."):
            present = part in node or OmegaConf.is_missing(node, part)  # `in` is false for ??? values
            assert present, f"conf/hydra/help/{name}.yaml names {key!r}, which conf/{name}.yaml lacks"
            node = node._get_node(part)


def test_console_script_runs_the_entry_modules_task(monkeypatch, capsys, tmp_path):
    """The script dispatches to the module's own task function: its error handling and exit code included."""
    from refusion_pl import cli

    missing = tmp_path / "missing.yml"
    monkeypatch.setattr(sys, "argv", ["refusion-convert", f"options={missing}", f"output={tmp_path}/x.ckpt"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as exited:
            cli.convert()
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level
    assert exited.value.code == 2
    assert f"options={missing}: no such option file" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()
