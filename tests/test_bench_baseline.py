"""The benchmark's yardstick (benchmarks/original_baseline.py) computes what the original implementation computed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from refusion_pl.checkpoints import load_original_state_dict
from refusion_pl.models import ConditionalNAFNet
from refusion_pl.sde import IRSDE
from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "original"


def baseline_module():
    return load_benchmark("original_baseline")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_baseline_network_and_ode_sampler_match_the_reference_vectors(variant: str) -> None:
    baseline = baseline_module()
    data = torch.load(FIXTURES / f"cnafnet_{variant}_w8.pt", weights_only=True)
    ours = load_original_state_dict(ConditionalNAFNet(**data["config"], variant=variant), data["state_dict"])
    net = baseline.OriginalNAFNet(**data["config"], intro_skip=variant == "latent").eval()
    net.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        assert rel_err(net(data["x"], data["cond"], data["t"]), data["out"]) < 1e-4
    if "ode_out" in data:
        sde_cfg = data["sde_config"]
        sde = IRSDE(sde_cfg["max_sigma"], sde_cfg["T"], sde_cfg["schedule"], sde_cfg["eps"])
        out = baseline.original_reverse_ode(sde, net, data["cond"], data["ode_xT"])
        assert rel_err(out, data["ode_out"]) < 1e-4
