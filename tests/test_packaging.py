"""The Hydra configs are found from the source tree and from a built wheel (they ship inside the package)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import refusion_pl
from refusion_pl.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]


def _yaml_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml")}


def test_source_tree_configs_are_the_top_level_conf():
    assert CONFIG_DIR.resolve() == (ROOT / "conf").resolve()
    assert (CONFIG_DIR / "train.yaml").is_file()


def test_wheel_ships_every_config_and_hydra_finds_them(tmp_path):
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheel_dir.glob("refusion_pl-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            n.removeprefix("refusion_pl/conf/")
            for n in archive.namelist()
            if n.startswith("refusion_pl/conf/")
        }
        archive.extractall(tmp_path / "site")
    assert _yaml_files(ROOT / "conf") <= shipped

    # Import the unpacked wheel (not the editable source tree) and let Hydra compose from inside the package.
    script = (
        "import refusion_pl, refusion_pl.config as c, sys; "
        f"assert refusion_pl.__file__.startswith({str(tmp_path / 'site')!r}), refusion_pl.__file__; "
        "print(c.CONFIG_DIR)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.strip().startswith(str(tmp_path / "site"))
    composed = subprocess.run(
        [sys.executable, "-m", "refusion_pl.train", "--cfg", "job", "experiment=smoke", "task=derain"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert composed.returncode == 0, composed.stderr[-2000:]
    assert "name: derain" in composed.stdout and "max_sigma" in composed.stdout

    # The console script as pip writes it for a wheel install (the wrapper imports refusion_pl.cli and calls it).
    wrapper = (
        "import sys; from refusion_pl.cli import train; sys.argv[0] = 'refusion-train'; sys.exit(train())"
    )
    helped = subprocess.run(
        [sys.executable, "-c", wrapper, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "Usage: refusion-train" in helped.stdout and "experiment: " in helped.stdout


@pytest.mark.parametrize("name", ["sde", "sampling", "models", "checkpoints", "pipeline"])
def test_algorithm_library_does_not_import_lightning_or_hydra(name):
    code = (
        f"import sys, refusion_pl.{name}; "
        "bad = [m for m in ('lightning', 'hydra', 'refusion_pl.lit', 'refusion_pl.data') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1000:]
    assert refusion_pl.__version__
