"""Optional features name the pip extra that installs what they miss (the import failure is simulated)."""

from __future__ import annotations

import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from refusion_pl.extras import FEATURE_EXTRAS, MissingExtraError


def test_every_named_extra_exists_in_the_package_metadata():
    provided = set(distribution("refusion_pl").metadata.get_all("Provides-Extra"))
    assert {extra for _, extra in FEATURE_EXTRAS.values()} | {"lpips", "app"} <= provided


def test_rich_progress_bar_without_rich_names_the_extra(compose_config, monkeypatch):
    from refusion_pl.lit.callbacks import build_callbacks

    cfg = compose_config("callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar")
    monkeypatch.setitem(sys.modules, "rich", None)  # `import rich` now raises ImportError
    with pytest.raises(
        MissingExtraError, match=r"callbacks\.progress_bar .*RichProgressBar.*refusion_pl\[rich\]"
    ):
        build_callbacks(cfg, "diffusion", Path("/tmp/unused"))


def test_tensorboard_logger_without_tensorboard_names_the_extra(compose_config, monkeypatch, tmp_path):
    from refusion_pl.train import build_loggers

    cfg = compose_config("logger=tensorboard")
    for module in ("tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"logger\.tensorboard .*refusion_pl\[tensorboard\]"):
        build_loggers(cfg, tmp_path / "diffusion", "diffusion", {})


def test_features_build_when_their_packages_are_there(compose_config, tmp_path):
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from refusion_pl.lit.callbacks import build_callbacks
    from refusion_pl.train import build_loggers

    cfg = compose_config(
        "logger=tensorboard",
        "callbacks.progress_bar._target_=" + RichProgressBar.__module__ + ".RichProgressBar",
    )
    assert any(isinstance(c, RichProgressBar) for c in build_callbacks(cfg, "diffusion", tmp_path))
    assert isinstance(build_loggers(cfg, tmp_path / "diffusion", "diffusion", {})[0], TensorBoardLogger)


def test_lpips_status_names_the_extra_when_torchvision_is_missing(monkeypatch):
    from refusion_pl.lit.metrics import lpips_status

    monkeypatch.setitem(sys.modules, "torchvision", None)
    enabled, message = lpips_status()
    assert not enabled and "torchvision" in message and "pip install 'refusion_pl[lpips]'" in message
