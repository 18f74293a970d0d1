"""Synthetic degradations: config errors, determinism, and that each moves the image the expected way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from skimage import data as skdata

from refusion_pl.data import DataError, build_degradation
from refusion_pl.data.degradations import DEGRADATIONS, with_dark_objects

CONF = Path(__file__).resolve().parents[2] / "conf"
TASKS = ["shadow", "derain", "denoise", "deblur", "dehaze", "sr", "inpaint", "lowlight", "jpeg"]


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real 128x128 crop of the astronaut photo, [1,3,H,W] in [0,1]."""
    img = torch.from_numpy(skdata.astronaut()[64:192, 160:288].copy()).permute(2, 0, 1).float() / 255
    return img[None]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_task_is_registered() -> None:
    assert sorted(DEGRADATIONS) == sorted(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_task_yaml_builds_and_is_deterministic(task: str, photo: torch.Tensor) -> None:
    cfg = OmegaConf.create({"task": OmegaConf.load(CONF / "task" / f"{task}.yaml")})
    optional = {
        "mild_severity",
        "shift_jitter",
        "dark_prob",
        "dark_gain",
        "photo_stats",
    }  # TaskConfig defaults where a task does not set them
    assert set(cfg.task) - optional == {"name", "channels", "scale", "crop_border", "degradation"}
    deg = build_degradation(cfg.task.degradation)
    assert deg.scale == cfg.task.scale
    a, b, c = deg(photo, gen(1)), deg(photo, gen(1)), deg(photo, gen(2))
    assert torch.equal(a, b)
    assert task == "sr" or not torch.equal(a, c)  # default sr (bicubic, no noise) has nothing random
    assert a.min() >= 0 and a.max() <= 1 and a.dtype == torch.float32
    assert a.shape[-2:] == (128 // deg.scale, 128 // deg.scale)


@pytest.mark.parametrize("task", TASKS)
def test_grayscale_and_batches(task: str, photo: torch.Tensor) -> None:
    deg = build_degradation({"name": task})
    gray = photo.mean(1, keepdim=True)[..., :64, :64]
    out = deg(torch.cat([gray, gray.flip(-1)]), gen())
    assert out.shape[:2] == (2, 1)


def test_unknown_name_and_param() -> None:
    with pytest.raises(DataError, match=r"unknown degradation name 'blurr'.*deblur.*shadow"):
        build_degradation({"name": "blurr"})
    with pytest.raises(DataError, match=r"shadow: unknown parameter\(s\) \['intensty'\].*intensity"):
        build_degradation({"name": "shadow", "intensty": 0.5})
    with pytest.raises(DataError, match="denoise: sigma"):
        build_degradation({"name": "denoise", "sigma": "high"})
    with pytest.raises(DataError, match=r"jpeg: quality=\[60, 20\] has low > high"):
        build_degradation({"name": "jpeg", "quality": [60, 20]})
    with pytest.raises(DataError, match="outside"):
        build_degradation({"name": "shadow", "intensity": 1.5})
    with pytest.raises(DataError, match="kernel"):
        build_degradation({"name": "sr", "kernel": "lanczos9"})


def test_shadow_darkens(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "shadow"})(photo, gen())
    assert (lq <= photo + 1e-6).all()
    assert lq.mean() < photo.mean() - 0.01


def test_derain_brightens(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "derain", "density": 0.01})(photo, gen())
    assert (lq >= photo - 1e-6).all() and lq.mean() > photo.mean() + 0.005


def test_denoise_noise_std_matches_sigma() -> None:
    grey = torch.full((1, 3, 128, 128), 0.5)
    lq = build_degradation({"name": "denoise", "sigma": 25})(grey, gen())
    assert abs((lq - grey).std().item() - 25 / 255) < 0.03 * 25 / 255
    assert abs((lq - grey).mean().item()) < 2e-3


def test_deblur_removes_detail(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "deblur", "kernel_size": 15})(photo, gen())

    def detail(x: torch.Tensor) -> float:
        return x.diff(dim=-1).abs().mean().item() + x.diff(dim=-2).abs().mean().item()

    assert detail(lq) < 0.7 * detail(photo)


def test_dehaze_lowers_contrast_and_lifts_blacks(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "dehaze"})(photo, gen())
    assert lq.std() < 0.8 * photo.std()
    assert lq.min() > photo.min()


