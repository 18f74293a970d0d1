"""Reliability of training: every fault is injected for real (SIGKILL, SIGTERM, a killed checkpoint write, NaN
batches, a collapsing metric, another run's checkpoint, a full disk) and the run must lose nothing it had saved.

One tiny pixel run (4 batches per epoch, 10 steps, last.ckpt every 2 steps) is the reference; interrupted
copies of it must end bit-identical to it after resuming.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.config import CONFIG_DIR, ConfigError
from refusion_pl.files import OutputError
from refusion_pl.lit.checkpointing import AtomicCheckpointIO, RunCheckpoint
from refusion_pl.train import TrainingStopped, train

ROOT = Path(__file__).resolve().parents[1]
RUN = [
    "model=pixel",
    "experiment=smoke",
    "task=shadow",
    "trainer.max_steps=10",
    "trainer.val_check_interval=10",
    "data.crop_size=16",
    "data.batch_size=2",
    "data.train_samples_per_epoch=8",  # 4 batches per epoch: step 4 ends epoch 0, step 2 is mid-epoch
    "data.val_size=16",
    "figure.enabled=false",
    "callbacks.progress_bar=null",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


def with_logger(overrides: tuple[str, ...]) -> list[str]:
    """The run's overrides, without a logger unless one is asked for."""
    chosen = any(o.startswith("logger=") for o in overrides)
    return [*RUN, *([] if chosen else ["logger=none"]), *overrides]


