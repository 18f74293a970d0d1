"""benchmarks/other_photos.py: the photos it restores and the table it reports."""

from __future__ import annotations

import json

import pytest
import torch

from refusion_pl.data.datasets import BUNDLED_SPLITS
from refusion_pl.data.degradations import build_degradation
from tests.benchmark_scripts import load_benchmark


def script():
    load_benchmark("block_grid"), load_benchmark("demo_recipes")  # imported by name from the script
    return load_benchmark("other_photos")


def test_cases_are_every_held_out_photo_at_every_scale_then_the_unseen_ones() -> None:
    photos = script()
    cases = photos.cases([0.5, 2.0], ["camera"])
    held = BUNDLED_SPLITS["test"]
    assert [(name, scale) for name, scale, _ in cases] == [
        *((name, scale) for name in held for scale in (0.5, 2.0)),
        ("camera", 1.0),
    ]
    for (_, _, small), (_, _, large) in zip(cases[0:-1:2], cases[1:-1:2], strict=True):
        assert small.shape[0] == large.shape[0] == 3
        assert abs(large.shape[-1] / small.shape[-1] - 4) < 0.05  # 2x against 0.5x
        assert float(small.min()) >= 0 and float(large.max()) <= 1
    camera = cases[-1][2]
    assert camera.shape == (3, 512, 512) and torch.equal(camera[0], camera[2])  # grey, as RGB


def test_every_size_of_a_photo_gets_the_same_draw() -> None:
    """A low-light gain is drawn first: the same seed darkens the photo at both sizes by the same gain."""
    photos = script()
    assert photos.photo_seed("chelsea") == photos.photo_seed("chelsea") != photos.photo_seed("rocket")
    degradation = build_degradation({"name": "lowlight", "noise": [0.0, 0.0], "quantize": False})
    gt = photos.read_photo("chelsea.png")
    means = [
        degradation(
            photos.resized(gt, s)[None], torch.Generator().manual_seed(photos.photo_seed("chelsea"))
        ).mean()
        for s in (1.0, 2.0)
    ]
    assert abs(float(means[0] - means[1])) < 2e-3


def test_summary_reports_the_gain_per_scale_on_unseen_photos_and_the_worst(tmp_path) -> None:
    photos = script()

    def row(name: str, scale: float, unseen: bool, inp: float, out: float) -> dict:
        return {"name": name, "size": [8, 8], "scale": scale, "unseen": unseen, "input": inp, "restored": out}

    run = {
        "run": "/x/shadow-latent-x0",
        "task": "shadow",
        "photos": [
            row("a", 1.0, False, 10, 14),
            row("b", 1.0, False, 20, 20),
            row("a", 2.0, False, 10, 11),
            row("camera", 1.0, True, 15, 12),
        ],
    }
    summary = photos.summary_table([run])
    assert "| x/shadow-latent-x0 | shadow | +2.00 | +1.00 | -3.00 | -3.00 |" in summary
    photos.write(tmp_path / "out", [run])
    assert json.loads((tmp_path / "out.json").read_text()) == [run]
    assert (
        "| x/shadow-latent-x0 | camera | 1 | 8x8 | 15.00 | 12.00 | -3.00 |"
        in (tmp_path / "out.md").read_text()
    )


def test_unknown_photo_and_bad_scale_are_refused(monkeypatch, capsys) -> None:
    photos = script()
    for argv in (["x", "--photos", "lena"], ["x", "--scales", "0"]):
        monkeypatch.setattr("sys.argv", ["other_photos.py", *argv])
        with pytest.raises(SystemExit):
            photos.main()
    assert "lena" in capsys.readouterr().err


def test_mild_copies_are_degraded_by_the_tasks_mild_model(monkeypatch) -> None:
    """``--mild``: every photo gets the task's mild degradation (far less degraded than the run's own), and a
    task without one is refused by name."""
    from pathlib import Path

    from refusion_pl.lit import DiffusionModule

    photos = script()
    torch.manual_seed(0)
    tiny = {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]}
    sde = {
        "max_sigma": 50,
        "steps": 4,
        "schedule": "cosine",
        "eps": 0.005,
        "sampler": "ode",
        "prediction": "x0",
    }
    module = DiffusionModule(model="pixel", nafnet=tiny, sde=sde, val={"temperature": 0}).eval()
    module.run_config = {
        "data": {"root": None, "degradation": {"name": "lowlight"}},
        "task": {"name": "lowlight"},
    }
    monkeypatch.setattr(photos, "best_checkpoint", lambda run: run)
    monkeypatch.setattr(photos.DiffusionModule, "from_checkpoint", lambda path: module)
    cases = [("chelsea", 0.25, photos.resized(photos.read_photo("chelsea.png"), 0.25))]
    full, mild = (photos.evaluate_run(Path("run"), cases, mild=m) for m in (False, True))
    assert mild["task"] == "lowlight (mild)" and full["task"] == "lowlight"
    assert mild["photos"][0]["input"] > full["photos"][0]["input"] + 10
    module.run_config["task"]["name"] = "derain"
    with pytest.raises(SystemExit, match="task=derain"):
        photos.evaluate_run(Path("run"), cases, mild=True)
