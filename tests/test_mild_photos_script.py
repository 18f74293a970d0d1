"""benchmarks/mild_photos.py: the cases it restores and what it measures on each photo."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from refusion_pl.lit import DiffusionModule
from tests.benchmark_scripts import load_benchmark

TINY = {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]}
AE_TINY = {"ch": 4, "ch_mult": [1, 2], "embed_dim": 4, "decode_mode": "residual"}
SDE = {"max_sigma": 50, "steps": 4, "schedule": "cosine", "eps": 0.005, "sampler": "ode", "prediction": "x0"}


def script():
    load_benchmark("block_grid"), load_benchmark("demo_recipes")  # imported by name from the script
    return load_benchmark("mild_photos")


def photo(seed: int) -> torch.Tensor:
    return torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(seed))


def test_cases_are_the_held_out_photos_degraded_mildly_degraded_and_clean(compose_config) -> None:
    data = OmegaConf.to_container(compose_config("task=lowlight").data, resolve=True)
    cases = script().cases(data, "lowlight")
    assert list(cases) == ["held_out", "mild", "clean"]
    names = [[name for name, *_ in samples] for samples in cases.values()]
    assert names[0] == names[1] == names[2] and len(names[0]) >= 2
    for (_, held, gt, _), (_, mild, mild_gt, _), (_, clean, clean_gt, _) in zip(*cases.values(), strict=True):
        assert torch.equal(gt, mild_gt) and torch.equal(gt, clean_gt) and torch.equal(clean, gt)
        assert (held - gt).abs().mean() > (mild - gt).abs().mean() > 0  # mild: much less degraded


def test_an_untrained_x0_model_changes_no_photo_and_its_row_says_so() -> None:
    """A fresh x0 network outputs zero: the sampler leaves the latent alone and residual decoding returns the
    input, so restored = input, the latent change is 0, and the true change is what the degradation made."""
    torch.manual_seed(0)
    module = DiffusionModule(
        model="latent", nafnet=TINY, autoencoder=AE_TINY, sde=SDE, val={"edge_margin": 8, "temperature": 0}
    ).eval()
    gt = photo(0)
    lq = gt * 0.5
    row = script().photo_row(module, "p", lq, gt, seed=0)
    assert abs(row["restored"] - row["input"]) < 1e-3 and abs(row["restored_m0"] - row["input"]) < 1e-3
    assert row["latent_change"] < 1e-6 < row["true_change"]
    assert row["margin"] == 8 and row["size"] == [40, 56]
    assert abs(row["mean_input"] - 0.5 * row["mean_target"]) < 1e-5
    assert abs(row["mean_restored"] - row["mean_input"]) < 1e-4
    clean = script().photo_row(module, "p", gt, gt, seed=0)
    assert clean["true_change"] == 0 and clean["restored"] > 60


def test_table_names_every_case_and_marks_what_a_pixel_run_lacks(tmp_path) -> None:
    mild = script()
    base = {"size": [8, 8], "input": 27.3, "restored": 17.6, "margin": 16, "restored_m0": 18.0}
    means = {"mean_input": 0.226, "mean_restored": 0.711, "mean_target": 0.256}
    latent = {**base, **means, "name": "rocket", "ceiling": 42.4, "latent_change": 2.25, "true_change": 0.14}
    pixel = {**base, **means, "name": "rocket", "margin": 0}
    del pixel["restored_m0"]
    runs = [
        {"run": "/x/lowlight-latent-x0", "task": "lowlight", "cases": {"mild": [latent]}},
        {"run": "/x/lowlight-pixel-x0", "task": "lowlight", "cases": {"clean": [pixel]}},
    ]
    text = mild.table(runs)
    assert (
        "| x/lowlight-latent-x0 | mild | rocket | 27.30 | 17.60 | 18.00 | 42.40 | 2.250 (0.140) | "
        "0.226 -> 0.711 (0.256) |" in text
    )
    assert (
        "| x/lowlight-pixel-x0 | clean | rocket | 27.30 | 17.60 | - | - | - | 0.226 -> 0.711 (0.256) |"
        in text
    )
    mild.write(tmp_path / "out", runs)
    assert json.loads((tmp_path / "out.json").read_text()) == runs