def test_sr_size_and_content(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "sr", "scale": 4})(photo, gen())
    assert lq.shape == (1, 3, 32, 32)
    pooled = torch.nn.functional.avg_pool2d(photo, 4)
    assert (lq - pooled).abs().mean() < 0.05  # a faithful downscale, not noise


def test_inpaint_masks_with_fill(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "inpaint", "fill": 1.0})(photo, gen())
    changed = (lq != photo).any(1)
    assert 0.005 < changed.float().mean() < 0.9
    assert (lq.permute(1, 0, 2, 3)[:, changed] == 1.0).all()


def test_lowlight_darkens_strongly(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "lowlight"})(photo, gen())
    assert lq.mean() < 0.45 * photo.mean()


def test_jpeg_adds_block_artifacts(photo: torch.Tensor) -> None:
    lq = build_degradation({"name": "jpeg", "quality": 10})(photo, gen())

    def blockiness(x: torch.Tensor) -> float:
        d = x.diff(dim=-1).abs().mean(dim=(0, 1, 2))  # column differences, [W-1]
        return (d[7::8].mean() / d.mean()).item()  # 8x8 block borders vs average

    assert (lq - photo).abs().mean() > 0.01
    assert blockiness(lq) > 1.1 * blockiness(photo)


def test_accepts_omegaconf_nodes(photo: torch.Tensor) -> None:
    deg = build_degradation(OmegaConf.create({"name": "denoise", "sigma": [5, 50]}))
    assert deg.params["sigma"] == (5.0, 50.0)


def _small_draws(deg: object, image: torch.Tensor, seed: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every random draw of at most 4 numbers (the parameters, not noise fields) degrading ``image``."""
    draws: list[float] = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            if out.numel() <= 4:
                draws.extend(out.flatten().tolist())
            return out

        return wrapped

    with monkeypatch.context() as patch:
        for name in ("rand", "randn", "randint"):
            patch.setattr(torch, name, spy(getattr(torch, name)))
        deg(image, torch.Generator().manual_seed(seed))
    return draws


@pytest.mark.parametrize("task", TASKS)
def test_scalars_first_degradations_draw_the_same_parameters_at_any_size(task, photo, monkeypatch) -> None:
    """`scalars_first` (what lets training take photo statistics on a shrunk photo): a 128x128 image and a
    37x52 one degraded from copies of one generator get the same parameters; the others do not, on some seed."""
    cfg = OmegaConf.create({"task": OmegaConf.load(CONF / "task" / f"{task}.yaml")})
    deg = build_degradation(cfg.task.degradation)
    small = photo[..., :36, :52]  # a multiple of every super-resolution scale
    same = [
        _small_draws(deg, photo, seed, monkeypatch) == _small_draws(deg, small, seed, monkeypatch)
        for seed in range(6)
    ]
    assert all(same) if deg.scalars_first else not all(same), same


def test_dark_objects_hide_what_is_under_them_in_one_dark_flat_colour() -> None:
    """A hard-edged, opaque object replaces the pixels it covers by one colour of brightness 0.03-0.35 and
    saturation at most 0.6 (a shadow would keep their texture); the rest is untouched; a grey image gets a grey
    object; the same generator paints the same objects."""
    texture = 0.6 + 0.4 * torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    for seed in range(5):
        draw = {"count": (1, 1), "blur": (0.0, 0.0), "opacity": (1.0, 1.0)}
        out = with_dark_objects(texture, torch.Generator().manual_seed(seed), **draw)
        assert torch.equal(out, with_dark_objects(texture, torch.Generator().manual_seed(seed), **draw))
        covered = (out != texture).any(0)
        assert 0.005 < covered.float().mean() < 0.95
        assert torch.equal(out[:, ~covered], texture[:, ~covered])
        colours = out[:, covered].unique(dim=1)
        assert colours.shape[1] == 1  # flat: the texture under it is gone
        value, low = colours.amax(), colours.amin()
        assert 0.03 - 1e-6 <= value <= 0.35 + 1e-6 and (value - low) / value <= 0.6 + 1e-5
    grey = with_dark_objects(texture[:1], torch.Generator().manual_seed(0))
    assert (
        grey.shape == (1, 96, 128)
        and (grey <= texture[:1] + 1e-6).all()
        and not torch.equal(grey, texture[:1])
    )
