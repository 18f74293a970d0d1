"""benchmarks/training_exposure.py: the brightness ratios a run's training pairs teach."""

from __future__ import annotations

import math

import torch

from tests.benchmark_scripts import load_benchmark


def test_exposure_table_bands_shares_and_median_ratios() -> None:
    script = load_benchmark("training_exposure")
    lq = torch.tensor([0.01, 0.02, 0.05, 0.25, 0.26, 0.27, 0.4, 0.6])
    gt = torch.tensor([0.08, 0.2, 0.4, 0.25, 0.52, 0.3, 0.44, 0.6])
    rows = {(row["low"], row["high"]): row for row in script.exposure_table(lq, gt)}
    darkest = rows[(0.0, 0.03)]
    assert darkest["share"] == 2 / 8 and math.isclose(
        darkest["ratio"], 8.0
    )  # torch's lower median of 8 and 10
    assert math.isclose(rows[(0.22, 0.3)]["ratio"], 0.3 / 0.27, rel_tol=1e-6)  # median of 1, 2, 1.11
    assert math.isnan(rows[(0.12, 0.17)]["ratio"]) and rows[(0.12, 0.17)]["share"] == 0
    assert math.isclose(sum(row["share"] for row in rows.values()), 1.0)


def test_training_means_draw_the_composed_runs_pairs() -> None:
    """Low light's pairs: every LQ darker than its GT; a mild blend moves them closer to the GT."""
    script = load_benchmark("training_exposure")
    base = ["experiment=smoke", "task=lowlight", "data.crop_size=32", "data.augment=false"]
    lq, gt, photo = script.training_means(base, 6)
    assert lq.shape == gt.shape == (6,) and (lq < gt).all() and photo is None
    mild_lq, mild_gt, _ = script.training_means([*base, "data.mild_prob=1", "data.mild_severity=[0,0.1]"], 6)
    assert torch.equal(mild_gt, gt) and (mild_lq > lq).all()


def test_pairs_can_be_banded_by_their_whole_photos_mean() -> None:
    """With photo means, each pair also carries its photo's LQ mean; banding by it moves pairs between bands."""
    script = load_benchmark("training_exposure")
    base = ["experiment=smoke", "task=lowlight", "data.crop_size=32", "data.augment=false"]
    lq, gt, photo = script.training_means([*base, "net.nafnet.photo_stats=true"], 6)
    assert photo is not None and photo.shape == (6,) and not torch.allclose(photo, lq)
    by_photo = script.exposure_table(lq, gt, photo)
    assert [row["share"] for row in by_photo] != [row["share"] for row in script.exposure_table(lq, gt)]
    assert math.isclose(sum(row["share"] for row in by_photo), 1.0, rel_tol=1e-6)
