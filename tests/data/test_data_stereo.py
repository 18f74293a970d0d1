"""Stereo SR data: HR/ + LR_x4/ views on disk (Flickr1024 / NTIRE 2023 layout), the bundled stereo pair, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from refusion_pl.data import DataError, PairedDataModule, read_image
from refusion_pl.data.stereo import BUNDLED_STEREO_ROWS, bundled_stereo_pairs, right_view
from tests.data.data_helpers import assert_aligned, coords, write_coords

HR_H, HR_W, SCALE = 40, 48, 4


def write_stereo(root: Path, ids: list[str], scale: int = SCALE) -> None:
    """Coordinate-encoded views: tags 1/2 (LR/HR) for left views, 3/4 for right views."""
    for name in ids:
        for side, (lr_tag, hr_tag) in (("L", (1, 2)), ("R", (3, 4))):
            write_coords(root / "HR" / f"{name}_{side}.png", HR_H, HR_W, tag=hr_tag)
            write_coords(
                root / f"LR_x{scale}" / f"{name}_{side}.png", HR_H // scale, HR_W // scale, tag=lr_tag
            )


def stereo_module(root: Path, **kwargs: object) -> PairedDataModule:
    settings = {"crop_size": 16, "batch_size": 4, "train_samples_per_epoch": 8, "check_images": "full"}
    return PairedDataModule(root=str(root), layout="stereo", scale=SCALE, **{**settings, **kwargs})


def test_views_stack_on_channels_crop_together_and_never_flip_horizontally(tmp_path: Path) -> None:
    write_stereo(tmp_path, ["0001", "0002", "0003"])
    dm = stereo_module(tmp_path)
    dm.setup("fit")
    flipped = 0
    for batch in list(dm.train_dataloader())[:2]:
        lq, gt = batch["lq"], batch["gt"]
        assert lq.shape == (4, 6, 4, 4) and gt.shape == (4, 6, 16, 16)
        for view, (lr_tag, hr_tag) in enumerate(((1, 2), (3, 4))):
            lq_view, gt_view = lq[:, 3 * view : 3 * view + 3], gt[:, 3 * view : 3 * view + 3]
            assert (coords(lq_view)[:, 2] == lr_tag).all() and (coords(gt_view)[:, 2] == hr_tag).all()
            assert_aligned(lq_view, gt_view, SCALE)  # LR crop = HR crop / scale, in each view
        columns = coords(gt)[:, 1::3]  # column planes of both views
        assert (columns[..., 1:] - columns[..., :-1] == 1).all()  # left stays left: no horizontal flips
        assert torch.equal(coords(gt)[:, :2], coords(gt)[:, 3:5])  # both views cropped at one place
        rows = coords(gt)[:, 0]
        flipped += int((rows[:, 1:, 0] < rows[:, :-1, 0]).all(dim=1).sum())
    assert flipped > 0  # vertical flips do happen
    val = next(iter(dm.val_dataloader()))  # 3 pairs: one whole pair held out
    assert val["gt"].shape == (1, 6, HR_H, HR_W) and val["name"][0] in {"0001", "0002", "0003"}


def test_view_without_partner_is_named(tmp_path: Path) -> None:
    write_stereo(tmp_path, ["0001", "0002"])
    (tmp_path / "HR" / "0002_R.png").unlink()
    (tmp_path / "LR_x4" / "0002_R.png").unlink()
    with pytest.raises(DataError, match=r"0002_L\.png has no right view"):
        stereo_module(tmp_path).setup("fit")


def test_lr_hr_size_mismatch_is_named(tmp_path: Path) -> None:
    write_stereo(tmp_path, ["0001", "0002"])
    write_coords(tmp_path / "LR_x4" / "0002_R.png", 9, 12, tag=3)
    with pytest.raises(DataError, match=r"LR_x4/0002_R\.png is 9x12, HR is 40x48"):
        stereo_module(tmp_path).setup("fit")


def test_file_without_view_suffix_is_named(tmp_path: Path) -> None:
    write_stereo(tmp_path, ["0001", "0002"])
    write_coords(tmp_path / "HR" / "0003.png", HR_H, HR_W)
    write_coords(tmp_path / "LR_x4" / "0003.png", HR_H // 4, HR_W // 4)
    with pytest.raises(DataError, match=r"0003\.png: stereo data needs <id>_L"):
        stereo_module(tmp_path).setup("fit")


def test_other_scales_read_their_lr_folder(tmp_path: Path) -> None:
    write_stereo(tmp_path, ["0001", "0002"], scale=2)
    dm = PairedDataModule(root=str(tmp_path), layout="stereo", scale=2, crop_size=16, val_size=None)
    dm.setup("validate")
    val = next(iter(dm.val_dataloader()))
    assert val["lq"].shape == (1, 6, HR_H // 2, HR_W // 2)


def test_bundled_pair_holds_out_its_bottom_rows() -> None:
    """No download: scikit-image's stereo photograph, LR made on the fly; validation rows are never trained on."""
    dm = PairedDataModule(layout="stereo", scale=4, degradation={"name": "sr", "scale": 4}, val_size=None)
    assert dm.bundled
    dm.setup("validate")
    val = next(iter(dm.val_dataloader()))
    (pair,) = bundled_stereo_pairs("val")
    left, right = read_image(pair.gt)[0], read_image(right_view(pair.gt))[0]
    top = round(BUNDLED_STEREO_ROWS["val"][0] * left.shape[-2] // 4) * 4
    assert val["gt"].shape == (1, 6, left.shape[-2] - top, left.shape[-1] // 4 * 4)
    assert torch.equal(val["gt"][0, :3], left[:, top:, : val["gt"].shape[-1]])
    assert torch.equal(val["gt"][0, 3:], right[:, top:, : val["gt"].shape[-1]])
    assert val["lq"].shape[-2:] == (val["gt"].shape[-2] // 4, val["gt"].shape[-1] // 4)
    train_rows = BUNDLED_STEREO_ROWS["train"]
    assert (
        train_rows[1] <= BUNDLED_STEREO_ROWS["val"][0]
        and bundled_stereo_pairs("train")[0].region == train_rows
    )


def test_hr_only_views_get_lr_from_the_degradation(tmp_path: Path) -> None:
    """Flickr1024 as published (Train/, Validation/ of HR views only): LR views made by bicubic x4."""
    for split, ids in (("Train", ["0001", "0002"]), ("Validation", ["0003"])):
        for name in ids:
            for side, tag in (("L", 2), ("R", 4)):
                write_coords(tmp_path / split / f"{name}_{side}.png", HR_H, HR_W, tag=tag)
    dm = PairedDataModule(
        root=str(tmp_path), layout="stereo", scale=SCALE, gt_dir="", train_split="Train", val_split="Validation",
        degradation={"name": "sr", "scale": SCALE}, crop_size=16, batch_size=2, val_size=None,
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == (2, 6, 4, 4) and batch["gt"].shape == (2, 6, 16, 16)
    val = next(iter(dm.val_dataloader()))
    assert val["name"] == ["0003"] and val["lq"].shape == (1, 6, HR_H // 4, HR_W // 4)
    assert (coords(val["gt"])[0, 2] == 2).all() and (coords(val["gt"])[0, 5] == 4).all()
