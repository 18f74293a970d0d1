"""EMA warm-up and throughput logging."""

from __future__ import annotations

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
    assert EMA(decay=0.99, warmup=True)._kwargs["avg_fn"].__name__ == "update"
    fixed = EMA(decay=0.99, warmup=False)._kwargs["avg_fn"]
    assert fixed(torch.zeros(1), torch.ones(1), torch.tensor(0)).item() == pytest.approx(0.01)