def compose_run(output_dir: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=with_logger(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


def last_checkpoint(run: Path) -> dict:
    return safe_torch_load(run / "diffusion" / "checkpoints" / "last.ckpt")


def run_subprocess(run: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m refusion_pl.train`` in its own process (the repository root importable for tests.faults)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "refusion_pl.train", *with_logger(overrides), f"hydra.run.dir={run}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=ROOT)


def assert_same_state(resumed: dict, reference: dict) -> None:
    """Bit-identical weights (EMA and raw), optimiser and scheduler state, at the same step."""
    assert resumed["global_step"] == reference["global_step"]
    for part in ("state_dict", "current_model_state"):
        assert resumed[part].keys() == reference[part].keys()
        for key, value in reference[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}[{key}] differs"
    for mine, theirs in zip(resumed["optimizer_states"], reference["optimizer_states"], strict=True):
        for index, state in theirs["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(mine["state"][index][name]), torch.as_tensor(value)), name
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(compose_run(run))
    return last_checkpoint(run)


def test_last_checkpoint_holds_the_final_step_and_is_not_versioned(tmp_path):
    # Lightning's save_last refreshed last.ckpt only with a new best; the steps after the last validation
    # (11, 12 here) were in no file, and a resume wrote last-v1.ckpt beside last.ckpt.
    run = tmp_path / "run"
    only_validation = [
        "trainer.val_check_interval=5",
        "sde.steps=4",
        "callbacks.model_checkpoint.every_n_train_steps=null",
    ]
    train(compose_run(run, "trainer.max_steps=12", *only_validation))
    assert last_checkpoint(run)["global_step"] == 12
    train(compose_run(run, "trainer.max_steps=16", *only_validation))
    names = sorted(p.name for p in (run / "diffusion" / "checkpoints").iterdir())
    assert "last.ckpt" in names and not [n for n in names if n.startswith("last-")], names
    assert not [n for n in names if n.startswith(".")], names  # no temporary files left
    assert [n for n in names if n.startswith("best-step")], names
    assert last_checkpoint(run)["global_step"] == 16


@pytest.mark.parametrize(("kill_at", "saved"), [(3, 2), (5, 4)], ids=["mid-epoch", "epoch-boundary"])
def test_sigkill_then_resume_is_bit_exact(reference, tmp_path, kill_at, saved):
    run = tmp_path / "run"
    fault = ["+callbacks.fault._target_=tests.faults.SignalAt", f"+callbacks.fault.step={kill_at}"]
    killed = run_subprocess(run, *fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert last_checkpoint(run)["global_step"] == saved
    train(compose_run(run))  # the same command again: ckpt_path=null resumes the run directory's last.ckpt
    assert_same_state(last_checkpoint(run), reference)


def test_echoed_run_resumes_bit_exact(tmp_path):
    """``sde.echo``: the loads a step reuses travel with the checkpoint, so a resumed run trains on the same
    batches as the uninterrupted one."""
    echo = ["sde.echo=2", "trainer.max_steps=6", "trainer.val_check_interval=6"]
    reference_run, run = tmp_path / "reference", tmp_path / "run"
    train(compose_run(reference_run, *echo))
    fault = ["+callbacks.fault._target_=tests.faults.SignalAt", "+callbacks.fault.step=3"]
    killed = run_subprocess(run, *echo, *fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    saved = last_checkpoint(run)
    assert saved["global_step"] == 2 and len(saved["refusion_pl_echo"]) == 2  # two loads of one pair each
    assert saved["refusion_pl_echo"][0][0].shape[0] == 1
    train(compose_run(run, *echo))
    assert_same_state(last_checkpoint(run), last_checkpoint(reference_run))


def test_latent_run_killed_in_its_second_stage_resumes_bit_exact(tmp_path):
    """Both stages in one run directory: the finished autoencoder is kept, the diffusion stage continues."""
    latent = [
        "model=latent",
        "autoencoder.max_steps=4",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
    ]
    reference_run, run = tmp_path / "reference", tmp_path / "run"
    train(compose_run(reference_run, *latent))
    fault = ["+callbacks.fault._target_=tests.faults.SignalAt", "+callbacks.fault.step=3"]
    killed = run_subprocess(run, *latent, *fault, "+callbacks.fault.stage=diffusion")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert last_checkpoint(run)["global_step"] == 2
    train(compose_run(run, *latent))
    assert_same_state(last_checkpoint(run), last_checkpoint(reference_run))
    ae = "autoencoder/checkpoints/last.ckpt"
    assert torch.equal(
        torch.cat([v.flatten().float() for v in safe_torch_load(run / ae)["state_dict"].values()]),
        torch.cat([v.flatten().float() for v in safe_torch_load(reference_run / ae)["state_dict"].values()]),
    )


def test_sigterm_saves_requeues_under_slurm_and_the_next_start_resumes(reference, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "scontrol.calls"
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_bin / "scontrol").chmod(0o755)
    run = tmp_path / "run"
    fault = [
        "+callbacks.fault._target_=tests.faults.SignalAt",
        "+callbacks.fault.step=2",
        "+callbacks.fault.signal=SIGTERM",
    ]
    env = {"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    stopped = run_subprocess(run, *fault, env=env)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "stopped by SIGTERM at step 3" in stopped.stderr and f"hydra.run.dir={run}" in stopped.stderr
    assert last_checkpoint(run)["global_step"] == 3  # the step running when the signal came was finished
    assert calls.read_text().split() == ["requeue", "4242"]
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    train(compose_run(run))  # the requeued job: same command, same directory, no ckpt_path
    assert_same_state(last_checkpoint(run), reference)


KILLED_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from refusion_pl.lit.checkpointing import AtomicCheckpointIO

    real_save = torch.save

    def save_half_then_die(obj, path):
        real_save(obj, path)
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:  # the process dies with half of the file on disk
            handle.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_half_then_die
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(4_000_000)}, sys.argv[1])
    """
)


def test_killed_checkpoint_write_keeps_the_previous_last_ckpt(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(3)}, target)
    before = target.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], env=env, timeout=120)
    assert result.returncode == -signal.SIGKILL
    leftovers = [p for p in target.parent.iterdir() if p != target]
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < 16_000_000  # the killed, half write
    assert target.read_bytes() == before
    assert torch.equal(safe_torch_load(target)["weights"], torch.zeros(3))
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(3)}, target)  # the next save cleans up
    assert list(target.parent.iterdir()) == [target]
    assert torch.equal(safe_torch_load(target)["weights"], torch.ones(3))


def test_full_disk_names_the_checkpoint_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, target)
    real_save = torch.save

    def disk_full(obj, path):
        real_save(obj, path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match=rf"cannot write {target}: No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [target]
    assert int(safe_torch_load(target)["step"]) == 1


def test_unwritable_run_directory_names_the_path(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run directory should go")
    with pytest.raises(OutputError, match=f"cannot create {blocker / 'run'}"):
        train(compose_run(blocker / "run", "trainer.max_steps=2"))


def test_nonfinite_steps_are_skipped_counted_then_stop_with_the_last_good_state(tmp_path):
    run = tmp_path / "run"
    cfg = compose_run(
        run,
        "+callbacks.poison._target_=tests.faults.PoisonBatches",
        "+callbacks.poison.steps=[2,3]",
        "+callbacks.poison.from_step=6",
        "+callbacks.record._target_=tests.faults.RecordWeights",
        "callbacks.nonfinite.max_consecutive=3",
        "callbacks.model_checkpoint.every_n_train_steps=null",
        "logger=csv",
        "callbacks.ema=null",
    )
    import refusion_pl.train as entry

    built: list[pl.Callback] = []
    original = entry.build_callbacks
    entry.build_callbacks = lambda *a, **k: built.extend(original(*a, **k)) or built
    try:
        with pytest.raises(TrainingStopped, match=r"3 consecutive steps with a non-finite loss") as info:
            train(cfg)
    finally:
        entry.build_callbacks = original
    assert info.value.status == "failed"
    record = next(c for c in built if type(c).__name__ == "RecordWeights")
    weights = record.after_step
    for bad in (3, 4):  # the updates of steps 3 and 4 (poisoned batches 2, 3) were skipped ...
        for key, value in weights[bad - 1].items():
            assert torch.equal(weights[bad][key], value), key
    assert any(not torch.equal(weights[5][k], v) for k, v in weights[4].items())  # ... training went on
    saved = last_checkpoint(run)
    assert saved["global_step"] == 9  # stopped after three bad steps in a row (7, 8, 9)
    for key, value in weights[6].items():  # last.ckpt holds the last good weights, all finite
        assert torch.equal(saved["state_dict"][key], value), key
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    rows = (next((run / "diffusion" / "csv").rglob("metrics.csv"))).read_text()
    assert "train/nonfinite_steps" in rows.splitlines()[0]
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


class ScriptedPSNR(pl.LightningModule):
    """A one-weight model whose validation PSNR follows a script: good, better, collapsed."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.script, self.validations = script, 0

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/psnr", self.script[self.validations])

    def on_validation_epoch_end(self):
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_collapse_warning_and_the_best_checkpoint_is_kept(tmp_path, caplog):
    from refusion_pl.lit.callbacks import MetricCollapseWarning

    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)
    checkpoint = RunCheckpoint(dirpath=str(tmp_path), monitor="val/psnr")
    collapse = MetricCollapseWarning(monitor="val/psnr", margin=3.0)
    trainer = pl.Trainer(
        max_steps=8, val_check_interval=2, check_val_every_n_epoch=None, callbacks=[checkpoint, collapse],
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        trainer.fit(ScriptedPSNR([30.0, 45.0, 43.0, 7.0]), data, data)
    assert len(collapse.warnings) == 1 and "collapsed to 7 at step 8" in collapse.warnings[0]
    assert "its best 45 (step 4)" in collapse.warnings[0] and "best-step0000004.ckpt" in collapse.warnings[0]
    assert Path(checkpoint.best_model_path).name == "best-step0000004.ckpt"
    assert safe_torch_load(checkpoint.last_path)["global_step"] == 8


def test_resuming_another_runs_checkpoint_is_refused_naming_the_differences(tmp_path):
    outputs = tmp_path / "runs"
    train(compose_run(outputs / "a", "trainer.max_steps=2"))
    other = compose_run(
        outputs / "b", "trainer.max_steps=4", "ckpt_path=last", "task=dehaze", "net.nafnet.width=12"
    )
    with pytest.raises(ConfigError) as info:
        train(other)
    message = str(info.value)
    assert (
        "task.name='dehaze' (checkpoint: 'shadow')" in message
        and "net.nafnet.width=12 (checkpoint: 8)" in message
    )
    forced = compose_run(
        outputs / "c", "trainer.max_steps=4", "ckpt_path=last", "task=dehaze", "resume_strict=false"
    )
    train(forced)  # told to: resumes the sibling run's weights on the other task
    assert last_checkpoint(outputs / "c")["global_step"] == 4


def test_untrusted_resume_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, evil)
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        train(compose_run(tmp_path / "run", f"ckpt_path={evil}", "trainer.max_steps=2"))
    assert not marker.exists()


class StandInLPIPS(torch.nn.Module):
    """LPIPS with a small random backbone: the plumbing runs without downloading AlexNet."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 4, 3)
        self.update_count = 0

    def update(self, pred, target) -> None:
        self.update_count += 1

    def compute(self) -> torch.Tensor:
        return torch.tensor(0.5)

    def reset(self) -> None:
        self.update_count = 0


def test_lpips_weights_never_enter_a_checkpoint_and_either_side_loads(monkeypatch):
    import torchmetrics.image.lpip

    from refusion_pl.lit import metrics
    from refusion_pl.lit.diffusion import DiffusionModule

    settings = {
        "model": "pixel",
        "nafnet": {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]},
    }
    without = DiffusionModule(**settings)
    monkeypatch.setattr(metrics, "lpips_status", lambda: (True, "stand-in"))
    monkeypatch.setattr(torchmetrics.image.lpip, "LearnedPerceptualImagePatchSimilarity", StandInLPIPS)
    with_lpips = DiffusionModule(**settings)
    assert isinstance(with_lpips.val_metrics.lpips, StandInLPIPS)
    made_with = with_lpips.state_dict()
    assert not [k for k in made_with if "lpips" in k]
    without.load_state_dict(made_with, strict=True)  # made where LPIPS was on, loaded where it is off
    with_lpips.load_state_dict(without.state_dict(), strict=True)  # and the reverse
    older = {**made_with, "val_metrics.lpips.net.weight": torch.zeros(4, 3, 3, 3)}  # written before the fix
    without.load_state_dict(older, strict=True)
    with pytest.raises(RuntimeError, match="Unexpected key"):  # other unknown keys are still errors
        without.load_state_dict({**made_with, "net.extra.weight": torch.zeros(1)}, strict=True)


class LastStepSeen(pl.Callback):
    """The step held by last.ckpt at the start of every batch."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(safe_torch_load(self.path)["global_step"] if self.path.is_file() else None)


@pytest.mark.parametrize("trigger", ["every_n_train_steps", "every_n_minutes"])
def test_last_checkpoint_frequency_by_steps_or_time(tmp_path, trigger):
    data = torch.utils.data.DataLoader(torch.zeros(6, 1), batch_size=1)
    settings = {"every_n_train_steps": 2} if trigger == "every_n_train_steps" else {"every_n_minutes": 1e-9}
    checkpoint = RunCheckpoint(dirpath=str(tmp_path), monitor=None, save_top_k=0, **settings)
    seen = LastStepSeen(checkpoint.last_path)
    trainer = pl.Trainer(
        max_steps=6, limit_val_batches=0, callbacks=[checkpoint, seen], logger=False, enable_progress_bar=False,
        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    trainer.fit(ScriptedPSNR([]), data)
    expected = [None, None, 2, 2, 4, 4] if trigger == "every_n_train_steps" else [None, 1, 2, 3, 4, 5]
    assert seen.seen == expected
    assert safe_torch_load(checkpoint.last_path)["global_step"] == 6
