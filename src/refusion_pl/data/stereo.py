"""Stereo pairs: left/right views found by name, stacked on channels (left, then right) as the stereo network
expects, and the bundled stereo photograph with held-out rows.

Views are matched by a ``_L``/``_R`` (or ``_left``/``_right``) suffix of the file stem, as in Flickr1024 and the
NTIRE 2023 stereo SR data (``HR/0001_L.png``, ``LR_x4/0001_L.png``). A sample names the left view; its partner
is found by swapping the suffix, so crops, flips and the LR/HR pairing apply to both views at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from refusion_pl.data.datasets import Matched, Pair
from refusion_pl.data.io import DataError

#: (left, right) stem suffixes, most specific first.
VIEW_SUFFIXES: tuple[tuple[str, str], ...] = (("_left", "_right"), ("_L", "_R"))
#: The bundled stereo pair (scikit-image's Middlebury motorcycle, 500 x 741) and the rows each split uses:
#: validation and test hold out the bottom fifth (rows keep whole epipolar lines, so both views stay aligned).
BUNDLED_STEREO = ("motorcycle", "motorcycle_left.png")
BUNDLED_STEREO_ROWS = {"train": (0.0, 0.8), "val": (0.8, 1.0), "test": (0.8, 1.0)}


def split_view(stem: str) -> tuple[str, str] | None:
    """``(key, "L" | "R")`` for a view's stem (``0001_L`` -> ``("0001", "L")``), None without a view suffix."""
    for left, right in VIEW_SUFFIXES:
        for suffix, side in ((left, "L"), (right, "R")):
            if stem.endswith(suffix) and len(stem) > len(suffix):
                return stem[: -len(suffix)], side
    return None


def right_view(left: str | Path) -> Path:
    """The right view's path for a left view's path (same folder and extension, suffix swapped)."""
    path = Path(left)
    for left_suffix, right_suffix in VIEW_SUFFIXES:
        if path.stem.endswith(left_suffix):
            return path.with_name(path.stem[: -len(left_suffix)] + right_suffix + path.suffix)
    raise DataError(f"{path} is not a left view: its name must end in _L or _left (stereo data)")


def stereo_matched(found: Matched) -> Matched:
    """Turn view pairs (``0001_L``, ``0001_R``) into stereo samples named ``0001`` that point at the left views.

    A file without a view suffix, or a view whose partner is missing, is an error naming the file.
    """
    sides: dict[str, dict[str, Pair]] = {}
    for pair in found.pairs:
        parsed = split_view(Path(pair.name).name)
        if parsed is None:
            raise DataError(
                f"{pair.gt}: stereo data needs <id>_L / <id>_R file names (or _left / _right); "
                f"{Path(pair.name).name!r} has neither"
            )
        key = (Path(pair.name).parent / parsed[0]).as_posix()  # nested folders keep their prefix
        sides.setdefault(key, {})[parsed[1]] = pair
    pairs = []
    for key in sorted(sides):
        views = sides[key]
        if set(views) != {"L", "R"}:
            present = next(iter(views.values()))
            missing = "right" if "L" in views else "left"
            raise DataError(
                f"{present.gt} has no {missing} view beside it (stereo pairs need both _L and _R)"
            )
        pairs.append(Pair(key, views["L"].gt, views["L"].lq))
    return Matched(
        pairs, _views_to_keys(found.lq_only), _views_to_keys(found.gt_only), found.lq_dir, found.gt_dir
    )


def _views_to_keys(names: list[str]) -> list[str]:
    return sorted(set(names))


def check_stereo_sizes(
    pair: Pair, size: Callable[[str], tuple[int, int]], scale: int
) -> tuple[tuple[int, int] | None, str | None]:
    """(HR size, None) when both views read and agree with each other and with ``scale``; else (None, error)."""
    try:
        gt = (size(pair.gt), size(str(right_view(pair.gt)))) if pair.gt else None
        lq = (size(pair.lq), size(str(right_view(pair.lq)))) if pair.lq else None
    except DataError as err:
        return None, str(err)
    if gt is None:
        return None, f"{pair.name}: no HR views"
    if gt[0] != gt[1]:
        return None, (
            f"stereo views of {pair.name!r} differ in size: {pair.gt} is {gt[0][0]}x{gt[0][1]}, "
            f"{right_view(pair.gt)} is {gt[1][0]}x{gt[1][1]}"
        )
    if lq is not None:
        expect = (gt[0][0] // scale, gt[0][1] // scale)
        for path, got in ((pair.lq, lq[0]), (str(right_view(pair.lq)), lq[1])):  # type: ignore[arg-type]
            if got != expect:
                return None, (
                    f"LR/HR size mismatch for {pair.name!r} (scale {scale}: LR must be HR / {scale}): "
                    f"{path} is {got[0]}x{got[1]}, HR is {gt[0][0]}x{gt[0][1]}"
                )
    return gt[0], None


def bundled_stereo_pairs(split: str) -> list[Pair]:
    """scikit-image's stereo photograph (no download); splits differ by the rows they use."""
    import skimage.data

    name, file = BUNDLED_STEREO
    left = Path(skimage.data.__file__).parent / file
    for path in (left, right_view(left)):
        if not path.is_file():
            raise DataError(f"scikit-image's bundled stereo view is missing ({path}); reinstall scikit-image")
    return [Pair(name, str(left), region=BUNDLED_STEREO_ROWS[split])]
