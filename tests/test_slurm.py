"""Clusters: the ``hydra/launcher=slurm`` preset (hydra-submitit-launcher) composes into a valid sbatch script
for multi-node DDP, and the job function the launcher submits runs locally through ``submitit_local``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from refusion_pl.config import CONFIG_DIR
from tests.conftest import FAST_SMOKE


def sbatch_script(launcher_cfg: dict, folder: str) -> str:
    """The sbatch file the plugin would submit, built the way its ``launch`` builds the executor."""
    params = dict(launcher_cfg)
    params.pop("_target_")
    params.pop("submitit_folder")
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -m refusion_pl.train", "0")


def test_slurm_preset_is_a_valid_multi_node_ddp_job(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"  # submitit only checks that srun exists before writing the script
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    overrides = [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "trainer=ddp",
        "trainer.num_nodes=2",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert get_class(launcher["_target_"]).__name__ == "SlurmLauncher"
    assert launcher["nodes"] == cfg.trainer.num_nodes == 2  # DDP world = nodes x tasks_per_node
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4  # one process per GPU
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == "auto"
    text = sbatch_script(launcher, str(tmp_path / "submitit"))
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=refusion_shadow",
    ):
        assert line in text, f"{line!r} missing from:\n{text}"
    assert "srun" in text


def test_job_function_runs_locally_with_submitit_local(tmp_path):
    """The same pickled job function a SLURM node would run, executed by submitit in a local subprocess."""
    sweep = tmp_path / "local"
    cmd = [
        sys.executable,
        "-m",
        "refusion_pl.train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        *FAST_SMOKE,
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sweep / "0" / "metrics.json").read_text())
    assert summary["status"] == "completed" and "val/psnr" in summary["final"]
    assert (sweep / "0" / "diffusion" / "checkpoints" / "last.ckpt").is_file()
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # it really went through submitit
