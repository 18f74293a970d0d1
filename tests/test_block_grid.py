"""The block-grid score of benchmarks/block_grid.py separates a blocky image from a smooth one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.benchmark_scripts import load_benchmark


def block_grid():
    return load_benchmark("block_grid")


def test_grid_score_rises_with_blocks_at_the_period_only() -> None:
    score = block_grid().grid_score
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 13, 17, generator=g), size=(192, 256), mode="bicubic")
    coarse = torch.rand(1, 3, 3, 4, generator=g)
    blocky = smooth + 0.2 * F.interpolate(coarse, size=(192, 256), mode="nearest")  # steps every 64 px
    assert score(smooth, 64) < 1.3
    assert score(blocky, 64) > 2 * score(smooth, 64)
    assert score(blocky, 64) > score(blocky, 48)  # the steps sit on the 64-px grid, not on another period


def test_row_grid_is_scored_apart_from_column_grid() -> None:
    """Horizontal bands every 8 px (a plaid's rows) raise the row score, not the column score."""
    score = block_grid().grid_score
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 13, 17, generator=g), size=(192, 256), mode="bicubic")
    bands = smooth + 0.2 * F.interpolate(
        torch.rand(1, 3, 24, 1, generator=g), size=(192, 256), mode="nearest"
    )
    assert score(bands, 8, rows=True) > 2 * score(smooth, 8, rows=True)
    assert score(bands, 8) < 1.3 and score(smooth, 8, rows=True) < 1.3


def test_a_bad_outer_column_is_not_a_grid_but_an_edge() -> None:
    script = block_grid()
    g = torch.Generator().manual_seed(0)
    target = F.interpolate(torch.rand(1, 3, 13, 17, generator=g), size=(192, 256), mode="bicubic")
    framed = target + 0.01 * torch.randn(target.shape, generator=g)
    framed[..., :, 0] += 0.5  # a bright first column: on every period's grid, but an edge artifact
    assert script.grid_score(framed, 64) < 1.3
    assert script.grid_score(framed, 64, border=0) > 2
    assert script.edge_score(framed, target) > 2
    assert abs(script.edge_score(target + 0.01 * torch.randn(target.shape, generator=g), target) - 1) < 0.1
