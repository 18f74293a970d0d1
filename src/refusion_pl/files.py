"""Atomic file writes: a crash, a kill or a full disk never leaves a half-written result behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class OutputError(OSError):
    """A result could not be written (disk full, read-only or unwritable folder); the message names the path."""


def _temp_prefix_suffix(path: Path) -> tuple[str, str]:
    return f".{path.stem}.", f".tmp{path.suffix}"


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temporary files an earlier, killed write of ``path`` left in its folder."""
    path = Path(path)
    prefix, suffix = _temp_prefix_suffix(path)
    for stale in path.parent.glob(f"{prefix}*{suffix}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the target's folder, fsync it, then rename it into place.

    Raises :class:`OutputError` naming ``path`` when the folder cannot be made or the write fails; the
    temporary file is removed and an existing ``path`` is left as it was.
    """
    path = Path(path)
    prefix, suffix = _temp_prefix_suffix(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would have made it, not mkstemp's 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    except RuntimeError as err:  # torch.save reports a failed write as RuntimeError
        if "write" not in str(err).lower() and "file" not in str(err).lower():
            raise
        raise OutputError(f"cannot write {path}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
