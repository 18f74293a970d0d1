"""Tiled inference: exact for the autoencoder's convolutional levels, seam-free blending for pixel models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from refusion_pl import tiling
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder
from refusion_pl.pipeline import restore
from refusion_pl.sde import IRSDE
from refusion_pl.tiling import (
    BlendedTiles,
    GiB,
    ae_geometry,
    attention,
    decode_deep,
    encode_deep,
    estimate_bytes,
    plan_tile,
    restore_tiled,
    tiled_decode,
    tiled_encode,
    window_starts,
)


def psnr(a: Tensor, b: Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().clamp_min(1e-30)
    return float(-10 * torch.log10(mse))


def perturbed(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Random weights with non-zero residual scales, so that every path of the network matters."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def autoencoder(ch_mult: tuple[int, ...] = (1, 2, 2, 2)) -> UNetAutoencoder:
    torch.manual_seed(0)
    return perturbed(UNetAutoencoder(3, 3, ch=4, ch_mult=ch_mult, embed_dim=4))


def noise_net(channels: int, variant: str) -> ConditionalNAFNet:
    torch.manual_seed(0)
    net = ConditionalNAFNet(channels, width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], variant=variant)
    return perturbed(net)


@torch.no_grad()
@pytest.mark.parametrize("ch_mult", [(1, 2, 2, 2), (1, 2, 4)])
@pytest.mark.parametrize("store_skips", [False, True])
def test_tiled_autoencoder_equals_untiled(ch_mult, store_skips):
    ae = autoencoder(ch_mult)
    x = torch.rand(1, 3, 91, 133)  # odd sizes: the padding happens once, for the whole image
    latent, hidden = ae.encode(x)
    reference = ae.decode(latent, hidden)
    enc = tiled_encode(ae, x, tile=16, store_skips=store_skips)  # many tiles, each far smaller than its halo
    assert (enc.latent - latent).abs().max() < 1e-5
    out = tiled_decode(ae, latent, enc, tile=16)
    assert out.shape == x.shape
    diff = (out - reference).abs().max()
    assert diff < (2e-3 if store_skips else 1e-5)  # fp16 skips round; recomputed ones are exact


@torch.no_grad()
def test_halo_is_needed():
    """The test above is not vacuous: a halo that is too small shows up as an error."""
    ae = autoencoder()
    x = torch.rand(1, 3, 64, 64)
    latent, hidden = ae.encode(x)
    reference = ae.decode(latent, hidden)
    geometry = ae_geometry(ae)
    small = type(geometry)(**{**geometry.__dict__, "decoder_halo": 0, "encoder_halo": 0})
    original = tiling.ae_geometry
    try:
        tiling.ae_geometry = lambda _ae: small
        out = tiled_decode(ae, latent, tiled_encode(ae, x, tile=16), tile=16)
    finally:
        tiling.ae_geometry = original
    assert (out - reference).abs().max() > 1e-3


@torch.no_grad()
def test_deepest_level_in_strips_is_exact():
    ae = perturbed(UNetAutoencoder(3, 3, ch=4, ch_mult=[1, 2, 2, 8], embed_dim=4))
    x = torch.randn(1, 8, 37, 29)  # the deepest level works on ch * ch_mult[-2] channels
    latent, hidden = encode_deep(ae, x)
    latent_strips, hidden_strips = encode_deep(ae, x, rows=6)
    assert (latent - latent_strips).abs().max() < 1e-4
    assert all((a - b).abs().max() < 1e-4 for a, b in zip(hidden, hidden_strips))
    decoded = decode_deep(ae, latent, hidden)
    assert (decoded - decode_deep(ae, latent, hidden, rows=5)).abs().max() < 1e-4
    level = ae.encoder[-1]
    y = torch.randn(1, 8, 40, 7) * 3  # large logits: the online softmax must stay stable
    assert (attention(level.attn, y, None) - attention(level.attn, y, 3)).abs().max() < 1e-4


@torch.no_grad()
@pytest.mark.parametrize("decode_mode", ["direct", "residual"])
def test_tiled_latent_restore_agrees_with_untiled(decode_mode: str):
    sde = IRSDE(max_sigma=50, T=10)
    ae, net = autoencoder(), noise_net(4, "latent")
    ae.decode_mode = decode_mode
    lq = torch.rand(1, 3, 75, 101)
    reference = restore(sde, net, lq, ae, sampler="sde", steps=4, generator=torch.Generator().manual_seed(3))
    out = restore_tiled(
        sde, net, lq, ae, sampler="sde", steps=4, generator=torch.Generator().manual_seed(3), tile=32
    )
    diff = (out - reference).abs()
    print(
        f"latent tiled vs untiled: max {diff.max():.2e}, mean {diff.mean():.2e}, PSNR {psnr(out, reference):.1f}"
    )
    assert psnr(out, reference) >= 50
    assert diff.max() < 1e-4


@torch.no_grad()
def test_blended_pixel_restore_agrees_without_seams():
    sde = IRSDE(max_sigma=50, T=10)
    net = noise_net(3, "pixel")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    lq = torch.stack([yy, xx, (yy + xx) / 2])[None] * 0.8 + 0.1  # smooth content: seams would stand out
    generator = torch.Generator().manual_seed(0)
    reference = restore(sde, net, lq, sampler="ode", steps=5, generator=generator)
    out = restore_tiled(
        sde, net, lq, sampler="ode", steps=5, generator=torch.Generator().manual_seed(0), tile=48, overlap=16
    )
    error = (out - reference).abs().mean(dim=(0, 1))
    borders = torch.zeros_like(error, dtype=torch.bool)
    for start in window_starts(128, 48, 16, 4)[1:]:
        borders[:, start : start + 16] = True  # blend bands, where a seam would be
    for start in window_starts(96, 48, 16, 4)[1:]:
        borders[start : start + 16, :] = True
    border_err, interior_err = error[borders].mean(), error[~borders].mean()
    print(
        f"pixel blended: PSNR {psnr(out, reference):.1f} dB, border {border_err:.2e}, interior {interior_err:.2e}"
    )
    assert psnr(out, reference) > 45  # only the windows' global channel pooling differs
    assert border_err < 2 * interior_err + 1e-5  # no seams: the blend bands are as good as the rest


def test_blending_weights_sum_to_one_and_single_window_is_identity():
    calls = []

    def net(x, mu, t):
        calls.append(x.shape)
        return torch.ones_like(x)

    model = BlendedTiles(net, tile=32, overlap=8, align=4)
    x = torch.rand(1, 3, 50, 70)
    assert torch.allclose(model(x, x, torch.tensor([1])), torch.ones_like(x))
    assert len(calls) > 1 and all(s[-1] <= 32 and s[-2] <= 32 for s in calls)
    calls.clear()
    BlendedTiles(net, tile=128)(x, x, torch.tensor([1]))
    assert calls == [x.shape]


def test_memory_planner():
    ae = UNetAutoencoder(3, 3, ch=8, ch_mult=[4, 8, 8, 16], embed_dim=8)
    net = ConditionalNAFNet(
        8, width=32, enc_blk_nums=[1, 1, 1, 4], dec_blk_nums=[1, 1, 1, 1], variant="latent"
    )
    assert plan_tile(ae, net, 512, 512, 4 * GiB) is None  # small photos are not tiled
    tile = plan_tile(ae, net, 4000, 6000, 4 * GiB)
    assert tile is not None and tile % 16 == 0 and estimate_bytes(ae, net, 4000, 6000, tile) <= 4 * GiB
    larger = plan_tile(ae, net, 4000, 6000, 8 * GiB)
    assert larger is not None and larger > tile
    pixel = ConditionalNAFNet(3, width=32, enc_blk_nums=[1, 1, 1, 4], dec_blk_nums=[1, 1, 1, 1])
    assert plan_tile(None, pixel, 4000, 6000, 4 * GiB) is not None


# Measures a restore's peak resident memory in a fresh interpreter: Linux's VmHWM, reset through clear_refs just
# before the run. A fixed mmap threshold makes glibc hand every tensor's pages back when it is freed, so the peak
# is what the live tensors needed (the allocator's slack is what the estimate's BASE_BYTES and the planner's 90%
# leave room for). Prints JSON: for each tile, the peak above the start and the whole process's peak.
MEASURE_PEAK = """
import json, re, sys, torch
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder
from refusion_pl.sde import IRSDE
from refusion_pl.tiling import restore_tiled

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

