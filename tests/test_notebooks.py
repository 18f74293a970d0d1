"""The notebooks run top to bottom (executed, not just parsed), so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    if path.name == "quickstart.ipynb":
        # the oracle samplers must recover the clean photo far better than the degraded input
        input_psnr = float(re.search(r"degraded input: ([\d.]+) dB", outputs).group(1))
        restored = [float(v) for v in re.findall(r"steps=\s*\d+:\s+([\d.]+) dB", outputs)]
        assert len(restored) == 6 and min(restored) > input_psnr + 10, (input_psnr, restored)
