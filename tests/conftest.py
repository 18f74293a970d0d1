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
from torchmetrics import Metric

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


def stand_in_lpips_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The stand-in's per-image distance: mean absolute difference of 4x4-average-pooled images."""
    pool = torch.nn.functional.avg_pool2d
    return (pool(pred.double(), 4) - pool(target.double(), 4)).abs().flatten(1).mean(1)


class StandInLPIPS(Metric):
    """torchmetrics' LPIPS interface (images in [0, 1] with ``normalize=True``, mean over images) on a fixed
    pooling "backbone" that needs no weights, so the LPIPS plumbing runs where the AlexNet weights are absent."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, net_type: str = "alex", normalize: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        assert net_type == "alex" and normalize, "callers pass [0, 1] images to the AlexNet LPIPS"
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        assert pred.min() >= 0 and pred.max() <= 1 and target.min() >= 0 and target.max() <= 1
        distance = stand_in_lpips_distance(pred, target)
        self.total += distance.sum()
        self.count += distance.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


@pytest.fixture
def stand_in_lpips(monkeypatch: pytest.MonkeyPatch) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LPIPS 'available' with :class:`StandInLPIPS` as its network; returns the stand-in's per-image distance."""
    import torchmetrics.image.lpip

    from refusion_pl import evaluate
    from refusion_pl.lit import base, metrics

    def enabled() -> tuple[bool, str]:
        return True, "LPIPS enabled (stand-in backbone)"

    for module in (metrics, evaluate, base):
        monkeypatch.setattr(module, "lpips_status", enabled)
    monkeypatch.setattr(torchmetrics.image.lpip, "LearnedPerceptualImagePatchSimilarity", StandInLPIPS)
    return stand_in_lpips_distance