torch.manual_seed(0)
ae = UNetAutoencoder(3, 3, ch=8, ch_mult=[4, 8, 8, 16], embed_dim=8).eval()
net = ConditionalNAFNet(8, width=32, enc_blk_nums=[1, 1, 1, 4], dec_blk_nums=[1, 1, 1, 1], variant="latent")
sde, height, width = IRSDE(max_sigma=50, T=10), int(sys.argv[1]), int(sys.argv[2])
with torch.no_grad():
    restore_tiled(sde, net.eval(), torch.rand(1, 3, 32, 32), ae, sampler="ode", steps=1)  # warm-up
    lq, peaks = torch.rand(1, 3, height, width), {}
    for tile in sys.argv[3:]:
        open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
        start = status("VmRSS")
        out = restore_tiled(sde, net, lq, ae, sampler="ode", steps=1, tile=None if tile == "none" else int(tile))
        del out
        peaks[tile] = {"run": status("VmHWM") - start + 4 * lq.numel(), "process": status("VmHWM")}
print(json.dumps(peaks))
"""


def measured_peaks(height: int, width: int, tiles: list[str]) -> dict[str, dict[str, int]]:
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists() or not os.access(clear_refs, os.W_OK):
        pytest.skip("peak memory is measured through Linux's /proc/self/clear_refs")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", MEASURE_PEAK, str(height), str(width), *tiles]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_memory_estimate_against_measured_peak():
    """The planner's estimate, minus its fixed allowance (process, loaded weights), within a factor of the peak a
    run really needs."""
    ae = UNetAutoencoder(3, 3, ch=8, ch_mult=[4, 8, 8, 16], embed_dim=8)
    net = ConditionalNAFNet(
        8, width=32, enc_blk_nums=[1, 1, 1, 4], dec_blk_nums=[1, 1, 1, 1], variant="latent"
    )
    height, width = 256, 384
    peaks = measured_peaks(height, width, ["none", "128"])
    for key, tile in (("none", None), ("128", 128)):
        estimate = estimate_bytes(ae, net, height, width, tile)
        ratio = peaks[key]["run"] / (estimate - tiling.BASE_BYTES - tiling.weight_bytes(ae, net))
        assert 0.4 <= ratio <= 1.25, f"tile={tile}: measured/estimated {ratio:.2f}"  # measured 0.58, 0.83
        assert peaks[key]["process"] <= estimate  # the whole process, torch included, fits the estimate
    assert peaks["128"]["run"] < 0.8 * peaks["none"]["run"]  # tiling does save memory


# Frees 24 tensors of 8 MiB after a 16 MiB one has raised glibc's dynamic mmap threshold, keeping the last
# (top of the heap) alive; prints how much of the freed memory is still resident, before and after a release.
FREED_BUT_RESIDENT = """
import re, torch
from refusion_pl.tiling import release_free_memory

