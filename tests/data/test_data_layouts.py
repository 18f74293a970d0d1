"""Dataset layouts on disk: pairing by stem, presets, alignment of crops, and every bad-data error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from data_helpers import (
    assert_aligned,
    coord_array,
    coords,
    make_same_size_pairs,
    truncate,
    write_coords,
    write_rgb,
)

from refusion_pl.data import DataError, PairedDataModule


def module(root: Path, **kwargs: object) -> PairedDataModule:
    defaults: dict[str, object] = {"crop_size": 16, "batch_size": 2, "train_samples_per_epoch": 6}
    return PairedDataModule(root=str(root), **{**defaults, **kwargs})


def names(dm: PairedDataModule, split: str) -> list[str]:
    return [p.name for p in dm.pairs(split)]


def all_batches(loader: torch.utils.data.DataLoader) -> list[dict]:
    return list(loader)


# ------------------------------------------------------------------------------------------ layouts


def test_ntire_pairs_by_stem_and_aligns(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["0001", "0002", "0003"])
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["0100"])
    dm = module(tmp_path)
    dm.setup("fit")
    assert names(dm, "train") == ["0001", "0002", "0003"] and names(dm, "val") == ["0100"]
    for batch in all_batches(dm.train_dataloader()):
        assert batch["lq"].shape == batch["gt"].shape == (2, 3, 16, 16)
        assert (coords(batch["lq"])[:, 2] == 1).all() and (coords(batch["gt"])[:, 2] == 2).all()
        assert_aligned(batch["lq"], batch["gt"])
    val = next(iter(dm.val_dataloader()))
    assert val["gt"].shape == (1, 3, 40, 52) and val["name"] == ["0100"]


def test_nested_folders_and_mixed_suffixes(tmp_path: Path) -> None:
    write_coords(tmp_path / "train/LQ/sceneA/x.png", 20, 20, 1)
    write_coords(tmp_path / "train/GT/sceneA/x.tif", 20, 20, 2)  # a 16-bit TIFF pairs with the PNG
    write_coords(tmp_path / "train/LQ/sceneB/x.png", 20, 20, 1)
    write_coords(tmp_path / "train/GT/sceneB/x.png", 20, 20, 2)
    (tmp_path / "train/LQ/.DS_Store").write_bytes(b"junk")
    (tmp_path / "train/LQ/sceneA/._x.png").write_bytes(b"mac resource fork")
    dm = module(tmp_path, layout="ntire")
    assert names(dm, "train") + names(dm, "val") in (["sceneB/x", "sceneA/x"], ["sceneA/x", "sceneB/x"])


def test_istd_layout(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/train_A", tmp_path / "train/train_C", ["1-1", "1-2"])
    write_rgb(tmp_path / "train/train_B/1-1.png", 40, 52, mode="L")  # masks are ignored
    make_same_size_pairs(tmp_path / "test/test_A", tmp_path / "test/test_C", ["90-1"])
    dm = module(tmp_path, layout="istd")
    dm.setup("fit")
    dm.setup("test")
    assert names(dm, "train") == ["1-1", "1-2"] and names(dm, "val") == names(dm, "test") == ["90-1"]
    assert_aligned(*(next(iter(dm.train_dataloader()))[k] for k in ("lq", "gt")))


def test_rain100_layout(tmp_path: Path) -> None:
    for split, ids in (("train", ["1", "2", "3"]), ("test", ["001"])):
        for i in ids:
            write_coords(tmp_path / split / f"rain-{i}.png", 24, 24, 1)
            write_coords(tmp_path / split / f"norain-{i}.png", 24, 24, 2)
    write_rgb(tmp_path / "train/rainstreak-1.png", 24, 24)  # JORDER extras are not pairs
    dm = module(tmp_path, layout="rain100")
    dm.setup("fit")
    assert names(dm, "train") == ["1", "2", "3"] and names(dm, "val") == ["001"]
    batch = next(iter(dm.train_dataloader()))
    assert (coords(batch["lq"])[:, 2] == 1).all()
    assert_aligned(batch["lq"], batch["gt"])


def test_rain100_flat_folder_with_subfolders(tmp_path: Path) -> None:
    for i in range(4):
        write_coords(tmp_path / "rainy" / f"rain-{i:03d}.png", 24, 24, 1)
        write_coords(tmp_path / f"norain-{i:03d}.png", 24, 24, 2)
    dm = module(tmp_path, layout="rain100", val_holdout=1)
    assert len(names(dm, "train")) == 3 and len(names(dm, "val")) == 1


def test_gopro_layout(tmp_path: Path) -> None:
    for scene in ("GOPR0372_07_00", "GOPR0374_11_01"):
        make_same_size_pairs(
            tmp_path / "train" / scene / "blur", tmp_path / "train" / scene / "sharp", ["000047"]
        )
        make_same_size_pairs(
            tmp_path / "train" / scene / "blur_gamma", tmp_path / "train" / scene / "xx", ["9"]
        )
    make_same_size_pairs(tmp_path / "test/GOPR0384_11_00/blur", tmp_path / "test/GOPR0384_11_00/sharp", ["1"])
    dm = module(tmp_path, layout="gopro")
    dm.setup("fit")
    assert names(dm, "train") == ["GOPR0372_07_00/000047", "GOPR0374_11_01/000047"]
    assert names(dm, "val") == ["GOPR0384_11_00/1"]
    assert_aligned(*(next(iter(dm.train_dataloader()))[k] for k in ("lq", "gt")))


def test_paired_with_stem_pattern_and_holdout(tmp_path: Path) -> None:
    for i in range(10):
        write_coords(tmp_path / "low" / f"img{i:02d}_x2.png", 12, 12, 1)
        write_coords(tmp_path / "high" / f"img{i:02d}.png", 24, 24, 2)
    dm = module(
        tmp_path,
        layout="paired",
        lq_dir="low",
        gt_dir="high",
        stem_pattern=r"^(img\d+)",
        scale=2,
        val_holdout=0.2,
    )
    dm.setup("fit")
    train, val = names(dm, "train"), names(dm, "val")
    assert len(train) == 8 and len(val) == 2 and not set(train) & set(val)  # whole images held out
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == (2, 3, 8, 8) and batch["gt"].shape == (2, 3, 16, 16)
    assert_aligned(batch["lq"], batch["gt"], scale=2)
    vb = next(iter(dm.val_dataloader()))
    assert vb["lq"].shape == (1, 3, 12, 12) and vb["gt"].shape == (1, 3, 24, 24)


def test_paired_absolute_dirs_without_root(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "a", tmp_path / "b", ["p", "q", "r"])
    dm = PairedDataModule(
        layout="paired", lq_dir=str(tmp_path / "a"), gt_dir=str(tmp_path / "b"), crop_size=8
    )
    assert not dm.bundled and len(names(dm, "train")) == 2


def test_clean_layout_synthesises(tmp_path: Path) -> None:
    for i in range(5):
        write_rgb(tmp_path / "photos" / f"{i}.jpg", 40 + i, 50, seed=i)
    dm = PairedDataModule(
        root=str(tmp_path / "photos"),
        layout="clean",
        degradation={"name": "denoise"},
        crop_size=32,
        batch_size=2,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == batch["gt"].shape == (2, 3, 32, 32)
    assert not torch.equal(batch["lq"], batch["gt"])
    assert len(names(dm, "val")) == 1


def test_sr_paired_alignment_with_augmentation(tmp_path: Path) -> None:
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            write_coords(tmp_path / split / "LQ" / f"{i}.png", 20, 24, 1)
            write_coords(tmp_path / split / "GT" / f"{i}.png", 81, 97, 2)  # odd size: mod-cropped to 80x96
    dm = module(tmp_path, scale=4, crop_size=32, batch_size=4, train_samples_per_epoch=16)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        assert batch["lq"].shape == (4, 3, 8, 8) and batch["gt"].shape == (4, 3, 32, 32)
        assert_aligned(batch["lq"], batch["gt"], scale=4)
    vb = next(iter(dm.val_dataloader()))
    assert vb["gt"].shape == (1, 3, 80, 96)


def test_augmentation_is_identical_and_happens(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a"], 32, 32)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["b"], 32, 32)
    dm = module(tmp_path, crop_size=32, batch_size=16, train_samples_per_epoch=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert_aligned(batch["lq"], batch["gt"])
    corners = {tuple(coords(g)[:2, 0, 0].tolist()) for g in batch["gt"]}
    assert len(corners) >= 3  # whole-image crops start at different corners once rotated/flipped


def test_swap_prob_swaps_lq_and_gt(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a"], 16, 16)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["b"], 16, 16)
    dm = module(tmp_path, swap_prob=1.0, batch_size=2)
    batch = next(iter(dm.train_dataloader()))
    assert (coords(batch["lq"])[:, 2] == 2).all() and (coords(batch["gt"])[:, 2] == 1).all()


def test_small_images_are_padded_not_upscaled(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["tiny"], 5, 7)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"], 5, 7)
    dm = module(tmp_path, crop_size=16, augment=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["gt"].shape == (2, 3, 16, 16)
    c = coords(batch["gt"])
    assert c[:, 0].max() <= 4 and c[:, 1].max() <= 6  # only original pixels, mirrored
    assert_aligned(batch["lq"], batch["gt"])


def test_val_size_centre_crop_and_batching(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a"], 16, 16)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["b", "c"], 40, 60)
    write_coords(tmp_path / "val/LQ/d.png", 30, 30, 1)
    write_coords(tmp_path / "val/GT/d.png", 30, 30, 2)
    dm = module(tmp_path, val_size=24, val_batch_size=2, max_val_images=2)
    dm.setup("fit")
    vb = next(iter(dm.val_dataloader()))
    assert vb["gt"].shape == (2, 3, 24, 24) and vb["name"] == ["b", "c"]
    assert coords(vb["gt"])[0, 0, 0, 0] == 8 and coords(vb["gt"])[0, 1, 0, 0] == 18  # centred
    dm2 = module(tmp_path, val_batch_size=2)  # different sizes: falls back to batch size 1
    dm2.setup("fit")
    assert next(iter(dm2.val_dataloader()))["gt"].shape[0] == 1


def test_predict_and_test_loaders(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a"], 16, 16)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["b"], 16, 16)
    dm = module(tmp_path)
    dm.setup("predict")
    pb = next(iter(dm.predict_dataloader()))
    assert set(pb) == {"lq", "name"} and (coords(pb["lq"])[:, 2] == 1).all()
    dm.setup("test")
    assert set(next(iter(dm.test_dataloader()))) == {"lq", "gt", "name"}


def test_16bit_and_exif_rotated_files_in_a_dataset(tmp_path: Path) -> None:
    from PIL import Image

    write_coords(tmp_path / "train/GT/r.png", 20, 30, 2)  # 16-bit coordinates (row, column, 2)
    # The LQ is 8-bit coordinates stored sideways with an EXIF "rotate 90 CW" tag: upright it is the 20x30 GT's.
    upright = Image.fromarray(coord_array(20, 30, tag=1).astype("uint8"))
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "train/LQ").mkdir(parents=True)
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "train/LQ/r.png", exif=exif.tobytes())
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"], 16, 16)
    dm = module(tmp_path, crop_size=16)
    dm.setup("fit")
    for batch in dm.train_dataloader():  # random 16x16 crops of the one pair, flipped and rotated alike
        lq_coords, gt_coords = (batch["lq"] * 255).round().long(), coords(batch["gt"])  # 8-bit, 16-bit scales
        assert torch.equal(lq_coords[:, :2], gt_coords[:, :2])  # the same pixels: read upright, aligned
        assert (lq_coords[:, 2] == 1).all() and (gt_coords[:, 2] == 2).all()


# ------------------------------------------------------------------------------------------ errors


def test_missing_root_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.root does not exist.*nowhere"):
        module(tmp_path / "nowhere").setup("fit")
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/inputs_gt", ["a"])
    with pytest.raises(DataError, match=r"GT folder not found: .*train/GT.*holds: LQ, inputs_gt"):
        module(tmp_path).setup("fit")


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "train/LQ").mkdir(parents=True)
    (tmp_path / "train/GT").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no LQ/GT pairs found: LQ folder .*train/LQ"):
        module(tmp_path).setup("fit")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match=r"no images found in .*photos"):
        PairedDataModule(root=str(tmp_path / "photos"), layout="clean", degradation={"name": "jpeg"}).setup(
            "fit"
        )


def test_unpaired_files_listed_with_counts(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a", "b"])
    for i in range(12):
        write_rgb(tmp_path / "train/LQ" / f"extra{i:02d}.png", 8, 8)
    write_rgb(tmp_path / "train/GT/lonely.png", 8, 8)
    with pytest.raises(DataError) as err:
        module(tmp_path).setup("fit")
    msg = str(err.value)
    assert "12 LQ file(s)" in msg and "extra00" in msg and "extra09" in msg and "extra11" not in msg
    assert "(2 more)" in msg and "1 GT file(s)" in msg and "lonely" in msg and "2 pairs matched" in msg


def test_size_mismatch_names_pair_and_sizes(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["ok"])
    write_coords(tmp_path / "train/LQ/bad.png", 40, 50, 1)
    write_coords(tmp_path / "train/GT/bad.png", 40, 52, 2)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"])
    with pytest.raises(
        DataError, match=r"size mismatch for 'bad'.*LQ/bad\.png is 40x50.*GT/bad\.png is 40x52"
    ):
        module(tmp_path).setup("fit")


def test_sr_size_mismatch(tmp_path: Path) -> None:
    write_coords(tmp_path / "train/LQ/a.png", 10, 10, 1)
    write_coords(tmp_path / "train/GT/a.png", 30, 40, 2)
    with pytest.raises(DataError, match=r"scale 4.*10x10.*30x40"):
        module(tmp_path, scale=4).setup("fit")


def test_corrupt_file_named(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a", "b"])
    truncate(tmp_path / "train/GT/b.png")
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"])
    with pytest.raises(DataError, match=r"(?s)1 bad train pair.*skip_bad.*GT/b\.png: corrupt or truncated"):
        module(tmp_path).setup("fit")


def test_skip_bad_logs_and_skips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a", "b", "c"])
    truncate(tmp_path / "train/LQ/b.png")
    (tmp_path / "train/GT/c.png").write_bytes(b"not an image")
    write_rgb(tmp_path / "train/LQ/orphan.png", 8, 8)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"])
    dm = module(tmp_path, skip_bad=True)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert [p.name for p in dm.dataset("train").pairs] == ["a"]
    text = caplog.text
    assert "b.png" in text and "c.png" in text and "orphan" in text and "skipped 2 of 3 train pairs" in text
    assert_aligned(*(next(iter(dm.train_dataloader()))[k] for k in ("lq", "gt")))


def test_skip_bad_at_load_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a", "b"])
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"])
    dm = module(tmp_path, skip_bad=True, train_samples_per_epoch=2)
    dm.setup("fit")
    (tmp_path / "train/GT/a.png").write_bytes(b"broken after the check")
    with caplog.at_level(logging.WARNING):
        batch = next(iter(dm.train_dataloader()))
    assert batch["name"] == ["b", "b"] and "a.png" in caplog.text


def test_crop_larger_than_every_image_without_padding(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a", "b"], 20, 30)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"], 20, 30)
    with pytest.raises(
        DataError, match=r"crop_size=64 is larger than every training image \(largest 20x30\)"
    ):
        module(tmp_path, crop_size=64, pad_small=False).setup("fit")


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown data.layout 'ntrie'.*'gopro'"):
        PairedDataModule(layout="ntrie", degradation={"name": "shadow"})
    with pytest.raises(DataError, match=r"layout .paired. needs data\.lq_dir and data\.gt_dir"):
        PairedDataModule(root=str(tmp_path), layout="paired")
    with pytest.raises(DataError, match="need a synthetic degradation"):
        PairedDataModule()
    with pytest.raises(DataError, match=r"scale 4 but data.scale=1"):
        PairedDataModule(degradation={"name": "sr", "scale": 4})
    with pytest.raises(DataError, match=r"crop_size=30 must be a multiple of data.scale=4"):
        PairedDataModule(degradation={"name": "sr"}, scale=4, crop_size=30)
    with pytest.raises(DataError, match=r"data\.channels=2"):
        PairedDataModule(degradation={"name": "jpeg"}, channels=2)
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", ["a"])
    with pytest.raises(DataError, match="stem_pattern"):
        module(tmp_path, stem_pattern="(unclosed").setup("fit")


def test_names_with_side_specific_affixes_pair(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        write_coords(tmp_path / "train/LQ" / f"{i:04d}x2.png", 8, 8, 1)  # DIV2K-style LR names
        write_coords(tmp_path / "train/GT" / f"{i:04d}.png", 16, 16, 2)
        write_coords(tmp_path / "val/LQ" / f"img_{i}_shadow.png", 8, 8, 1)
        write_coords(tmp_path / "val/GT" / f"img_{i}_free.png", 8, 8, 2)
    dm = module(tmp_path, crop_size=8)
    assert names(dm, "val") == ["1", "10", "2"]
    dm_sr = module(tmp_path, scale=2, crop_size=8, val_split="train")
    assert names(dm_sr, "train") == ["0001", "0002", "0010"]


def test_every_training_image_is_used_across_epochs(tmp_path: Path) -> None:
    make_same_size_pairs(tmp_path / "train/LQ", tmp_path / "train/GT", [f"im{i}" for i in range(5)], 16, 16)
    make_same_size_pairs(tmp_path / "val/LQ", tmp_path / "val/GT", ["v"], 16, 16)
    dm = module(tmp_path, train_samples_per_epoch=2, batch_size=2)
    loader = dm.train_dataloader()
    seen = {n for _ in range(5) for b in loader for n in b["name"]}
    assert seen == {f"im{i}" for i in range(5)}
