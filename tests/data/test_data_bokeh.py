"""Bokeh data: lens names to scalars, the NTIRE 2023 layout (src/, tgt/, alpha/, meta.txt) and its errors,
and the synthetic bokeh of the bundled photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from refusion_pl.data import DataError, PairedDataModule
from refusion_pl.data.bokeh import BokehRenderer, lens_scalar
from tests.data.data_helpers import write_rgb

META = {
    "a": "Sony50mmf16.0AS, Sony50mmf1.8BS, 25",
    "b": "Canon50mmf1.4BS, Sony50mmf16.0AS, 12.5",
    "c": "Sony50mmf1.8BS, Canon50mmf1.8BS, 40",
}
SCALARS = {"a": [160.0, 18.0, 25.0], "b": [-14.0, 160.0, 12.5], "c": [18.0, -18.0, 40.0]}


def write_bokeh(root: Path, meta: dict[str, str] = META) -> None:
    for index, name in enumerate(META):
        write_rgb(root / "src" / f"{name}.jpg", 32, 40, seed=index)
        write_rgb(root / "tgt" / f"{name}.jpg", 32, 40, seed=10 + index)
        write_rgb(root / "alpha" / f"{name}.png", 32, 40, seed=20 + index, mode="L")
    lines = [f"{name}.jpg, {line}" for name, line in meta.items()]
    (root / "meta.txt").write_text("\n".join(lines) + "\n")


def bokeh_module(root: Path, **kwargs: object) -> PairedDataModule:
    settings = {"crop_size": 16, "batch_size": 3, "train_samples_per_epoch": 3, "val_holdout": 1}
    return PairedDataModule(root=str(root), layout="bokeh", **{**settings, **kwargs})


def test_lens_names_become_signed_f_numbers() -> None:
    assert lens_scalar("Sony50mmf1.8BS") == pytest.approx(18.0)
    assert lens_scalar("Canon50mmf1.4BS") == pytest.approx(-14.0)
    assert lens_scalar("Sony50mmf16.0AS") == pytest.approx(160.0)
    with pytest.raises(DataError, match=r"unknown lens name 'Nikon50mmf1\.8BS'"):
        lens_scalar("Nikon50mmf1.8BS")
    with pytest.raises(DataError, match="unknown lens name 'Sony50mm'"):
        lens_scalar("Sony50mm")


def test_batches_carry_the_meta_scalars_of_their_images(tmp_path: Path) -> None:
    write_bokeh(tmp_path)
    dm = bokeh_module(tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == batch["gt"].shape == (3, 3, 16, 16)
    for name, scalars in zip(batch["name"], batch["cond_scalars"]):
        assert scalars.tolist() == pytest.approx(SCALARS[name])
    val = next(iter(dm.val_dataloader()))
    assert val["cond_scalars"][0].tolist() == pytest.approx(SCALARS[val["name"][0]])
    assert val["lq"].shape == (1, 3, 32, 40)


def test_unknown_lens_names_the_meta_line(tmp_path: Path) -> None:
    write_bokeh(tmp_path, {**META, "b": "Nikon50mmf1.4BS, Sony50mmf16.0AS, 12.5"})
    with pytest.raises(DataError, match=r"meta\.txt:2: unknown lens name 'Nikon50mmf1.4BS'"):
        bokeh_module(tmp_path).setup("fit")


def test_missing_meta_line_is_named(tmp_path: Path) -> None:
    write_bokeh(tmp_path, {k: v for k, v in META.items() if k != "c"})
    with pytest.raises(DataError, match=r"c\.jpg: no line for id 'c' in .*meta\.txt"):
        bokeh_module(tmp_path).setup("fit")


def test_missing_target_and_meta_file_are_named(tmp_path: Path) -> None:
    write_bokeh(tmp_path)
    (tmp_path / "tgt" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"source image\(s\) without a target in .*tgt: b"):
        bokeh_module(tmp_path).setup("fit")
    (tmp_path / "meta.txt").unlink()
    with pytest.raises(DataError, match="bokeh meta file not found"):
        bokeh_module(tmp_path).setup("fit")


def test_renderer_blurs_away_from_focus_and_the_scalars_describe_the_pair() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 48, 48)
    depth = torch.linspace(0, 1, 48)[:, None].expand(48, 48)[None]  # row 0 far, last row near
    renderer = BokehRenderer(disparity=8.0)
    wide = renderer.render(image, depth, lens_scalar("Canon50mmf1.4BS"), 8.0, focus_depth=1.0)
    closed = renderer.render(image, depth, lens_scalar("Sony50mmf16.0AS"), 8.0, focus_depth=1.0)
    change = (wide - image).abs().mean(dim=(0, 2))
    assert change[-1] < 1e-6 < change[0]  # the focused (near) rows stay sharp, far rows are blurred
    assert (closed - image).abs().mean() < 0.2 * (wide - image).abs().mean()  # f/16 barely blurs
    source, target, scalars = renderer.pair(image, depth, torch.Generator().manual_seed(3))
    src, tgt, disparity = scalars.tolist()
    assert src != tgt and disparity == 8.0
    # the scalars reproduce the pair: each image is the photo through the lens its scalar names
    _, focus = renderer.draw(torch.Generator().manual_seed(3))
    focus_depth = float(torch.quantile(depth.flatten(), focus))
    assert torch.allclose(source, renderer.render(image, depth, src, disparity, focus_depth))
    assert torch.allclose(target, renderer.render(image, depth, tgt, disparity, focus_depth))


def test_bundled_photos_render_bokeh_pairs_without_download() -> None:
    degradation = {
        "name": "bokeh",
        "lenses": ["Sony50mmf16.0AS", "Canon50mmf1.4BS"],
        "disparity": [12.0, 12.0],
    }
    dm = PairedDataModule(layout="bokeh", degradation=degradation, crop_size=32, batch_size=2)
    assert dm.bundled and dm.renderer is not None
    dm.setup("validate")
    val = next(iter(dm.val_dataloader()))
    src, tgt, disparity = val["cond_scalars"][0].tolist()
    assert {src, tgt} == {160.0, -14.0} and disparity == 12.0
    assert (val["lq"] - val["gt"]).abs().mean() > 1e-3  # the two lenses render differently
    again = PairedDataModule(layout="bokeh", degradation=degradation, crop_size=32, batch_size=2)
    again.setup("validate")
    assert torch.equal(next(iter(again.val_dataloader()))["lq"], val["lq"])  # fixed validation pairs
    with pytest.raises(DataError, match=r"degradation bokeh: unknown parameter\(s\) \['aperture'\]"):
        PairedDataModule(layout="bokeh", degradation={"name": "bokeh", "aperture": 2})


def test_swapping_source_and_target_swaps_their_lenses(tmp_path: Path) -> None:
    write_bokeh(tmp_path)
    plain = bokeh_module(tmp_path, augment=False)
    swapped = bokeh_module(tmp_path, augment=False, swap_prob=1.0)
    for dm in (plain, swapped):
        dm.setup("fit")
    a, b = plain.dataset("train")[0], swapped.dataset("train")[0]
    assert torch.equal(a["lq"], b["gt"]) and torch.equal(a["gt"], b["lq"])
    assert b["cond_scalars"].tolist() == [a["cond_scalars"][1], a["cond_scalars"][0], a["cond_scalars"][2]]
