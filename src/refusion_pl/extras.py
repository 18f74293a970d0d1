"""Optional features and the pip extra that installs each: a missing package fails with the line to run.

The core install trains, restores and evaluates; these features need packages it does not pull in. Listed here
once, so the error a user sees names the extra of ``pyproject.toml`` that brings the package.
"""

from __future__ import annotations

import importlib

from refusion_pl.config import ConfigError

# class (by import path) -> (modules, any one of which serves it; the pip extra that installs it)
FEATURE_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "lightning.pytorch.callbacks.RichProgressBar": (("rich",), "rich"),
    # Lightning's TensorBoardLogger falls back to tensorboardX when tensorboard is missing
    "lightning.pytorch.loggers.TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
}


class MissingExtraError(ConfigError):
    """A configured feature needs a package that is not installed; the message gives the pip line."""


def install_line(extra: str) -> str:
    return f"pip install 'refusion_pl[{extra}]'"


def require(modules: tuple[str, ...], extra: str, feature: str) -> None:
    """Import one of ``modules`` or raise :class:`MissingExtraError` naming ``feature`` and ``extra``."""
    errors = []
    for module in modules:
        try:
            importlib.import_module(module)
            return
        except ImportError as err:
            errors.append(f"{type(err).__name__}: {err}")
    raise MissingExtraError(
        f"{feature} needs the {' or '.join(modules)} package, which is not importable ({'; '.join(errors)}); "
        f"install it with: {install_line(extra)}"
    )


def require_extras_for(cls: type, key: str) -> None:
    """Check the packages the class built for config key ``key`` needs (e.g. ``callbacks.progress_bar``)."""
    for path, (modules, extra) in FEATURE_EXTRAS.items():
        module_name, _, class_name = path.rpartition(".")
        feature_class = getattr(importlib.import_module(module_name), class_name)
        if isinstance(cls, type) and issubclass(cls, feature_class):
            require(modules, extra, f"{key} ({cls.__module__}.{cls.__qualname__})")
