"""What a run's training pairs teach about brightening: target over input brightness, by input brightness.

A model trained on pairs learns roughly the mean target for each kind of input. For exposure that is visible in
the pairs themselves: if crops whose LQ mean is near a photo's mean had targets twice as bright, the model will
brighten that photo about twice, whatever the photo needs. This draws training pairs exactly as the run's data
module does (``experiment``, ``task`` and ``data.*`` overrides, composed as `python -m refusion_pl.train` would)
and reports, per band of LQ mean brightness, the share of pairs and the median of GT mean over LQ mean.

    .venv/bin/python benchmarks/training_exposure.py experiment=demo task=lowlight
    .venv/bin/python benchmarks/training_exposure.py experiment=demo task=lowlight 'data.mild_severity=[0,1]'

``--by photo`` bands the pairs by their whole photo's LQ mean instead (runs with ``net.nafnet.photo_stats=true``,
whose networks are told it): how much brightening a photo's own darkness calls for.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from refusion_pl.config import CONFIG_DIR, register_schemas
from refusion_pl.models.nafnet import photo_stats_kind

BANDS = (
    (0.0, 0.03),
    (0.03, 0.07),
    (0.07, 0.12),
    (0.12, 0.17),
    (0.17, 0.22),
    (0.22, 0.3),
    (0.3, 0.5),
    (0.5, 1.0),
)


def training_means(
    overrides: Sequence[str], pairs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean brightness of the LQ and of the GT of the first ``pairs`` training pairs of the composed run, and
    of their whole photos' LQ (None unless the run computes photo means, ``net.nafnet.photo_stats``)."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    data = instantiate(cfg.data, _convert_="object")
    data.setup("fit")
    dataset = data.dataset("train")
    samples = [dataset[i] for i in range(min(pairs, len(dataset)))]
    # the channel means lead the photo statistics (photo_statistics) of these kinds; peaks follow them
    means = photo_stats_kind(cfg.net.nafnet.photo_stats) in ("means", "means_and_peaks")
    photo = [s["cond_scalars"][: s["lq"].shape[0]].mean() for s in samples if "cond_scalars" in s and means]
    return (
        torch.stack([s["lq"].mean() for s in samples]),
        torch.stack([s["gt"].mean() for s in samples]),
        torch.stack(photo) if photo else None,
    )


def exposure_table(
    lq: torch.Tensor, gt: torch.Tensor, by: torch.Tensor | None = None
) -> list[dict[str, float]]:
    """Per band of LQ mean (or of ``by``, e.g. the whole photo's LQ mean): the share of pairs in it and the
    median GT/LQ brightness ratio of the pairs (nan when empty)."""
    by = lq if by is None else by
    rows = []
    for low, high in BANDS:
        inside = (by >= low) & (by < high)
        ratio = (
            (gt[inside] / lq[inside].clamp_min(1e-6)).median() if inside.any() else torch.tensor(float("nan"))
        )
        rows.append({"low": low, "high": high, "share": float(inside.float().mean()), "ratio": float(ratio)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m refusion_pl.train")
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs to draw (3000)")
    parser.add_argument(
        "--by",
        choices=("crop", "photo"),
        default="crop",
        help="band by the crop's LQ mean "
        "(default) or by its whole photo's (needs net.nafnet.photo_stats=true)",
    )
    args = parser.parse_args()
    lq, gt, photo = training_means(args.overrides, args.pairs)
    if args.by == "photo" and photo is None:
        parser.error("--by photo needs a run that computes photo means: add net.nafnet.photo_stats=true")
    print(f"{len(lq)} training pairs of: {' '.join(args.overrides) or '(defaults)'}")
    print(
        f"| {'photo' if args.by == 'photo' else 'crop'} LQ mean | share of pairs | median GT/LQ brightness |"
    )
    print("|---|---|---|")
    for row in exposure_table(lq, gt, photo if args.by == "photo" else None):
        print(f"| {row['low']:.2f}-{row['high']:.2f} | {row['share']:.3f} | {row['ratio']:.2f} |")


if __name__ == "__main__":
    main()
