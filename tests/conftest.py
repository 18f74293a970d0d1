"""Shared fixtures: compose the real Hydra configs in-process, as the entry points do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from refusion_pl.config import CONFIG_DIR

FIXTURES = Path(__file__).parent / "fixtures" / "original"

# One intra-op thread: these tests use tiny tensors, where thread hand-offs cost more than they save
# (and a second thread thrashes when the two cores are busy).
torch.set_num_threads(1)

# The smoke preset shrunk further for tests that launch whole runs: two steps on 16-pixel crops, no figure.
FAST_SMOKE = [
    "model=pixel",
    "experiment=smoke",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.crop_size=16",
    "data.val_size=16",
    "figure.enabled=false",
    "callbacks.progress_bar=null",
]


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/<name>.yaml`` with overrides; outputs go to a temporary run directory."""

    def _compose(*overrides: str, name: str = "train", output_dir: Path | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir or tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
