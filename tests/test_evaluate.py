"""``python -m refusion_pl.evaluate``: paired test sets, identity baseline, tables, metrics cross-checked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from refusion_pl.data.io import read_image, write_image
from refusion_pl.evaluate import build_datamodule, evaluate, sweep_table
from refusion_pl.evaluate import test_pairs as held_out_pairs  # not named test_*: pytest would collect it
from refusion_pl.lit.diffusion import DiffusionModule
from tests.test_restore import TINY_NAFNET

HERE = Path(__file__).parent


def save_trained_like_checkpoint(path: Path, train_cfg) -> Path:
    """Random weights, but the stored config of a real (smoke) training run: task, data, everything."""
    torch.manual_seed(0)
    sde = {"max_sigma": 50, "steps": 8, "schedule": "cosine", "eps": 0.005, "sampler": "sde"}
    module = DiffusionModule(model="pixel", nafnet=TINY_NAFNET, sde=sde)
    config = OmegaConf.to_container(train_cfg, resolve=True, enum_to_str=True)  # as train() stores it
    meta = {"kind": "diffusion", "config": config}
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "refusion_pl": meta},
        path,
    )
    return path


@pytest.fixture
def ckpt(compose_config, tmp_path) -> Path:
    return save_trained_like_checkpoint(
        tmp_path / "model.ckpt", compose_config("model=pixel", "experiment=smoke")
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def skimage_scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """PSNR and SSIM by scikit-image (Gaussian window, sigma 1.5: the Wang et al. definition)."""
    a = pred.clamp(0, 1).permute(1, 2, 0).double().numpy()
    b = target.permute(1, 2, 0).double().numpy()
    psnr = peak_signal_noise_ratio(b, a, data_range=1.0)
    ssim = structural_similarity(
        b, a, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    return psnr, ssim


def test_checkpoint_test_split_by_default_with_identity_baseline(compose_config, ckpt, tmp_path):
    run = tmp_path / "eval"
    cfg = compose_config(
        f"ckpt={ckpt}", "crop=40", "max_images=2", "sample_steps=2", name="evaluate", output_dir=run
    )
    summary = evaluate(cfg)
    assert summary["images"] == 2 and summary["sample_steps"] == 2 and summary["task"] == "shadow"
    rows = read_rows(run / "per_image.csv")
    assert [r["method"] for r in rows] == ["identity", "refusion"] * 2
    pairs = list(
        held_out_pairs(build_datamodule(cfg), 2)
    )  # evaluate filled cfg with the checkpoint's task/data
    for (name, lq, gt, _), identity in zip(pairs, rows[::2], strict=True):
        psnr, ssim = skimage_scores(lq, gt)  # the identity baseline is LQ against GT
        assert identity["name"] == name and float(identity["psnr"]) == pytest.approx(psnr, abs=1e-3)
        assert float(identity["ssim"]) == pytest.approx(ssim, abs=5e-3)
    assert all(float(r["seconds"]) > 0 for r in rows if r["method"] == "refusion")
    stored = json.loads((run / "summary.json").read_text())
    assert stored["identity"]["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows[::2]]))
    table = (run / "results.md").read_text()
    assert "identity (LQ vs GT)" in table and "| refusion | sde | 2 |" in table


def test_lpips_column_with_a_stand_in_backbone(compose_config, ckpt, stand_in_lpips, tmp_path):
    """With LPIPS available, each row, the summary and the table carry it (a stand-in network: no download)."""
    run = tmp_path / "eval"
    cfg = compose_config(
        f"ckpt={ckpt}", "crop=40", "max_images=2", "sample_steps=2", "save_images=true",
        name="evaluate", output_dir=run,
    )  # fmt: skip
    summary = evaluate(cfg)
    assert summary["lpips"] == "LPIPS enabled (stand-in backbone)"
    rows = read_rows(run / "per_image.csv")
    pairs = list(held_out_pairs(build_datamodule(cfg), 2))
    for (name, lq, gt, _), identity, refusion in zip(pairs, rows[::2], rows[1::2], strict=True):
        assert float(identity["lpips"]) == pytest.approx(stand_in_lpips(lq[None], gt[None]).item(), rel=1e-5)
        restored = read_image(run / "images" / f"{Path(name).stem}.png")[0]  # 8-bit: a small tolerance
        assert float(refusion["lpips"]) == pytest.approx(
            stand_in_lpips(restored[None], gt[None]).item(), abs=2e-3
        )
    mean = np.mean([float(r["lpips"]) for r in rows[1::2]])
    assert summary["refusion"]["lpips"] == pytest.approx(mean)
    header, _, *lines = [line.split("|") for line in summary["table"].splitlines() if line.startswith("|")]
    column = [cell.strip() for cell in header].index("LPIPS")
    assert [line[column].strip() for line in lines][-1] == f"{mean:.4f}"


def test_metrics_agree_with_scikit_image_on_real_photos(compose_config, ckpt, tmp_path):
    """A paired folder of real photos (scikit-image's) with a real degradation, given as data=paired."""
    from skimage import data as photos

    root = tmp_path / "pairs"
    generator = torch.Generator().manual_seed(0)
    for name in ("astronaut", "coffee"):
        gt = torch.from_numpy(getattr(photos, name)()).permute(2, 0, 1).float()[:, :61, :83] / 255
        lq = (gt + 0.08 * torch.randn(gt.shape, generator=generator)).clamp(0, 1)
        write_image(root / "GT" / f"{name}.png", gt)
        write_image(root / "LQ" / f"{name}.png", lq)
    run = tmp_path / "eval"
    splits = ["data.train_split=.", "data.val_split=.", "data.test_split=."]  # every pair is a test pair
    overrides = ["data=paired", f"data.root={root}", "data.lq_dir=LQ", "data.gt_dir=GT", *splits]
    cfg = compose_config(
        f"ckpt={ckpt}",
        "task=denoise",
        *overrides,
        "sample_steps=1",
        "save_images=true",
        name="evaluate",
        output_dir=run,
    )
    evaluate(cfg)
    rows = {(r["name"], r["method"]): r for r in read_rows(run / "per_image.csv")}
    names = sorted({name for name, _ in rows})
    assert len(names) == 2
    for name in names:
        stem = Path(name).stem
        gt, lq = read_image(root / "GT" / f"{stem}.png")[0], read_image(root / "LQ" / f"{stem}.png")[0]
        restored = read_image(run / "images" / f"{stem}.png")[0]
        for method, pred, tol in (("identity", lq, 1e-3), ("refusion", restored, 0.05)):
            psnr, ssim = skimage_scores(pred, gt)
            assert float(rows[(name, method)]["psnr"]) == pytest.approx(psnr, abs=tol * 10)
            assert float(rows[(name, method)]["ssim"]) == pytest.approx(ssim, abs=tol)
    assert 15 < float(rows[(names[0], "identity")]["psnr"]) < 30  # the degradation is real, not a no-op


def test_multirun_steps_table(compose_config, ckpt, tmp_path):
    sweep = tmp_path / "sweep"
    for job, (steps, spacing) in enumerate([(8, "ou"), (2, "ou"), (2, "logsnr")]):
        cfg = compose_config(
            f"ckpt={ckpt}", "crop=32", "max_images=1", f"sample_steps={steps}", "sampler=ode",
            f"spacing={spacing}", name="evaluate", output_dir=sweep / str(job),
        )  # fmt: skip
        summary = evaluate(cfg)
        assert summary["spacing"] == spacing
    table = sweep_table(sweep)
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[3].strip() for line in lines] == ["-", "2", "2", "8"]
    assert [line.split("|")[2].strip() for line in lines] == ["-", "ode (logsnr)", "ode", "ode"]
    assert (sweep / "steps_table.md").read_text() == table
    assert [row["spacing"] for row in read_rows(sweep / "steps_table.csv")] == ["", "logsnr", "ou", "ou"]
