"""The fastest module for a device that computes the same outputs: what restore, evaluate and validation run.

Levers, each measured in `benchmarks/bench.py` against the plain eager NCHW network:
- eval mode;
- channels-last (NHWC) weights: convolutions then produce NHWC maps, on which the channel LayerNorm is one fused
  `layer_norm` kernel and the 1x1 convolutions are single matrix multiplies (`layers.pointwise`);
- `torch.compile` (in place, so checkpoint keys keep their names): it fuses the element-wise work between the
  convolutions and, on CPUs, freezes the weights into the graph (`compile_options`); it costs 20-60 s of
  compiling per network and input size on a small CPU, so by default it is used on GPUs only.

Mixed precision (bf16/fp16) changes the outputs, so it stays a separate choice (`precision=` of restore/evaluate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from refusion_pl.models.unet_ae import ConvAct, ResBlock, ResidualLinearAttention, UNetAutoencoder

# Autoencoder parts compiled one by one: tiled decoding calls them directly, not through encode/decode.
_AUTOENCODER_PARTS = (ConvAct, ResBlock, ResidualLinearAttention)


def module_device(net: nn.Module) -> torch.device:
    """Device of the first parameter (CPU for a module without parameters)."""
    first = next(net.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def compile_by_default(device: torch.device) -> bool:
    """`compile=None` means: compile on GPUs, where compiling takes seconds, not on CPUs (about a minute)."""
    return device.type == "cuda"


def is_compiled(net: nn.Module) -> bool:
    """Whether `net` (or, for the autoencoder, its parts) was compiled in place by `nn.Module.compile`."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in net.modules())


def _compile_targets(net: nn.Module) -> list[nn.Module]:
    if isinstance(net, UNetAutoencoder):
        return [m for m in net.modules() if isinstance(m, _AUTOENCODER_PARTS)]
    return [net]


def compile_options(device: torch.device) -> dict[str, Any] | None:
    """Inductor options for inference: on CPUs, freezing (weights folded in as constants and convolutions
    pre-packed for oneDNN). Probed on one thread with the `small` latent net at 32x32: 7.1 ms per call against
    8.8 ms compiled without it and 15.3 ms for the original (`benchmarks/README.md`).
    It applies under `torch.no_grad` only, as sampling runs; graphs that track gradients compile as usual."""
    return {"freezing": True} if device.type == "cpu" else None


def _set_compiled(net: nn.Module, enabled: bool, device: torch.device) -> None:
    for target in _compile_targets(net):
        compiled = getattr(target, "_compiled_call_impl", None) is not None
        if enabled and not compiled:
            # in place: the state dict keeps its keys (torch.compile(net) would prefix them)
            target.compile(options=compile_options(device))
        elif not enabled and compiled:
            target._compiled_call_impl = None  # back to eager (the attribute nn.Module.compile sets)


def prepare_for_inference(
    net: nn.Module,
    device: torch.device | str | None = None,
    *,
    compile: bool | None = None,
    channels_last: bool | None = True,
) -> nn.Module:
    """Put `net` in eval mode on `device` in its fastest same-output form; returns `net` (changed in place).

    `channels_last`: NHWC weights (None or True: on; False: back to NCHW). `compile`: `nn.Module.compile`
    in place (None: on GPUs only, see `compile_by_default`; False undoes an earlier compile). Calling it
    again with other switches converts back, so one loaded model can serve both settings.
    """
    device = module_device(net) if device is None else torch.device(device)
    memory_format = torch.channels_last if channels_last in (None, True) else torch.contiguous_format
    net.eval()
    net.to(device=device, memory_format=memory_format)
    _set_compiled(net, compile_by_default(device) if compile is None else bool(compile), device)
    return net


def inference_switches(settings: Mapping[str, Any] | None) -> dict[str, bool | None]:
    """`compile` / `channels_last` from an `inference:` config node (missing keys and nodes: the defaults)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {"compile", "channels_last"})
    if unknown:
        raise ValueError(f"inference.{unknown[0]} is not a setting; allowed: compile, channels_last")
    switches: dict[str, bool | None] = {}
    for key in ("compile", "channels_last"):
        value = settings.get(key)
        if value is not None and not isinstance(value, bool):
            raise ValueError(
                f"inference.{key}={value!r} must be true, false or null (null: the device's default)"
            )
        switches[key] = value
    return switches
