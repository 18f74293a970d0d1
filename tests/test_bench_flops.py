"""The speed benchmark's FLOP counts (the GEMM-rate ceilings rest on them)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.benchmark_scripts import load_benchmark


def bench_module():
    return load_benchmark("bench")


@pytest.mark.parametrize("groups", [1, 16])
@pytest.mark.parametrize("input_grad", [True, False])
def test_a_convolution_backward_costs_its_forward_per_gradient(groups: int, input_grad: bool) -> None:
    bench = bench_module()
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 16, 12, 10, requires_grad=input_grad)
    with FlopCounterMode(display=False) as counter:
        conv(x)
    forward = counter.get_total_flops()
    assert forward == 2 * 2 * 16 * (16 // groups) * 9 * 12 * 10  # multiply-adds of the (grouped) conv, x2
    step = bench.fn_flops(lambda: conv(x).square().sum().backward())
    gradients = 2 if input_grad else 1  # the weight's always, the input's when it requires one
    assert step == pytest.approx(forward * (1 + gradients), rel=0.01)  # plus the tiny square/sum
