"""Weight files and option files as the original implementation writes them, built from this package's networks.

`original_state_dict` is the inverse of the key renames in `refusion_pl.checkpoints`; the test that uses it
first checks it against the reference state dicts produced by running the original code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder

OPTIONS = Path(__file__).parent / "fixtures" / "original_options"

TINY_NAFNET = {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}
TINY_AE = {"ch": 4, "ch_mult": [1, 2, 2], "embed_dim": 4}
TINY_T = 4

# The published option file each case starts from, and its network variant.
CASES = {
    "pixel": ("deshadow__test__refusion.yml", "pixel"),
    "latent": ("latent-dehazing__dehazing__test__nasde.yml", "latent"),
    "sr": ("sisr__test__refusion.yml", "pixel"),
    "stereo": ("stereo-sr__ssr__test__refusion.yml", "stereo"),
    "bokeh": ("latent-bokeh__bokeh__test__refusion.yml", "bokeh"),
}

_NAFNET_BOKEH = (
    (r"^time_mlp\.1\.", "time_mlp.0."),
    (r"^time_mlp\.3\.", "time_mlp.2."),
    (r"\.mlp\.1\.", ".time_mlp.1."),
)


def _unet_renames(ae: UNetAutoencoder) -> list[tuple[str, str]]:
    renames = [
        (r"^(encoder|decoder)\.(\d+)\.res1\.", r"\1.\2.0."),
        (r"^(encoder|decoder)\.(\d+)\.res2\.", r"\1.\2.1."),
        (r"^(encoder|decoder)\.(\d+)\.attn\.norm\.", r"\1.\2.2.fn.norm."),
        (r"^(encoder|decoder)\.(\d+)\.attn\.body\.", r"\1.\2.2.fn.fn."),
        (r"^encoder\.(\d+)\.down\.", r"encoder.\1.3."),
    ]
    for index, level in enumerate(ae.decoder):
        upsamples = isinstance(level.up.upsample, nn.Upsample)  # the original's Sequential(Upsample, Conv)
        renames.append(
            (
                rf"^decoder\.{index}\.up\.conv\.",
                f"decoder.{index}.3.1." if upsamples else f"decoder.{index}.3.",
            )
        )
    return renames


def original_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """`module.state_dict()` under the original implementation's key names."""
    if isinstance(module, UNetAutoencoder):
        renames = _unet_renames(module)
    elif isinstance(module, ConditionalNAFNet) and module.variant == "bokeh":
        renames = list(_NAFNET_BOKEH)
    else:
        renames = []
    out = {}
    for key, value in module.state_dict().items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value.clone()
    return out


def save_original(module: nn.Module, path: Path, data_parallel: bool = False) -> Path:
    """`torch.save(net.state_dict())` as the original saves; `data_parallel` adds its `module.` prefix."""
    state = original_state_dict(module)
    if data_parallel:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, path)
    return path


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, including the zero-initialised residual scales, so every tensor matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return module.eval()


def tiny_networks(case: str, seed: int = 0) -> tuple[ConditionalNAFNet, UNetAutoencoder | None]:
    """The noise network (and autoencoder) of a case, at test sizes with random weights."""
    variant = CASES[case][1]
    latent = variant in ("latent", "bokeh")
    img_channel = TINY_AE["embed_dim"] if latent else 3
    net = randomise(ConditionalNAFNet(img_channel=img_channel, variant=variant, **TINY_NAFNET), seed)
    ae = randomise(UNetAutoencoder(in_ch=3, out_ch=3, **TINY_AE), seed + 1) if latent else None
    return net, ae


def write_options(
    case: str, folder: Path, weights: Path | None, ae_weights: Path | None, **extra: Any
) -> Path:
    """The published option file of `case` with test-size networks, a short T and these weight paths."""
    opts = yaml.safe_load((OPTIONS / CASES[case][0]).read_text())
    setting = opts["network_G"]["setting"]
    setting.update(TINY_NAFNET)
    if "network_L" in opts:
        setting["img_channel"] = TINY_AE["embed_dim"]
        opts["network_L"]["setting"].update(TINY_AE)
    opts["sde"]["T"] = TINY_T
    opts["path"]["pretrain_model_G"] = None if weights is None else str(weights)
    if "network_L" in opts:
        opts["path"]["pretrain_model_L"] = None if ae_weights is None else str(ae_weights)
    opts.update(extra)
    path = folder / f"{case}.yml"
    path.write_text(yaml.safe_dump(opts, sort_keys=False))
    return path


def original_files(case: str, folder: Path, data_parallel: bool = False, seed: int = 0) -> dict[str, Any]:
    """Networks, their `.pth` files in the original's naming and an option file naming them."""
    net, ae = tiny_networks(case, seed)
    weights = save_original(net, folder / f"{case}-net.pth", data_parallel)
    ae_weights = None if ae is None else save_original(ae, folder / f"{case}-ae.pth", data_parallel)
    options = write_options(case, folder, weights, ae_weights)
    return {"net": net, "ae": ae, "weights": weights, "ae_weights": ae_weights, "options": options}
