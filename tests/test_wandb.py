"""W&B offline: two jobs of one sweep logged, then read back from the offline run files (the ``.wandb``
transaction log and the media files), asserting what was logged, not only that a folder exists."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from refusion_pl.train import train

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

FAST = [
    "model=pixel",
    "experiment=smoke",
    "logger=wandb",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.crop_size=16",
    "figure.enabled=false",
    "callbacks.progress_bar=null",
]
BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) framed chunks


def read_records(path: Path) -> Iterator[pb.Record]:
    """Every protobuf Record of an offline run file, reassembled from its chunks."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, buffer = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buffer = chunk if kind in (1, 2) else buffer + chunk  # FULL/FIRST start, MIDDLE/LAST continue
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buffer)
            yield record


def nest(items: Iterable[pb.HistoryItem]) -> dict:
    """One history row: media and tables arrive as one item per field (nested_key = [name, field])."""
    row: dict = {}
    for item in items:
        *parents, leaf = list(item.nested_key) or [item.key]
        node = row
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = json.loads(item.value_json)
    return row


def read_run(run_dir: Path) -> dict:
    """Run metadata, config and the history rows of one offline run."""
    run, config, history = None, {}, []
    for record in read_records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            history.append(nest(record.history.item))
    return {"run": run, "config": config, "history": history}


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    yield
    wandb.finish()


def test_sweep_jobs_share_a_group_and_log_config_metrics_images_table(
    compose_config, tmp_path, offline_wandb
):
    sweep = tmp_path / "sweep-2026"
    runs, finals = [], []
    for num, sigma in enumerate((10, 30)):
        job = sweep / str(num)
        cfg = compose_config(
            *FAST, f"sde.max_sigma={sigma}", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep}", output_dir=job
        )
        finals.append(train(cfg))
        (run_dir,) = (job / "diffusion" / "wandb").glob("offline-run-*")
        runs.append((run_dir, read_run(run_dir)))

    assert runs[0][1]["run"].run_id != runs[1][1]["run"].run_id  # one W&B run per job, not a reused one
    for (run_dir, logged), sigma, final in zip(runs, (10, 30), finals, strict=True):
        run = logged["run"]
        assert run.run_group == "sweep-2026" and run.job_type == "diffusion"  # grouped by sweep in the UI
        assert f"sde.max_sigma={sigma}" in run.tags and "logger=wandb" in run.tags
        assert logged["config"]["sde"]["max_sigma"] == sigma  # the composed config ...
        assert logged["config"]["optim"]["name"] == "lion"
        assert logged["config"]["nafnet"]["width"] == 8  # ... and the module's hyper-parameters
        rows = logged["history"]
        losses = [r["train/loss"] for r in rows if "train/loss" in r]
        assert losses and all(v > 0 for v in losses)
        (psnr,) = [r["val/psnr"] for r in rows if "val/psnr" in r]
        assert psnr == pytest.approx(final["val/psnr"])

        (panels,) = [r["val/panels"] for r in rows if "val/panels" in r]  # LQ | restored | GT
        assert panels["_type"] == "images/separated" and panels["count"] == 1
        assert panels["width"] == 3 * panels["height"]
        (png,) = (run_dir / "files" / "media" / "images" / "val").glob("panels_*.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with png.open("rb") as handle:
            width, height = struct.unpack(">II", handle.read(24)[16:24])
        assert (width, height) == (panels["width"], panels["height"])

        (table_ref,) = [r["diffusion/final_metrics"] for r in rows if "diffusion/final_metrics" in r]
        table = json.loads((run_dir / "files" / table_ref["path"]).read_text())
        assert table["columns"] == ["metric", "value"]
        assert dict(table["data"])["val/psnr"] == pytest.approx(final["val/psnr"])


def test_wandb_save_dir_and_job_type_are_honoured(compose_config, tmp_path, offline_wandb):
    """``logger.wandb.save_dir`` moves the run files (per stage) and ``job_type`` reaches the run (null: the stage)."""
    elsewhere = tmp_path / "wandb-runs"
    cfg = compose_config(
        *FAST,
        f"logger.wandb.save_dir={elsewhere}",
        "logger.wandb.job_type=ablation",
        output_dir=tmp_path / "run",
    )
    train(cfg)
    (run_dir,) = (elsewhere / "diffusion" / "wandb").glob("offline-run-*")
    assert read_run(run_dir)["run"].job_type == "ablation"
    assert not (tmp_path / "run" / "diffusion" / "wandb").exists()