def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

del_me = torch.ones(4 * 2**20)  # 16 MiB: mapped, and freeing it raises the threshold
del del_me
start = rss()
tensors = [torch.ones(2 * 2**20) for _ in range(24)]  # 8 MiB each
keep = tensors[-1]
del tensors
before = (rss() - start) / 2**20
assert release_free_memory()
print(before, (rss() - start) / 2**20)
"""


def test_released_heap_memory_leaves_the_process():
    if not Path("/proc/self/status").exists() or tiling._LIBC is None:
        pytest.skip("glibc's malloc_trim on Linux")
    args = [sys.executable, "-c", FREED_BUT_RESIDENT]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = (float(v) for v in done.stdout.splitlines()[-1].split())
    assert before > 100  # freed, yet resident: what a tiled restore's peak suffered from
    assert after < 20  # only the tensor still alive


def test_stereo_windows_are_bands_of_whole_rows_and_carry_scalars():
    """Stereo networks attend along whole rows: their windows never cut a row; extra arguments reach each window."""
    calls = []

    def net(x, mu, t, *extra):
        calls.append((x.shape, extra))
        return torch.ones_like(x)

    x = torch.rand(1, 6, 50, 70)
    model = BlendedTiles(net, tile=16, overlap=8, align=4, whole_rows=True)
    assert torch.allclose(model(x, x, torch.tensor([1]), "scalars"), torch.ones_like(x))
    assert len(calls) > 1 and all(
        shape[-1] == 70 and shape[-2] <= 16 and extra == ("scalars",) for shape, extra in calls
    )
    stereo = ConditionalNAFNet(
        width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1], variant="stereo"
    ).eval()
    sde = IRSDE(max_sigma=50, T=10, schedule="cosine", eps=0.005)
    lq = torch.rand(1, 6, 24, 40, generator=torch.Generator().manual_seed(0))
    banded = restore_tiled(sde, stereo, lq, sampler="ode", steps=2, tile=8, whole_rows=True)
    assert banded.shape == lq.shape and banded.isfinite().all()
    from refusion_pl.lit import DiffusionModule
    from refusion_pl.restore import Restorer

    tiny = {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1], "variant": "stereo"}
    sde_cfg = {"max_sigma": 50, "steps": 10, "schedule": "cosine", "eps": 0.005, "sampler": "ode"}
    module = DiffusionModule(model="pixel", nafnet=tiny, sde=sde_cfg).eval()
    restorer = Restorer(module=module, device=torch.device("cpu"), sampler="ode", steps=2, tile=16)
    out = restorer(lq[0])
    # a 16 x 16 tile's pixels over two 40-wide views: bands of 2 rows (the network's alignment)
    assert restorer.last_tile == 2 and out.shape == lq[0].shape
