"""EMA warm-up, and the callbacks built from the `_target_` nodes of conf/callbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from refusion_pl.lit.callbacks import EMA, ema_with_warmup


def test_ema_warmup_ramps_to_the_fixed_decay():
    update = ema_with_warmup(0.995)
    averaged, current = torch.zeros(1), torch.ones(1)
    # first update: rate (1 + 0) / (10 + 0) = 0.1 keeps only 10% of the old average
    assert update(averaged, current, torch.tensor(0)).item() == pytest.approx(0.9)
    # late updates use the configured decay
    assert update(averaged, current, torch.tensor(10_000)).item() == pytest.approx(0.005)


def test_ema_callback_uses_the_warmup_only_when_asked():
    first = (torch.zeros(1), torch.ones(1), torch.tensor(0))  # average 0, weights 1, first update
    assert EMA(decay=0.99, warmup=True).avg_fn(*first).item() == pytest.approx(0.9)
    assert EMA(decay=0.99, warmup=False).avg_fn(*first).item() == pytest.approx(0.01)


def test_ema_updates_every_n_optimizer_steps_through_the_public_hook():
    ema = EMA(update_every_n_steps=10)
    assert [step for step in range(31) if ema.should_update(step_idx=step)] == [0, 10, 20, 30]
    assert not ema.should_update(epoch_idx=0)  # epoch ends never update


def test_ema_warmup_averages_inside_lightning(tmp_path):
    """In a real fit: updates after optimiser steps 1 and 3 (step_idx 0 and 2), the warm-up rate on the second,
    and the average handed back to the model at the end."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.demos.boring_classes import BoringModel

    class RecordWeights(Callback):
        def __init__(self) -> None:
            self.after_step: list[torch.Tensor] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.after_step.append(pl_module.layer.weight.detach().clone())

    record = RecordWeights()
    model = BoringModel()
    trainer = pl.Trainer(
        max_steps=4, callbacks=[record, EMA(decay=0.995, update_every_n_steps=2, warmup=True)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model)
    first, third = record.after_step[0], record.after_step[2]
    rate = (1 + 1) / (10 + 1)  # the second update (one averaged so far) keeps 2/11 of the average
    expected = first * rate + third * (1 - rate)
    assert not torch.allclose(first, third)
    torch.testing.assert_close(model.layer.weight.detach(), expected)


# ---- callbacks from config ------------------------------------------------------------------------------------------
def _built(compose_config, *overrides, stage="diffusion"):
    from refusion_pl.lit.callbacks import build_callbacks

    cfg = compose_config(*overrides)
    return build_callbacks(cfg, stage, Path("/tmp/unused"))


def test_default_callbacks_are_built_in_order_from_target_nodes(compose_config):
    from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor, TQDMProgressBar

    from refusion_pl.lit.callbacks import ImagePanels, MetricCollapseWarning, NonFiniteGuard, images_in_batch
    from refusion_pl.lit.checkpointing import RunCheckpoint

    built = _built(compose_config)
    kinds = [type(c) for c in built]
    assert kinds == [
        RunCheckpoint, EMA, NonFiniteGuard, MetricCollapseWarning, LearningRateMonitor, ThroughputMonitor,
        ImagePanels, TQDMProgressBar,
    ]  # fmt: skip
    checkpoint, ema = built[0], built[1]
    assert (
        checkpoint.dirpath == "/tmp/unused" and checkpoint.monitor == "val/psnr" and checkpoint.mode == "max"
    )
    assert checkpoint.every_n_train_steps == 1000
    assert ema.warmup and ema.update_every_n_steps == 10  # the warm-up survives the move to _target_ nodes
    throughput = built[5]
    assert throughput.batch_size_fn({"gt": torch.zeros(3, 3, 8, 8)}) == 3
    assert images_in_batch({"gt": torch.zeros(5, 3, 8, 8)}) == 5
    assert EMA not in [type(c) for c in _built(compose_config, stage="autoencoder")]  # stage 1 has no EMA


def test_callbacks_can_be_added_switched_off_and_replaced(compose_config):
    from lightning.pytorch.callbacks import EarlyStopping, RichProgressBar

    built = _built(
        compose_config,
        "+callbacks.early_stop._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.early_stop.monitor=val/psnr",
        "+callbacks.early_stop.mode=max",
        "callbacks.ema=null",
        "callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar",
        "callbacks.model_checkpoint.every_n_train_steps=7",
        "optimized_metric=val/lpips",
    )
    kinds = [type(c) for c in built]
    assert EarlyStopping in kinds and RichProgressBar in kinds and EMA not in kinds
    assert built[0].every_n_train_steps == 7 and built[0].mode == "min"  # LPIPS: lower is better


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("callbacks.ema.decay=1.5", r"callbacks\.ema\.decay"),
        (
            "callbacks.model_checkpoint.every_n_train_steps=0",
            r"callbacks\.model_checkpoint\.every_n_train_steps",
        ),
        (
            "+callbacks.model_checkpoint.every_n_train_stps=5",
            r"callbacks\.model_checkpoint\.every_n_train_stps",
        ),
        ("callbacks.lr_monitor=5", r"callbacks\.lr_monitor must be a node with a _target_"),
    ],
)
def test_bad_callback_settings_name_the_key(compose_config, override, key):
    from refusion_pl.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=key):
        validate_config(compose_config(override))
