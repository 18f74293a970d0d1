"""benchmarks/degradation_shift.py: every variant is a valid degradation of its task, and it changes the photo."""

from __future__ import annotations

import pytest
import torch

from refusion_pl.data.degradations import build_degradation
from tests.benchmark_scripts import load_benchmark


def script():
    load_benchmark("block_grid"), load_benchmark("demo_recipes")  # imported by name from the script
    return load_benchmark("degradation_shift")


@pytest.mark.parametrize("task", ["shadow", "lowlight"])
def test_every_variant_builds_and_differs_from_the_tasks_own(task: str) -> None:
    shift = script()
    own = shift.VARIANTS[task]["own"]
    assert own == {}
    gt = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    outputs = {}
    for name, overrides in shift.VARIANTS[task].items():
        degradation = build_degradation({"name": task, **overrides})
        outputs[name] = degradation(gt, torch.Generator().manual_seed(1))
        assert outputs[name].shape == gt.shape, name
    for name, lq in outputs.items():
        if name != "own":
            assert not torch.equal(lq, outputs["own"]), f"variant {name} degrades like the task's own model"


def test_unknown_task_is_named() -> None:
    with pytest.raises(SystemExit, match="derain"):
        script().variant_names("derain")


def test_table_line_reports_means_gain_and_worst_photo() -> None:
    photos = [{"input": 10.0, "restored": 14.0}, {"input": 20.0, "restored": 18.0}]
    row = {"run": "/x/shadow-latent-x0", "task": "shadow", "variant": "light", "photos": photos}
    assert (
        script().table_line(row) == "| x/shadow-latent-x0 | shadow | light | 15.00 | 16.00 | +1.00 | -2.00 |"
    )


def test_variants_start_from_the_family_defaults_not_the_runs_settings() -> None:
    shift = script()
    run = {"name": "shadow", "intensity": [0.1, 0.2], "plasma_prob": 0.9}
    assert shift.variant_degradation(run, {}, own=True) == run
    light = shift.variant_degradation(run, {"intensity": [0.2, 0.4]}, own=False)
    assert light["intensity"] == [0.2, 0.4] and light["plasma_prob"] == 0.5  # the built-in default, not 0.9


def test_combine_merges_result_files_into_one_table(tmp_path, monkeypatch) -> None:
    shift = script()
    photos = [{"input": 10.0, "restored": 12.0}]
    for name, variant in (("a", "own"), ("b", "light")):
        row = {"run": f"/r/{name}", "task": "shadow", "variant": variant, "photos": photos}
        shift.write(tmp_path / name, [row])
    out = tmp_path / "all"
    argv = [
        "degradation_shift.py",
        "--combine",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json"),
        "--out",
        str(out),
    ]
    monkeypatch.setattr("sys.argv", argv)
    shift.main()
    table = out.with_suffix(".md").read_text()
    assert "| r/a | shadow | own | 10.00 | 12.00 | +2.00 | +2.00 |" in table
    assert "| r/b | shadow | light |" in table
