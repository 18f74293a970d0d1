"""Training speed levers that keep the maths: NHWC (channels-last) weights for the whole run.

`benchmarks/bench.py` measures what they give (training images/s against the plain eager NCHW networks). Opt in
per run: ``+callbacks.channels_last._target_=refusion_pl.lit.speed.ChannelsLast``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


class ChannelsLast(Callback):
    """Convert the module's 4-D weights to channels-last when fitting starts.

    Convolutions then produce NHWC maps from NCHW batches, on which the channel LayerNorm is one fused kernel and
    the 1x1 convolutions single matrix multiplies (`refusion_pl.models.layers`). Validation keeps the format.
    """

    def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        pl_module.to(memory_format=torch.channels_last)
