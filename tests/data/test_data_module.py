"""The bundled default for every task, Hydra presets, and seeded reproducibility (runs, instances, workers)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hydra import compose as compose_train
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from refusion_pl.data import PairedDataModule
from refusion_pl.data.datasets import BUNDLED_SPLITS, EpochSampler
from refusion_pl.data.io import DataError
from refusion_pl.models.nafnet import photo_stats_kind

CONF = Path(__file__).resolve().parents[2] / "conf"
TASKS = ["shadow", "derain", "denoise", "deblur", "dehaze", "sr", "inpaint", "lowlight", "jpeg"]
PRESETS = ["ntire", "istd", "rain100", "gopro", "paired", "clean"]
FAST = {"train_samples_per_epoch": 2, "batch_size": 2, "val_size": 64, "max_val_images": 1, "crop_size": 64}


def compose(task: str, preset: str = "ntire", **overrides: object) -> PairedDataModule:
    """What the training entry point does: the composed config's data node (preset over conf/data/_base.yaml,
    interpolated with the task), then instantiated."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose_train("train", overrides=[f"task={task}", f"data={preset}", "seed=0"])
    finally:
        GlobalHydra.instance().clear()
    cfg.data.merge_with(overrides)
    return instantiate(cfg.data)


@pytest.mark.parametrize("task", TASKS)
def test_bundled_default_yields_batches_for_every_task(task: str) -> None:
    dm = compose(task, **FAST)
    assert dm.bundled
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    s = dm.scale
    assert batch["gt"].shape == (2, 3, 64, 64) and batch["lq"].shape == (2, 3, 64 // s, 64 // s)
    assert set(batch["name"]) <= set(BUNDLED_SPLITS["train"])
    val = next(iter(dm.val_dataloader()))
    assert val["gt"].shape == (1, 3, 64, 64) and val["name"][0] not in BUNDLED_SPLITS["train"]
    if s == 1:
        assert (val["lq"] - val["gt"]).abs().mean() > 1e-3  # the degradation did something


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_defaults_to_bundled_photos(preset: str) -> None:
    dm = compose("derain", preset)
    assert dm.bundled and dm.layout == preset and dm.degradation.name == "derain"
    assert dm.hparams["degradation"]["name"] == "derain" and dm.hparams["seed"] == 0


def test_held_out_images_are_whole_photos() -> None:
    assert not set(BUNDLED_SPLITS["train"]) & set(BUNDLED_SPLITS["val"])
    assert not set(BUNDLED_SPLITS["train"]) & set(BUNDLED_SPLITS["test"])
    dm = PairedDataModule(degradation={"name": "shadow"}, val_size=None)
    dm.setup("test")
    names = [b["name"][0] for b in dm.test_dataloader()]
    assert names == list(BUNDLED_SPLITS["test"])


def _first_batches(dm: PairedDataModule, n: int = 2) -> list[dict]:
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


def test_validation_pairs_identical_across_instances() -> None:
    a = PairedDataModule(degradation={"name": "shadow"}, seed=1)
    b = PairedDataModule(degradation={"name": "shadow"}, seed=2)  # training seed does not move val pairs
    a.setup("validate")
    b.setup("validate")
    for x, y in zip(a.val_dataloader(), b.val_dataloader()):
        assert x["name"] == y["name"] and torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"])
    c = PairedDataModule(degradation={"name": "shadow"}, val_seed=5)
    c.setup("validate")
    assert not torch.equal(next(iter(c.val_dataloader()))["lq"], next(iter(a.val_dataloader()))["lq"])


def test_training_crops_follow_the_seed() -> None:
    kw = {"degradation": {"name": "denoise"}, **FAST, "train_samples_per_epoch": 4}
    a, b = _first_batches(PairedDataModule(seed=3, **kw)), _first_batches(PairedDataModule(seed=3, **kw))
    c = _first_batches(PairedDataModule(seed=4, **kw))
    for x, y in zip(a, b):
        assert x["name"] == y["name"] and torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"])
    assert not torch.equal(a[0]["gt"], c[0]["gt"])


def test_same_samples_with_workers_and_new_ones_each_epoch() -> None:
    kw = {"degradation": {"name": "derain"}, **FAST, "train_samples_per_epoch": 4, "seed": 7}
    dm0 = PairedDataModule(num_workers=0, **kw)
    dm2 = PairedDataModule(num_workers=2, persistent_workers=True, **kw)
    dm0.setup("fit")
    dm2.setup("fit")
    l0, l2 = dm0.train_dataloader(), dm2.train_dataloader()
    epochs0 = [torch.cat([b["lq"] for b in l0]) for _ in range(2)]
    epochs2 = [torch.cat([b["lq"] for b in l2]) for _ in range(2)]
    assert torch.equal(epochs0[0], epochs2[0]) and torch.equal(epochs0[1], epochs2[1])
    assert not torch.equal(epochs0[0], epochs0[1])


def test_epoch_sampler_encodes_epoch() -> None:
    s = EpochSampler(5, seed=0)
    s.set_epoch(3)
    idx = list(s)
    assert sorted(i - 15 for i in idx) == [0, 1, 2, 3, 4]
    assert sorted(i - 20 for i in s) == [0, 1, 2, 3, 4]  # advances on its own without set_epoch


def test_sr_bundled_crops_and_upsampling() -> None:
    dm = compose("sr", **FAST, upsample_lq=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == batch["gt"].shape == (2, 3, 64, 64)
    assert (batch["lq"] - batch["gt"]).abs().mean() < 0.1


def test_grayscale_task() -> None:
    dm = PairedDataModule(degradation={"name": "denoise"}, channels=1, **FAST)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["lq"].shape == (2, 1, 64, 64)


def test_swap_prob_for_autoencoder_stage() -> None:
    dm = PairedDataModule(degradation={"name": "lowlight"}, swap_prob=1.0, **FAST)
    batch = _first_batches(dm, 1)[0]
    assert batch["lq"].mean() > batch["gt"].mean()  # the dark image became the target


def test_mild_prob_blends_lq_toward_gt() -> None:
    """Every pair blended: each LQ lies on the line from its GT to the full-strength LQ of the same draw."""
    settings = {**FAST, "train_samples_per_epoch": 8, "batch_size": 8, "augment": False}
    full = _first_batches(PairedDataModule(degradation={"name": "lowlight"}, **settings), 1)[0]
    mild = _first_batches(PairedDataModule(degradation={"name": "lowlight"}, mild_prob=1.0, **settings), 1)[0]
    assert torch.equal(full["gt"], mild["gt"])
    full_change, mild_change = full["lq"] - full["gt"], mild["lq"] - mild["gt"]
    severity = (mild_change * full_change).flatten(1).sum(1) / full_change.pow(2).flatten(1).sum(1)
    assert torch.allclose(mild_change, severity.view(-1, 1, 1, 1) * full_change, atol=1e-5)
    assert ((severity >= 0) & (severity <= 1)).all() and severity.std() > 0.1  # random amounts, not one
    with pytest.raises(DataError, match=r"data\.mild_prob=1\.5"):
        PairedDataModule(degradation={"name": "lowlight"}, mild_prob=1.5, **FAST).setup("fit")


def test_mild_severity_bounds_the_blend() -> None:
    """``mild_severity`` draws the blend's strength from its range (the default [0, 1] draws the same amounts
    as before it existed); bad ranges are named."""
    settings = {**FAST, "train_samples_per_epoch": 8, "batch_size": 8, "augment": False, "mild_prob": 1.0}
    full = _first_batches(
        PairedDataModule(degradation={"name": "lowlight"}, **{**settings, "mild_prob": 0.0}), 1
    )[0]
    full_change = full["lq"] - full["gt"]

    def severities(**extra: object) -> torch.Tensor:
        mild = _first_batches(PairedDataModule(degradation={"name": "lowlight"}, **settings, **extra), 1)[0]
        change = mild["lq"] - mild["gt"]
        return (change * full_change).flatten(1).sum(1) / full_change.pow(2).flatten(1).sum(1)

    default, narrow = severities(), severities(mild_severity=[0.1, 0.3])
    assert torch.allclose(severities(mild_severity=[0.0, 1.0]), default, atol=1e-6)
    assert ((narrow >= 0.1 - 1e-4) & (narrow <= 0.3 + 1e-4)).all() and narrow.std() > 0.02
    assert torch.allclose(narrow, 0.1 + 0.2 * default, atol=1e-4)  # the same draws, mapped onto the range
    for bad in ([-0.1, 0.3], [0.5, 0.2], [0.0, 1.5], [0.3]):
        with pytest.raises(DataError, match=r"data\.mild_severity"):
            PairedDataModule(degradation={"name": "lowlight"}, mild_severity=bad, **FAST).setup("fit")


def test_dark_prob_darkens_the_clean_crop_before_degrading_it() -> None:
    """Each GT is the same crop scaled by one random gain in dark_gain, and the LQ degrades that darker GT."""
    settings = {**FAST, "train_samples_per_epoch": 8, "batch_size": 8, "augment": False}
    plain = _first_batches(PairedDataModule(degradation={"name": "shadow"}, **settings), 1)[0]
    dm = PairedDataModule(degradation={"name": "shadow"}, dark_prob=1.0, dark_gain=[0.2, 0.5], **settings)
    dark = _first_batches(dm, 1)[0]
    energy = plain["gt"].pow(2).flatten(1).sum(1)
    gains = (dark["gt"] * plain["gt"]).flatten(1).sum(1) / energy.clamp_min(1e-12)  # least squares
    assert torch.allclose(dark["gt"], gains.view(-1, 1, 1, 1) * plain["gt"], atol=1e-5)
    gains = gains[energy > 1.0]  # a crop of black sky has no gain to measure
    assert len(gains) >= 4 and ((gains >= 0.2 - 1e-6) & (gains <= 0.5 + 1e-6)).all() and gains.std() > 0.03
    assert (dark["lq"] <= dark["gt"] + 1e-6).all()  # shadows only remove light from the darkened photo
    assert not torch.allclose(dark["lq"], dark["gt"])
    for bad in ([0.0, 0.5], [0.6, 0.5], [0.5]):
        with pytest.raises(DataError, match=r"data\.dark_gain"):
            PairedDataModule(degradation={"name": "shadow"}, dark_gain=bad, **FAST).setup("fit")
    with pytest.raises(DataError, match=r"data\.dark_prob=-0\.1"):
        PairedDataModule(degradation={"name": "shadow"}, dark_prob=-0.1, **FAST).setup("fit")
    with pytest.raises(DataError, match=r"data\.dark_gain='dim'"):
        PairedDataModule(degradation={"name": "shadow"}, dark_gain="dim", **FAST)


def test_dark_gamma_darkens_mid_tones_and_keeps_highlights() -> None:
    """With dark_gamma above 1 each GT is ``gain * crop ** gamma``: mid-tones fall much further than highlights
    (a lit rocket on a night sky); bad ranges are named."""
    settings = {**FAST, "train_samples_per_epoch": 8, "batch_size": 8, "augment": False}
    plain = _first_batches(PairedDataModule(degradation={"name": "lowlight"}, **settings), 1)[0]["gt"]
    dm = PairedDataModule(
        degradation={"name": "lowlight"},
        dark_prob=1.0,
        dark_gain=[1.0, 1.0],
        dark_gamma=[2.0, 3.0],
        **settings,
    )
    dark = _first_batches(dm, 1)[0]["gt"]
    bright, mid = plain > 0.9, (plain > 0.3) & (plain < 0.5)
    assert bright.sum() > 50 and mid.sum() > 50
    assert (dark[bright] > 0.7).all()  # 0.9 ** 3 = 0.73: highlights stay bright
    assert (dark[mid] < 0.5**2 + 1e-6).all() and (dark[mid] < plain[mid]).all()
    exponents = (dark[mid].log() / plain[mid].log()).unique_consecutive()
    assert exponents.min() >= 2.0 - 1e-3 and exponents.max() <= 3.0 + 1e-3 and exponents.std() > 0.05
    for bad in ([0.0, 2.0], [3.0, 2.0], [2.0]):
        with pytest.raises(DataError, match=r"data\.dark_gamma"):
            PairedDataModule(degradation={"name": "lowlight"}, dark_gamma=bad, **FAST).setup("fit")


def test_recolour_prob_changes_hue_and_saturation_of_the_clean_crop_before_degrading_it() -> None:
    """Each GT is the same crop with other colours and the same brightness (HSV value: the largest channel), and
    the LQ degrades that recoloured GT; grey tasks pass through; bad values are named."""
    settings = {**FAST, "train_samples_per_epoch": 8, "batch_size": 8, "augment": False}
    plain = _first_batches(PairedDataModule(degradation={"name": "shadow"}, **settings), 1)[0]
    dm = PairedDataModule(degradation={"name": "shadow"}, recolour_prob=1.0, **settings)
    recoloured = _first_batches(dm, 1)[0]
    assert torch.allclose(recoloured["gt"].amax(1), plain["gt"].amax(1), atol=1e-5)
    change = (recoloured["gt"] - plain["gt"]).abs().flatten(1).mean(1)
    assert (change > 0.01).sum() >= 6 and change.std() > 0.005  # most crops recoloured, by random amounts
    assert (recoloured["lq"] <= recoloured["gt"] + 1e-6).all() and not torch.equal(
        recoloured["lq"], recoloured["gt"]
    )
    grey = {**settings, "channels": 1}
    assert torch.equal(
        _first_batches(PairedDataModule(degradation={"name": "denoise"}, **grey), 1)[0]["gt"],
        _first_batches(PairedDataModule(degradation={"name": "denoise"}, recolour_prob=1.0, **grey), 1)[0][
            "gt"
        ],
    )
    with pytest.raises(DataError, match=r"data\.recolour_prob=2"):
        PairedDataModule(degradation={"name": "shadow"}, recolour_prob=2, **FAST).setup("fit")


def test_dark_object_prob_paints_dark_objects_into_the_clean_crop_before_degrading_it() -> None:
    """Each GT is the same crop with part of it blended toward dark colours (never brighter than the crop or 0.35),
    and the LQ degrades that GT; stereo data and bad values are refused by name."""
    settings = {**FAST, "train_samples_per_epoch": 8, "batch_size": 8, "augment": False}
    plain = _first_batches(PairedDataModule(degradation={"name": "shadow"}, **settings), 1)[0]
    dm = PairedDataModule(degradation={"name": "shadow"}, dark_object_prob=1.0, **settings)
    painted = _first_batches(dm, 1)[0]
    covered = ((painted["gt"] - plain["gt"]).abs().amax(1) > 1e-3).flatten(1).float().mean(1)
    assert (covered > 0.01).all() and (covered < 0.95).all() and covered.std() > 0.02
    assert (painted["gt"] <= plain["gt"].clamp_min(0.35) + 1e-5).all()
    assert (painted["lq"] <= painted["gt"] + 1e-6).all() and not torch.equal(painted["lq"], painted["gt"])
    # photo statistics then come from the whole photo with its objects, not a shrunk copy drawn at another size
    stats = {**FAST, "photo_stats": "peak", "degradation": {"name": "lowlight"}}
    with_objects = PairedDataModule(dark_object_prob=0.3, **stats)
    with_objects.setup("fit")
    without = PairedDataModule(**stats)
    without.setup("fit")
    assert without.train_dataloader().dataset._shrunk_stats_match()
    assert not with_objects.train_dataloader().dataset._shrunk_stats_match()
    with pytest.raises(DataError, match=r"data\.dark_object_prob=1\.5"):
        PairedDataModule(degradation={"name": "shadow"}, dark_object_prob=1.5, **FAST).setup("fit")
    with pytest.raises(DataError, match=r"data\.dark_object_prob=0\.3: .*stereo"):
        PairedDataModule(layout="stereo", degradation={"name": "sr"}, dark_object_prob=0.3, **FAST)


def test_clean_prob_leaves_that_share_of_pairs_undegraded() -> None:
    """With clean_prob the LQ of that share of pairs is the GT itself (the rest degraded as before, the GTs
    unchanged); tasks whose LQ is smaller than the GT and bad values are refused by name."""
    settings = {**FAST, "train_samples_per_epoch": 16, "batch_size": 16, "augment": False}
    plain = _first_batches(PairedDataModule(degradation={"name": "shadow"}, **settings), 1)[0]
    for prob, low, high in ((1.0, 16, 16), (0.5, 3, 13)):
        dm = PairedDataModule(degradation={"name": "shadow"}, clean_prob=prob, **settings)
        batch = _first_batches(dm, 1)[0]
        clean = (batch["lq"] == batch["gt"]).flatten(1).all(1)
        assert low <= int(clean.sum()) <= high, (prob, clean)
        assert torch.equal(batch["gt"], plain["gt"]) and torch.equal(batch["lq"][~clean], plain["lq"][~clean])
    with pytest.raises(DataError, match=r"data\.clean_prob=-1"):
        PairedDataModule(degradation={"name": "shadow"}, clean_prob=-1, **FAST).setup("fit")
    with pytest.raises(DataError, match=r"data\.clean_prob > 0 needs LQ and GT of the same size"):
        PairedDataModule(degradation={"name": "sr"}, scale=2, clean_prob=0.2, **FAST).setup("fit")
    with pytest.raises(DataError, match=r"data\.clean_prob=0\.2: .*bokeh"):
        PairedDataModule(layout="bokeh", clean_prob=0.2, **FAST)


def test_dark_gain_from_a_config_is_saved_as_plain_numbers() -> None:
    """Composed configs hand over a ListConfig; checkpoints (weights-only loading) must hold plain floats."""
    from omegaconf import OmegaConf

    dm = PairedDataModule(degradation={"name": "shadow"}, dark_gain=OmegaConf.create([0.2, 0.5]), **FAST)
    buffer = io.BytesIO()
    torch.save(dict(dm.hparams), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["dark_gain"] == [0.2, 0.5]


def _shadow_edges_per_crop(degrade_window: int | None) -> float:
    """Mean length (pixels) of hard shadow edge inside a 32-px crop of the bundled photos."""
    shadow = {
        "name": "shadow",
        "intensity": [0.5, 0.5],
        "color_cast": 0.0,
        "num_polygons": [1, 1],
        "polygon_size": [0.3, 0.3],
        "penumbra": [0.0, 0.0],
        "plasma_prob": 0.0,
    }
    settings = {**FAST, "crop_size": 32, "train_samples_per_epoch": 48, "batch_size": 48, "augment": False}
    batch = _first_batches(
        PairedDataModule(degradation=shadow, degrade_window=degrade_window, **settings), 1
    )[0]
    shadowed = (batch["lq"] < 0.75 * batch["gt"] - 1e-3).any(dim=1).float()
    lit = (batch["gt"] > 0.05).all(dim=1)  # black pixels show no shadow either way
    edges = (shadowed.diff(dim=-1).abs() * (lit[..., 1:] & lit[..., :-1])).sum(dim=(1, 2))
    return float(edges.mean())


def test_degrade_window_draws_degradations_at_photo_scale() -> None:
    """A polygon sized to a 32-px crop cuts through every crop; sized to a larger window, most crops hold less
    of its edge (degradations scale with the image they are drawn on, and a user restores whole photos)."""
    on_crop, on_window, on_photo = (_shadow_edges_per_crop(w) for w in (None, 128, 512))
    assert on_crop > 2 * on_window > 4 * on_photo  # the bundled photos are 300-512 px: 512 is each one whole


def test_degrade_window_keeps_pairs_aligned_and_refuses_bad_values() -> None:
    """Degrading the window then cropping gives crops of the right size whose LQ still matches its GT."""
    settings = {**FAST, "train_samples_per_epoch": 4, "batch_size": 4}
    batch = _first_batches(
        PairedDataModule(degradation={"name": "lowlight"}, degrade_window=96, **settings), 1
    )[0]
    assert batch["lq"].shape == batch["gt"].shape == (4, 3, 64, 64)
    sr = PairedDataModule(degradation={"name": "sr", "scale": 4}, scale=4, degrade_window=200, **settings)
    sr_batch = _first_batches(sr, 1)[0]
    assert sr_batch["lq"].shape == (4, 3, 16, 16) and sr_batch["gt"].shape == (4, 3, 64, 64)
    for bad, match in [
        (32, r"data\.degrade_window=32 must be >= data\.crop_size=64"),
        (0, r"degrade_window"),
    ]:
        with pytest.raises(DataError, match=match):
            PairedDataModule(degradation={"name": "shadow"}, degrade_window=bad, **FAST).setup("fit")


def test_random_window_is_a_slice_capped_at_the_image() -> None:
    from refusion_pl.data.datasets import random_window

    image = torch.arange(2 * 10 * 7, dtype=torch.float32).view(1, 2, 10, 7)
    window = random_window(image, 6, 2, torch.Generator().manual_seed(0))
    assert window.shape[-2:] == (6, 6)
    top, left = int(window[0, 0, 0, 0]) // 7, int(window[0, 0, 0, 0]) % 7
    assert top % 2 == 0 and left % 2 == 0
    assert torch.equal(window, image[..., top : top + 6, left : left + 6])
    assert random_window(image, 64, 4, torch.Generator()).shape[-2:] == (8, 4)  # capped, multiple of 4


HALF_EXPOSURE = {"name": "lowlight", "gain": [0.5, 0.5], "gamma": [1, 1], "noise": [0, 0], "quantize": False}


def _samples_and_photos(degradation: dict, **settings: object) -> list[tuple[dict, torch.Tensor]]:
    """Training samples with photo statistics, each with its whole clean photo."""
    dm = PairedDataModule(
        degradation=degradation, **{**FAST, "augment": False, "photo_stats": True, **settings}
    )
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    return [(dataset[i], dataset._load(i % len(dataset.pairs))[2]) for i in range(len(dataset))]


def _shrunk(photo: torch.Tensor) -> torch.Tensor:
    """The photo shrunk PEAK_POOL times: what the data takes synthetic photo statistics on."""
    from refusion_pl.models.nafnet import PEAK_POOL

    return torch.nn.functional.avg_pool2d(photo[None], PEAK_POOL)[0]


def _photo_stats_samples(**extra: object) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(cond_scalars, crop LQ statistics, whole GT photo statistics) of training samples under an exact half
    exposure."""
    from refusion_pl.models.nafnet import photo_statistics

    kind = photo_stats_kind(extra.get("photo_stats", True))
    return [
        (
            sample["cond_scalars"],
            photo_statistics(sample["lq"], kind),
            photo_statistics(_shrunk(photo), kind, pool=1),
        )
        for sample, photo in _samples_and_photos(HALF_EXPOSURE, train_samples_per_epoch=6, **extra)
    ]


def test_photo_stats_are_the_whole_degraded_photos_statistics() -> None:
    """Each sample carries its whole photo's LQ channel means (and peaks), not its crop's; mild blends and swaps
    move them with the pixels."""
    for setting, count in ((True, 3), ("means_and_peaks", 6), ("peak", 1)):
        plain = _photo_stats_samples(photo_stats=setting)
        assert plain[0][0].shape == (count,), setting
        assert all(torch.allclose(stats, 0.5 * photo, atol=1e-6) for stats, _, photo in plain), setting
        assert max(float((stats - crop).abs().max()) for stats, crop, _ in plain) > 0.02  # crops differ
        for extra, factor in (
            ({"mild_prob": 1.0, "mild_severity": [0.5, 0.5]}, 0.75),
            ({"swap_prob": 1.0}, 1.0),
        ):
            samples = _photo_stats_samples(photo_stats=setting, **extra)
            assert all(torch.allclose(stats, factor * photo, atol=1e-6) for stats, _, photo in samples), extra
    assert "cond_scalars" not in _first_batches(PairedDataModule(degradation=HALF_EXPOSURE, **FAST), 1)[0]


def test_photo_stats_are_drawn_with_the_crops_own_degradation() -> None:
    """The shrunk photo is degraded with the draws its crop gets (a copy of its generator): under a random
    exposure the photo's LQ/GT ratio is the crop's, sample by sample."""
    gains = []
    for sample, photo in _samples_and_photos(
        {**HALF_EXPOSURE, "gain": [0.1, 0.9]}, train_samples_per_epoch=8
    ):
        crop_gain = sample["lq"].mean() / sample["gt"].mean()
        gains.append(
            (float(crop_gain), float((sample["cond_scalars"] / _shrunk(photo).mean((-2, -1))).mean()))
        )
    assert all(abs(crop - photo) < 1e-5 for crop, photo in gains), gains
    assert max(crop for crop, _ in gains) - min(crop for crop, _ in gains) > 0.2  # the gains do vary


def test_photo_stats_degrade_the_whole_photo_where_a_shrunk_copy_would_draw_otherwise() -> None:
    """Shrunk copies only for one view and degradations that draw their parameters first; shadows (drawn after
    their size-dependent masks) and stereo pairs degrade the whole photo and crop from it, as exact as before."""

    def shrinks(degradation: dict, **settings: object) -> bool:
        dm = PairedDataModule(degradation=degradation, **{**FAST, "photo_stats": "peak", **settings})
        dm.setup("fit")
        return dm.train_dataloader().dataset._shrunk_stats_match()

    assert shrinks(HALF_EXPOSURE) and not shrinks(HALF_EXPOSURE, degrade_window=96)
    assert not shrinks({"name": "shadow"}) and not shrinks(HALF_EXPOSURE, photo_stats=False)


def test_training_peaks_are_inflated_by_noise_within_bounds() -> None:
    """Synthetic LQ peaks come from the shrunk photo, whose sensor noise is not averaged over 4x4 blocks as the
    whole photo's is: under the low-light task's strongest noise (6/255) they come out up to 1.35x the whole
    degraded photo's (what restore computes), under a mild one's (1/255) within 5%."""
    from refusion_pl.data.degradations import build_degradation
    from refusion_pl.models.nafnet import photo_statistics

    for noise, low, high in ((6.0, 1.0, 1.35), (1.0, 0.95, 1.05)):
        model = {"name": "lowlight", "gain": [0.25, 0.25], "gamma": [1.5, 1.5], "noise": [noise, noise]}
        degrade = build_degradation(model)
        for index, (sample, photo) in enumerate(
            _samples_and_photos(model, train_samples_per_epoch=6, photo_stats="peak")
        ):
            whole = float(
                photo_statistics(degrade(photo[None], torch.Generator().manual_seed(index)), "peak")
            )
            ratio = float(sample["cond_scalars"][0]) / whole
            assert low <= ratio <= high, (noise, sample["name"], ratio)
