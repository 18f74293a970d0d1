"""PairedDataModule: paired degraded/clean crops for both Refusion stages, from disk or the bundled photos.

Built by ``hydra.utils.instantiate(cfg.data)``; every argument is a plain value. Bad data fails in
:meth:`PairedDataModule.setup` with one :class:`~refusion_pl.data.DataError` naming the culprit, before training.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from refusion_pl.data.bokeh import (
    BUNDLED_DEPTH,
    META_NAME,
    BokehRenderer,
    bokeh_matched,
    bokeh_orphan_message,
)
from refusion_pl.data.datasets import (
    EpochSampler,
    EvalDataset,
    Matched,
    Pair,
    TrainDataset,
    bundled_pairs,
    clean_images,
    holdout,
    orphan_message,
    pair_folders,
    pair_gopro,
    pair_rain100,
)
from refusion_pl.data.degradations import Degradation, build_degradation
from refusion_pl.data.io import IMAGE_EXTENSIONS, DataError, read_image, verify_image
from refusion_pl.data.stereo import bundled_stereo_pairs, check_stereo_sizes, stereo_matched

log = logging.getLogger(__name__)

#: Crops per training epoch on the bundled photos (few images: an epoch is a number of random crops).
BUNDLED_SAMPLES_PER_EPOCH = 400
CHECK_MODES = ("fast", "full", "off")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Layout:
    """Default split folders (train, val, test) and LQ/GT folder names inside a split (``{split}`` = its name)."""

    splits: tuple[str, str, str]
    lq: str | None
    gt: str | None


LAYOUTS: dict[str, Layout] = {
    "ntire": Layout(("train", "val", "val"), "LQ", "GT"),
    "istd": Layout(("train", "test", "test"), "{split}_A", "{split}_C"),
    "rain100": Layout(("train", "test", "test"), None, None),
    "gopro": Layout(("train", "test", "test"), "blur", "sharp"),
    "paired": Layout(("train", "val", "val"), None, None),
    "clean": Layout(("train", "val", "val"), None, ""),
    # Stereo SR (Flickr1024 / NTIRE 2023): <id>_L / <id>_R views in HR/ and LR_x<scale>/.
    "stereo": Layout(("train", "val", "val"), "LR_x{scale}", "HR"),
    # Bokeh transformation (NTIRE 2023): src/, tgt/, alpha/ (not used) and meta.txt with the lens settings.
    "bokeh": Layout(("train", "val", "val"), "src", "tgt"),
}
#: Layouts whose samples stack two views on channels.
STEREO_LAYOUTS = ("stereo",)


class PairedDataModule(L.LightningDataModule):
    """Paired LQ/GT data. ``root=None`` uses scikit-image's bundled photos with the task's degradation.

    Batches are ``{"lq": [B,C,h,w], "gt": [B,C,H,W], "name": list[str]}`` (``h = H / scale``); predict batches
    carry ``lq`` and ``name`` only.
    """

    def __init__(
        self,
        root: str | None = None,
        layout: str = "ntire",
        lq_dir: str | None = None,
        gt_dir: str | None = None,
        stem_pattern: str | None = None,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        val_holdout: float = 0.1,
        degradation: Mapping[str, Any] | None = None,
        channels: int = 3,
        scale: int = 1,
        crop_size: int = 128,
        batch_size: int = 4,
        val_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        augment: bool = True,
        swap_prob: float = 0.0,
        mild_prob: float = 0.0,
        clean_prob: float = 0.0,
        mild_severity: Sequence[float] = (0.0, 1.0),
        dark_prob: float = 0.0,
        dark_gain: Sequence[float] = (0.15, 0.6),
        dark_gamma: Sequence[float] = (1.0, 1.0),
        recolour_prob: float = 0.0,
        dark_object_prob: float = 0.0,
        degrade_window: int | None = None,
        photo_stats: bool | str = False,
        pad_small: bool = True,
        upsample_lq: bool = False,
        skip_bad: bool = False,
        check_images: str = "fast",
        cache_images: bool | None = None,
        seed: int = 0,
        val_seed: int = 0,
        train_samples_per_epoch: int | None = None,
        val_size: int | None = None,
        max_val_images: int | None = None,
    ) -> None:
        super().__init__()
        deg_cfg = _plain_mapping(degradation)
        self.save_hyperparameters(ignore=["degradation"])
        self.hparams["degradation"] = deg_cfg
        self.root, self.layout, self.stem_pattern = root, layout, stem_pattern
        self.lq_dir, self.gt_dir, self.val_holdout = lq_dir, gt_dir, val_holdout
        self.split_names = self._split_names(train_split, val_split, test_split)
        self.channels, self.scale, self.crop_size = channels, scale, crop_size
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.augment, self.swap_prob, self.pad_small, self.upsample_lq = (
            augment,
            swap_prob,
            pad_small,
            upsample_lq,
        )
        self.mild_prob, self.dark_prob, self.dark_gain = (
            mild_prob,
            dark_prob,
            _numbers("dark_gain", dark_gain),
        )
        self.dark_gamma = _numbers("dark_gamma", dark_gamma)
        self.mild_severity = _numbers("mild_severity", mild_severity)
        for key in ("dark_gain", "dark_gamma", "mild_severity"):
            self.hparams[key] = list(getattr(self, key))  # plain floats: checkpoints load weights-only
        self.degrade_window, self.recolour_prob, self.photo_stats = degrade_window, recolour_prob, photo_stats
        self.dark_object_prob, self.clean_prob = dark_object_prob, clean_prob
        self.skip_bad, self.check_images, self.seed, self.val_seed = skip_bad, check_images, seed, val_seed
        self.train_samples_per_epoch, self.val_size, self.max_val_images = (
            train_samples_per_epoch,
            val_size,
            max_val_images,
        )
        # Bokeh data renders its synthetic pairs (source and target) instead of degrading a GT.
        self.renderer: BokehRenderer | None = None
        self.degradation: Degradation | None = None
        if deg_cfg and layout == "bokeh":
            self.renderer = BokehRenderer(**deg_cfg)
        elif deg_cfg:
            self.degradation = build_degradation(deg_cfg)
        self.views = 2 if layout in STEREO_LAYOUTS else 1
        self._validate_args()
        self.cache_images = self.bundled if cache_images is None else cache_images
        self._datasets: dict[str, Dataset] = {}
        self._found: dict[str, Matched | list[Pair]] = {}
        self._eval_batch: dict[str, int] = {}

    # -------------------------------------------------------------------------------------- settings

    @property
    def bundled(self) -> bool:
        """True when no data root is set: scikit-image's photos with the task's synthetic degradation."""
        return self.root is None and not (self.layout == "paired" and self.lq_dir and self.gt_dir)

    @property
    def synthetic(self) -> bool:
        return self.bundled or self.layout == "clean"

    def _split_names(self, train: str | None, val: str | None, test: str | None) -> tuple[str, str, str]:
        if self.layout not in LAYOUTS:
            raise DataError(f"unknown data.layout {self.layout!r}; allowed: {sorted(LAYOUTS)}")
        defaults = LAYOUTS[self.layout].splits
        return (train or defaults[0], val or defaults[1], test or defaults[2])

    def _validate_args(self) -> None:
        _check_int("channels", self.channels, choices=(1, 3))
        _check_int("scale", self.scale, low=1)
        _check_int("crop_size", self.crop_size, low=1)
        _check_int("batch_size", self.batch_size, low=1)
        _check_int("val_batch_size", self.val_batch_size, low=1)
        _check_int("num_workers", self.num_workers, low=0)
        for key in ("train_samples_per_epoch", "val_size", "max_val_images", "degrade_window"):
            if getattr(self, key) is not None:
                _check_int(key, getattr(self, key), low=1)
        if self.crop_size % self.scale:
            raise DataError(f"data.crop_size={self.crop_size} must be a multiple of data.scale={self.scale}")
        if self.degrade_window is not None and self.degrade_window < self.crop_size:
            raise DataError(
                f"data.degrade_window={self.degrade_window} must be >= data.crop_size={self.crop_size} "
                "(or null: degrade the crop itself)"
            )
        if not 0.0 <= self.dark_prob <= 1.0:
            raise DataError(f"data.dark_prob={self.dark_prob} must be in [0, 1]")
        for key, zero_allowed, top in (
            ("dark_gain", False, 1),
            ("dark_gamma", False, 10),
            ("mild_severity", True, 1),
        ):
            bounds = getattr(self, key)
            low_ok = len(bounds) == 2 and (bounds[0] >= 0 if zero_allowed else bounds[0] > 0)
            if not low_ok or not bounds[0] <= bounds[1] <= top:
                relation = "0 <= low" if zero_allowed else "0 < low"
                raise DataError(
                    f"data.{key}={list(bounds)} must be [low, high] with {relation} <= high <= {top}"
                )
        for key in ("recolour_prob", "dark_object_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise DataError(f"data.{key}={getattr(self, key)} must be in [0, 1]")
        for key in ("swap_prob", "mild_prob", "clean_prob"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"data.{key}={value} must be in [0, 1]")
            if value > 0 and self.scale > 1 and not self.upsample_lq:
                raise DataError(
                    f"data.{key} > 0 needs LQ and GT of the same size (scale 1 or data.upsample_lq)"
                )
        if self.clean_prob and self.layout == "bokeh":
            raise DataError(
                f"data.clean_prob={self.clean_prob}: a bokeh pair's lens scalars ask for a lens change, which an "
                "undegraded pair does not show; use 0 with bokeh data"
            )
        if self.dark_object_prob and self.views == 2:
            raise DataError(
                f"data.dark_object_prob={self.dark_object_prob}: dark objects are painted at one place in each "
                "view, which no stereo pair shows; use 0 with stereo data"
            )
        if self.check_images not in CHECK_MODES:
            raise DataError(f"data.check_images={self.check_images!r}; allowed: {list(CHECK_MODES)}")
        if not self.val_holdout > 0:
            raise DataError(
                f"data.val_holdout={self.val_holdout} must be > 0 (a fraction or a count of images)"
            )
        if self.synthetic and self.degradation is None and self.renderer is None:
            what = "the bundled photos (data.root=null)" if self.bundled else "layout 'clean'"
            raise DataError(f"{what} need a synthetic degradation: set task.degradation / data.degradation")
        if self.degradation is not None and self.degradation.scale != self.scale:
            raise DataError(
                f"degradation {self.degradation.name} has scale {self.degradation.scale} but data.scale={self.scale}"
            )
        if self.layout == "paired" and not self.bundled and not (self.lq_dir and self.gt_dir):
            raise DataError("layout 'paired' needs data.lq_dir and data.gt_dir")

    # -------------------------------------------------------------------------------------- discovery

    def _split_dirs(self) -> dict[str, Path | None]:
        """Split folders under root; a missing train split means root itself holds the (only) data."""
        root = Path(self.root).expanduser() if self.root is not None else Path.cwd()
        if not root.is_dir():
            raise DataError(f"data.root does not exist or is not a folder: {root}")
        train, val, test = (root / name for name in self.split_names)
        split_mode = train.is_dir() and (self.layout != "paired" or (train / str(self.lq_dir)).is_dir())
        if not split_mode:
            return {"train": root, "val": None, "test": None}
        val_dir = val if val.is_dir() else None
        return {"train": train, "val": val_dir, "test": test if test.is_dir() else val_dir}

    def _find(self, folder: Path) -> Matched | list[Pair]:
        key = str(folder)
        if key in self._found:
            return self._found[key]
        spec = LAYOUTS[self.layout]
        names = {"split": folder.name, "scale": self.scale}
        lq_name = (self.lq_dir or spec.lq or "").format(**names)
        gt_name = (self.gt_dir if self.gt_dir is not None else spec.gt or "").format(**names)
        if self.layout == "clean":
            found: Matched | list[Pair] = clean_images(folder / gt_name)
        elif self.layout == "rain100":
            found = pair_rain100(folder, self.stem_pattern)
        elif self.layout == "gopro":
            found = pair_gopro(folder, lq_name, gt_name, self.stem_pattern)
        elif self._hr_only_stereo(folder / lq_name, folder / gt_name):
            hr = folder / gt_name
            found = Matched(clean_images(hr), [], [], str(hr), str(hr))
        else:
            found = pair_folders(folder / lq_name, folder / gt_name, self.stem_pattern)
        if self.layout == "stereo":
            found = stereo_matched(found)  # type: ignore[arg-type]
        elif self.layout == "bokeh":
            found = bokeh_matched(found, folder / META_NAME)  # type: ignore[arg-type]
        self._found[key] = found
        return found

    def _hr_only_stereo(self, lr: Path, hr: Path) -> bool:
        """Stereo data with HR views only (Flickr1024 as published): LR views come from task.degradation."""
        if self.layout != "stereo" or lr.is_dir() or not hr.is_dir() or self.degradation is None:
            return False
        log.info(
            "no %s folder beside %s: LR views made from the HR views by %s", lr.name, hr, self.degradation
        )
        return True

    def _pairs_in(self, folder: Path) -> list[Pair]:
        found = self._find(folder)
        if isinstance(found, list):
            if not found:
                raise DataError(f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
            return found
        if found.lq_only or found.gt_only:
            message = bokeh_orphan_message(found) if self.layout == "bokeh" else orphan_message(found)
            if not self.skip_bad:
                raise DataError(message)
            log.warning("skip_bad: ignoring unpaired files: %s", message)
        if not found.pairs:
            raise DataError(f"no LQ/GT pairs found: LQ folder {found.lq_dir}, GT folder {found.gt_dir}")
        return found.pairs

    def pairs(self, split: str) -> list[Pair]:
        """The (unchecked) pairs of ``train``, ``val`` or ``test``; whole images only."""
        if self.bundled:
            return self._bundled_pairs(split)
        dirs = self._split_dirs()
        if dirs["val"] is not None:
            return self._pairs_in(dirs[split])  # type: ignore[arg-type]
        train, held = holdout(self._pairs_in(dirs["train"]), self.val_holdout)  # type: ignore[arg-type]
        return train if split == "train" else held

    def _bundled_pairs(self, split: str) -> list[Pair]:
        """The bundled stereo photograph for stereo data; the bundled photos (with depth maps) otherwise."""
        if self.layout in STEREO_LAYOUTS:
            return bundled_stereo_pairs(split)
        pairs = bundled_pairs(split)
        if self.layout == "bokeh":
            folder = Path(pairs[0].gt).parent  # type: ignore[arg-type]
            pairs = [
                Pair(
                    p.name,
                    p.gt,
                    depth=str(folder / BUNDLED_DEPTH[p.name]) if p.name in BUNDLED_DEPTH else None,
                )
                for p in pairs
            ]
        return pairs

    # -------------------------------------------------------------------------------------- checks

    def _checked(self, split: str) -> tuple[list[Pair], list[tuple[int, int]]]:
        """Pairs whose files read and whose sizes agree, with GT sizes; bad ones fail (or skip with skip_bad)."""
        pairs = self.pairs(split)
        if split != "train" and self.max_val_images:
            pairs = pairs[: self.max_val_images]
        if self.bundled or self.check_images == "off":
            return pairs, []
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(self._check_pair, pairs))
        good = [(p, size) for p, (size, err) in zip(pairs, results) if err is None]
        bad = [(p, err) for p, (_, err) in zip(pairs, results) if err is not None]
        if bad:
            self._report_bad(split, bad, len(pairs))
        if not good:
            raise DataError(f"no readable {split} pairs left after skipping {len(bad)} bad one(s)")
        return [p for p, _ in good], [s for _, s in good]  # type: ignore[misc]

    def _check_pair(self, pair: Pair) -> tuple[tuple[int, int] | None, str | None]:
        if self.views == 2:
            return check_stereo_sizes(pair, self._size, self.scale)
        try:
            gt = self._size(pair.gt) if pair.gt else None
            lq = self._size(pair.lq) if pair.lq else None
        except DataError as exc:
            return None, str(exc)
        if gt is None:
            return None, f"{pair.name}: no GT image"
        if lq is not None:
            expect = (gt[0] // self.scale, gt[1] // self.scale)
            if lq != expect:
                how = (
                    "same-size task"
                    if self.scale == 1
                    else f"scale {self.scale}: LQ must be GT / {self.scale}"
                )
                return None, (
                    f"LQ/GT size mismatch for {pair.name!r} ({how}): LQ {pair.lq} is {lq[0]}x{lq[1]}, "
                    f"GT {pair.gt} is {gt[0]}x{gt[1]}"
                )
        return gt, None

    def _size(self, path: str) -> tuple[int, int]:
        if self.check_images == "full":
            img, _ = read_image(path, self.channels)
            return img.shape[-2], img.shape[-1]
        return verify_image(path)

    def _report_bad(self, split: str, bad: list[tuple[Pair, str]], total: int) -> None:
        if not self.skip_bad:
            lines = [err for _, err in bad[:10]]
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            head = f"{len(bad)} bad {split} pair(s) of {total} (set data.skip_bad=true to skip them):\n  "
            raise DataError(head + "\n  ".join(lines) + more)
        for pair, err in bad:
            log.warning("skip_bad: skipping %s pair %s: %s", split, pair.name, err)
        log.warning("skip_bad: skipped %d of %d %s pairs", len(bad), total, split)

    def _fit_crop(self, pairs: list[Pair], sizes: list[tuple[int, int]]) -> list[Pair]:
        """Without padding, drop images smaller than the crop; fail when none is large enough."""
        if self.pad_small or not sizes:
            return pairs
        big = [p for p, (h, w) in zip(pairs, sizes) if min(h, w) >= self.crop_size]
        if not big:
            largest = max(sizes, key=lambda s: min(s))
            raise DataError(
                f"data.crop_size={self.crop_size} is larger than every training image (largest "
                f"{largest[0]}x{largest[1]}) and data.pad_small is false: lower crop_size or enable pad_small"
            )
        if len(big) < len(pairs):
            log.warning(
                "dropping %d training image(s) smaller than crop_size %d",
                len(pairs) - len(big),
                self.crop_size,
            )
        return big

    # -------------------------------------------------------------------------------------- datasets

    def setup(self, stage: str | None = None) -> None:
        """Find, pair and check the data of ``stage`` (fit, validate, test, predict); DataError when bad."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if split not in self._datasets:
                self._datasets[split] = self._build(split)

    def _build(self, split: str) -> Dataset:
        pairs, sizes = self._checked("test" if split == "predict" else split)
        common = {"channels": self.channels, "scale": self.scale, "degradation": self.degradation}
        common |= {"upsample_lq": self.upsample_lq, "skip_bad": self.skip_bad, "cache": self.cache_images}
        common |= {"views": self.views, "renderer": self.renderer}
        if split == "train":
            pairs = self._fit_crop(pairs, sizes)
            length = self.train_samples_per_epoch or (
                BUNDLED_SAMPLES_PER_EPOCH if self.bundled else len(pairs)
            )
            log.info("train: %d images, %d crops per epoch", len(pairs), max(length, self.batch_size))
            return TrainDataset(
                pairs,
                length=max(length, self.batch_size),
                crop_size=self.crop_size,
                augment=self.augment,
                swap_prob=self.swap_prob,
                mild_prob=self.mild_prob,
                clean_prob=self.clean_prob,
                mild_severity=self.mild_severity,
                dark_prob=self.dark_prob,
                dark_gain=self.dark_gain,
                dark_gamma=self.dark_gamma,
                recolour_prob=self.recolour_prob,
                dark_object_prob=self.dark_object_prob,
                degrade_window=self.degrade_window,
                photo_stats=self.photo_stats,
                pad_small=self.pad_small,
                seed=self.seed,
                **common,
            )
        self._eval_batch[split] = self._eval_batch_size(split, sizes)
        if split == "predict":
            pairs = [Pair(p.name, None, p.lq) if p.lq else p for p in pairs]
        log.info("%s: %d images", split, len(pairs))
        return EvalDataset(
            pairs, crop=self.val_size, lq_only=split == "predict", seed=self.val_seed, **common
        )

    def _eval_batch_size(self, split: str, sizes: list[tuple[int, int]]) -> int:
        """Batch whole images only when they all have one size (after the optional centre crop)."""
        if self.val_batch_size == 1:
            return 1
        if self.bundled:
            sizes = [tuple(read_image(p.gt, 1)[0].shape[-2:]) for p in self.pairs(split)]  # type: ignore[misc]
        if self.val_size:
            sizes = [(min(h, self.val_size), min(w, self.val_size)) for h, w in sizes]
        if sizes and len(set(sizes)) == 1:
            return self.val_batch_size
        log.warning("%s images differ in size: using batch size 1 (set data.val_size to crop them)", split)
        return 1

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``train``/``val``/``test``/``predict`` (set up on demand)."""
        if split not in self._datasets:
            self._datasets[split] = self._build(split)
        return self._datasets[split]

    # -------------------------------------------------------------------------------------- loaders

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        """A loader that draws its worker seeds from its own generator, never from the global one: building
        or iterating it (training or validation) does not shift the random numbers training draws."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled crops; a resumed run continues the interrupted epoch where it stopped."""
        ds = self.dataset("train")
        sampler = EpochSampler(len(ds), seed=self.seed, shuffle=True)  # type: ignore[arg-type]
        epoch, batches = self._resume_position()
        if batches:
            sampler.resume_at(epoch, batches * self.batch_size)
            log.info("resuming epoch %d after its first %d batches", epoch, batches)
            # Lightning cannot see that this sampler continues the epoch, and says the loader is not resumable.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        return self._loader(ds, self.batch_size, sampler=sampler, drop_last=True)

    def _resume_position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained) of a resumed fit; (0, 0) for a fresh one.

        Read from the trainer's restored loop progress. Under several processes each rank's share comes from
        a distributed wrapper, so the interrupted epoch restarts from its beginning (Lightning warns).
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size > 1:
            return 0, 0
        return trainer.current_epoch, int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self._eval_batch.get("val", 1), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self._eval_batch.get("test", 1), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("predict"), self._eval_batch.get("predict", 1), shuffle=False)


def _numbers(key: str, values: Any) -> tuple[float, ...]:
    """A list setting as plain floats (not an omegaconf ListConfig), or a DataError naming ``data.key``."""
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise DataError(f"data.{key}={values!r} must be a list of numbers") from None


def _plain_mapping(cfg: Any) -> dict[str, Any] | None:
    if cfg is None:
        return None
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(cfg, Mapping):
        raise DataError(f"data.degradation must be a mapping like {{name: shadow, ...}}, got {cfg!r}")
    return dict(cfg)


def _check_int(key: str, value: Any, low: int | None = None, choices: tuple[int, ...] = ()) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"data.{key} must be an integer, got {value!r}")
    if choices and value not in choices:
        raise DataError(f"data.{key}={value}; allowed: {list(choices)}")
    if low is not None and value < low:
        raise DataError(f"data.{key}={value} must be >= {low}")


__all__ = ["LAYOUTS", "Layout", "PairedDataModule"]
