"""The notebooks run top to bottom (executed, not just parsed) at a reduced size, and each one's key claim holds."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# Reduced sizes, set in a cell inserted after each notebook's "parameters" cell (papermill's convention).
REDUCED = {
    "quickstart.ipynb": "IMAGE_SIZE = 64\nSTEP_COUNTS = (1, 5, 20)\nTRAIN_STEPS = 30",
    "sde_explained.ipynb": "IMAGE_SIZE = 48\nT = 60\nMAX_SIGMA = 30\nMEAN_DRAWS = 16",
}


def _execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters', found {len(tagged)}"
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(REDUCED[path.name]))
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))


def _figures(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))


def _floats(pattern: str, text: str) -> list[float]:
    return [float(v) for v in re.findall(pattern, text, flags=re.MULTILINE)]


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= set(REDUCED)


def test_committed_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert not any(cell.get("outputs") for cell in notebook.cells), f"{path.name}: clear its outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    notebook = _execute(path, tmp_path)
    outputs = _text(notebook)
    if path.name == "quickstart.ipynb":
        # the oracle samplers must recover the clean photo far better than the degraded input
        input_psnr = _floats(r"degraded input: ([\d.]+) dB", outputs)[0]
        oracle = _floats(r"^(?:sde|ode|posterior)\s+steps=\s*\d+:\s+([\d.]+) dB", outputs)
        assert len(oracle) == 6 and min(oracle) > input_psnr + 10, (input_psnr, oracle)
        # the short run's loss falls, and its network already restores better than the input
        first, last = map(
            float, re.search(r"first quarter ([\d.e-]+), last quarter ([\d.e-]+)", outputs).groups()
        )
        assert last < 0.8 * first, (first, last)
        network = _floats(r"^network \w+\s+steps=\s*\d+:\s+([\d.]+) dB", outputs)
        assert len(network) == 6 and max(network) > input_psnr + 3, (input_psnr, network)
        # pictures: the forward process, the loss curve, PSNR vs steps, degraded | restored | target
        assert _figures(notebook) == 4
    if path.name == "sde_explained.ipynb":
        lam = 30 / 255
        sigma_bars_at_T = _floats(r"sigma_bar\[T\]=([\d.]+)", outputs)
        assert len(sigma_bars_at_T) == 3, outputs  # cosine, linear, constant
        assert all(abs(s - lam) < 1e-3 * lam for s in sigma_bars_at_T), (sigma_bars_at_T, lam)
        moved = re.findall(
            r"mean moved\s+(-?[\d.]+) of the way from x0 to mu \(closed form ([\d.]+)\)", outputs
        )
        moved = [(float(a), float(b)) for a, b in moved]
        assert len(moved) == 6 and abs(moved[0][0]) < 0.02 and moved[-1][0] > 0.95, moved
        assert all(abs(measured - closed) < 0.03 for measured, closed in moved), moved
        input_psnr, restored = map(
            float, re.search(r"degraded input: ([\d.]+) dB, restored: ([\d.]+) dB", outputs).groups()
        )
        assert restored > input_psnr + 10, (input_psnr, restored)
        # pictures: schedules, forward marginal row, reverse trajectory row, PSNR along the trajectory
        assert _figures(notebook) == 4
