"""Speed benchmark (issue 11): every figure a ratio against a baseline timed in the same process, same weights.

Sections (random weights: speed does not depend on training):
- machine: the fp32 GEMM rate (the physical yardstick for achieved FLOP/s);
- sampling: probability-flow sampling, s/step, of the original implementation's network and sampler
  (`original_baseline.py`: eager fp32 NCHW, channel LayerNorm as var/mean) against this project's sampler with
  `prepare_for_inference` (and its plain eager network), pixel and latent nets, outputs compared;
- flops: parameters, FLOPs per step (`FlopCounterMode`) and achieved FLOP/s as a share of the GEMM rate;
- training: diffusion-stage training steps (forward, loss, backward, AdamW) in images/s, plain eager NCHW
  against channels-last, and the autoencoder stage likewise;
- autoencoder: encode + decode at full resolution, plain eager against prepared;
- latent_vs_pixel: one sampling step at 1024x1024 in pixel space and in the latent space, same net width;
- large: 3000x2000 and 6000x4000 photos restored through the real command (`large_image.py`: paper autoencoder
  + paper noise net, 20 steps, `tile=auto`, 4 GB on CPUs), peak resident memory and wall time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench.py --quick      # a few minutes
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench.py              # the recorded run (idle machine)
    .venv/bin/python benchmarks/bench.py --device cuda --net paper --compile --precision bf16

Writes `benchmarks/results/bench[_quick|_<device>].json` and `.md`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from original_baseline import OriginalNAFNet, original_reverse_ode  # noqa: E402

from refusion_pl.lit.optim import build_optimizer  # noqa: E402
from refusion_pl.models import ConditionalNAFNet, UNetAutoencoder, prepare_for_inference  # noqa: E402
from refusion_pl.sampling import sample  # noqa: E402
from refusion_pl.sde import IRSDE  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LATENT_FACTOR = 8  # the paper autoencoder downsamples by 8 ([4, 8, 8, 16]: 2 ** 3)
LATENT_CHANNELS = 8


# ---- timing helpers ---------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def side_by_side(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds per function, run interleaved so that load changes hit all of them alike."""
    for fn in fns.values():  # warm-up (allocator, oneDNN primitive caches, compilation)
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn, device))
    return best


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


# ---- networks ---------------------------------------------------------------------------------------------------
def net_settings(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "conf" / "net" / f"{name}.yaml").read_text())


def noise_nets(settings: dict[str, Any], variant: str, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(ours, the original's) with the same random weights; residual scales non-zero so every block counts."""
    torch.manual_seed(0)
    channels = 3 if variant == "pixel" else LATENT_CHANNELS
    ours = ConditionalNAFNet(img_channel=channels, variant=variant, **settings)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith((".beta", ".gamma")) or name.endswith(".g"):
                p.uniform_(0.5, 1.0)
    original = OriginalNAFNet(img_channel=channels, intro_skip=variant == "latent", **settings)
    original.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device).eval(), original.to(device).eval()


def autoencoder(settings: dict[str, Any], device: torch.device, subpixel: bool = True) -> UNetAutoencoder:
    """The autoencoder with random weights; `subpixel=False` runs its upsampling convs as the original does."""
    torch.manual_seed(0)
    ae = UNetAutoencoder(**settings).init_signal_preserving().use_subpixel_upsampling(subpixel)
    return ae.to(device).eval()


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: list[bool],
    out_shape: Any = None,
) -> int:
    """A convolution's backward: the forward's FLOPs for the input gradient and again for the weight gradient.

    torch's own formula ignores groups for the weight gradient, so it counts a depthwise conv's C times over
    (NAFNet's step came out at 6.6x its forward instead of ~2x)."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def fn_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (forward and, if it runs one, backward)."""
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---- sections ---------------------------------------------------------------------------------------------------
def gemm_rate(device: torch.device, n: int, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square matrix multiply (best of 5)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = side_by_side({"mm": lambda: a @ b}, device, 5)["mm"]
    return 2 * n**3 / seconds


def fresh_compile(enabled: bool) -> None:
    """Forget earlier compiled graphs: every row compiles its own net for its own size, as a user restoring
    one size does (after a second size of the same forward, dynamo compiles a slower dynamic-shape graph)."""
    if enabled:
        torch._dynamo.reset()


def bench_sampling(args: argparse.Namespace, device: torch.device, gemm: float) -> list[dict[str, Any]]:
    settings = net_settings(args.net)["nafnet"]
    rows = []
    for variant in ("pixel", "latent"):
        ours, original = noise_nets(settings, variant, device)
        for size in args.sizes:
            fresh_compile(args.compile)
            prepared = prepare_for_inference(
                copy.deepcopy(ours), device, compile=args.compile, channels_last=not args.no_channels_last
            )
            # eager: our network without prepare_for_inference
            nets = {"original": original, "eager": ours, "prepared": prepared}
            rows.append(time_sampling(args, device, gemm, variant, size, nets))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def sampler_overhead(
    sde: IRSDE, mu: Tensor, x_t: Tensor, device: torch.device, repeats: int
) -> dict[str, float]:
    """Seconds per step the samplers spend outside the network: each run with a free (zero) noise model."""
    zero = torch.zeros_like(mu)

    def free_model(x: Tensor, m: Tensor, t: Tensor) -> Tensor:
        return zero

    fns = {
        s: lambda s=s: sample(sde, free_model, mu, x_T=x_t, sampler=s) for s in ("ode", "sde", "posterior")
    }
    return {k: v / sde.T for k, v in side_by_side(fns, device, repeats).items()}


def time_sampling(
    args: argparse.Namespace,
    device: torch.device,
    gemm: float,
    variant: str,
    size: int,
    nets: dict[str, nn.Module],
) -> dict[str, Any]:
    """`args.steps` ODE steps of each net at one image size (latent nets: the latent of that image)."""
    side = size if variant == "pixel" else size // LATENT_FACTOR
    channels = 3 if variant == "pixel" else LATENT_CHANNELS
    gen = torch.Generator().manual_seed(1)
    mu = torch.rand(1, channels, side, side, generator=gen).to(device)
    x_t = (mu + 0.2 * torch.randn(mu.shape, generator=gen).to(device)).contiguous()
    t = torch.full((1,), args.steps, device=device)
    sde = IRSDE(max_sigma=50, T=args.steps, schedule="cosine").to(device)
    outs: dict[str, Tensor] = {}

    def original() -> None:
        with autocast(device, "fp32"):  # the yardstick is always plain fp32
            outs["original"] = original_reverse_ode(sde, nets["original"], mu, x_t)

    def eager() -> None:
        outs["eager"] = sample(sde, nets["eager"], mu, x_T=x_t, sampler="ode")

    def prepared() -> None:
        outs["prepared"] = sample(sde, nets["prepared"], mu, x_T=x_t, sampler="ode")

    with autocast(device, args.precision):
        compile_s = timed(prepared, device) if args.compile else None
        seconds = side_by_side(
            {"original": original, "eager": eager, "prepared": prepared}, device, args.repeats
        )
    with torch.no_grad():
        flops = fn_flops(lambda: nets["eager"](x_t, x_t, t))
    per_step = {k: v / args.steps for k, v in seconds.items()}
    return {
        "variant": variant,
        "image": size,
        "net_input": side,
        "steps": args.steps,
        "s_per_step": per_step,
        "speedup_vs_original": seconds["original"] / seconds["prepared"],
        "eager_vs_original": seconds["original"] / seconds["eager"],
        "sampler_overhead_s_per_step": sampler_overhead(sde, mu, x_t, device, args.repeats),
        "rel_err_vs_original": rel_err(outs["prepared"], outs["original"]),
        "params": parameters(nets["eager"]),
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops / per_step["prepared"] / 1e9,
        "fraction_of_gemm": flops / per_step["prepared"] / gemm,
        "original_fraction_of_gemm": flops / per_step["original"] / gemm,
        "compile_s": compile_s,
    }


def reference_optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    """The optimiser as the original trains with it: torch's AdamW or lion-pytorch's Lion, default loops."""
    if name == "lion":
        from lion_pytorch import Lion

        return Lion(params, lr=1e-6)
    return torch.optim.AdamW(params, lr=1e-5)


def project_optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    """The optimiser as this project's training builds it (`optim.fused` auto: fused AdamW, multi-tensor Lion)."""
    lr, betas = (1e-6, [0.9, 0.99]) if name == "lion" else (1e-5, [0.9, 0.999])
    return build_optimizer(params, {"name": name, "lr": lr, "betas": betas, "weight_decay": 0.01})


def train_step_fn(
    net: nn.Module,
    batch: int,
    channels: int,
    side: int,
    device: torch.device,
    precision: str = "fp32",
    optimizer: torch.optim.Optimizer | None = None,
) -> Callable[[], None]:
    """One diffusion training step (the IR-SDE loss, backward, optimiser step) on fixed random data."""
    sde = IRSDE(max_sigma=50, T=100).to(device)
    optimizer = optimizer or torch.optim.AdamW(net.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(2)
    x0, mu, noise = (torch.rand(batch, channels, side, side, generator=gen).to(device) for _ in range(3))
    t = torch.randint(1, 101, (batch,), generator=gen).to(device)
    cl = next(p for p in net.parameters() if p.dim() == 4 and p.shape[-1] == 3).is_contiguous() is False
    if cl:
        x0, mu, noise = (v.contiguous(memory_format=torch.channels_last) for v in (x0, mu, noise))

    def step() -> None:
        xt = sde.forward_sample(x0, mu, t, noise)
        with autocast(device, precision):
            noise_pred = net(xt, mu, t)
        loss = sde.training_loss(noise_pred.float(), xt, x0, mu, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def ae_step_fn(
    ae: UNetAutoencoder,
    batch: int,
    side: int,
    device: torch.device,
    optimizer: torch.optim.Optimizer | None = None,
) -> Callable[[], None]:
    """One autoencoder-stage step: both reconstruction losses of stage 1, backward, optimiser step."""
    optimizer = optimizer or torch.optim.AdamW(ae.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(3)
    lq, gt = (torch.rand(batch, 3, side, side, generator=gen).to(device) for _ in range(2))

    def step() -> None:
        latent_lq, hidden = ae.encode(lq)
        latent_gt, _ = ae.encode(gt)
        loss = (ae.decode(latent_lq, hidden) - lq).abs().mean() + (
            ae.decode(latent_gt, hidden) - gt
        ).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_training(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Images/s of one training step: the original (its network, the optimiser's default per-parameter loop)
    against this project's (channels-last, `build_optimizer` as training builds it), per optimiser."""
    settings = net_settings(args.net)
    rows = []
    cases = [("pixel", 3, args.train_crop), ("latent", LATENT_CHANNELS, args.train_crop // LATENT_FACTOR * 2)]
    for optim_name in args.train_optims:
        for variant, channels, side in cases:
            ours, original = noise_nets(settings["nafnet"], variant, device)
            fast = copy.deepcopy(ours).train().to(memory_format=torch.channels_last)
            if args.compile:
                fast.compile()
            original, ours = original.train(), ours.train()
            batch = (args.train_batch, channels, side, device)
            fns = {
                "original": train_step_fn(
                    original, *batch, optimizer=reference_optimizer(optim_name, original.parameters())
                ),
                "eager": train_step_fn(
                    ours, *batch, optimizer=reference_optimizer(optim_name, ours.parameters())
                ),
                "optimised": train_step_fn(
                    fast, *batch, args.precision, optimizer=project_optimizer(optim_name, fast.parameters())
                ),
            }
            rows.append(
                training_row(f"diffusion ({variant})", optim_name, side, args, fns, device, "original")
            )
        ae = autoencoder(settings["autoencoder"], device, subpixel=False).train()
        fast_ae = copy.deepcopy(ae).use_subpixel_upsampling().to(memory_format=torch.channels_last)
        side = args.train_crop
        fns = {
            "eager": ae_step_fn(
                ae, args.train_batch, side, device, reference_optimizer(optim_name, ae.parameters())
            ),
            "optimised": ae_step_fn(
                fast_ae, args.train_batch, side, device, project_optimizer(optim_name, fast_ae.parameters())
            ),
        }
        rows.append(training_row("autoencoder", optim_name, side, args, fns, device, "eager"))
    rows.append(bench_echo(args, device, settings))
    return rows


def bench_echo(args: argparse.Namespace, device: torch.device, settings: dict[str, Any]) -> dict[str, Any]:
    """A latent stage-2 step with its frozen-autoencoder encoding, plain against `sde.echo`: not the same maths
    (each encoded pair trains `echo` steps), so reported beside the same-maths ratios, not among them."""
    side = args.train_crop * 2  # the latent training case's crops: latents of train_crop // 4
    batch = args.echo * max(1, args.train_batch // args.echo)  # a whole number of loads per step
    ae = autoencoder(settings["autoencoder"], device)
    fns = {}
    for name, echo in (("original", 1), ("optimised", args.echo)):
        ours, original = noise_nets(settings["nafnet"], "latent", device)
        net = ours.train().to(memory_format=torch.channels_last) if echo > 1 else original.train()
        optimizer = (reference_optimizer if echo == 1 else project_optimizer)("adamw", net.parameters())
        fns[name] = echoed_step_fn(ae, net, optimizer, batch, side, echo, device)
    row = training_row(
        f"latent stage 2 with encoding, echo {args.echo}",
        "adamw",
        side,
        args,
        fns,
        device,
        "original",
        batch,
        same_maths=False,
    )
    row["echo"] = args.echo
    return row


def echoed_step_fn(
    ae: UNetAutoencoder,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: int,
    side: int,
    echo: int,
    device: torch.device,
) -> Callable[[], None]:
    """Encode `batch / echo` new LQ/GT crops with the frozen autoencoder, train on the last `echo` loads."""
    sde = IRSDE(max_sigma=50, T=100).to(device)
    gen = torch.Generator().manual_seed(5)
    lq, gt = (torch.rand(batch // echo, 3, side, side, generator=gen).to(device) for _ in range(2))
    loads: deque[tuple[Tensor, Tensor]] = deque(maxlen=echo)

    def step() -> None:
        with torch.no_grad():
            loads.append((ae.encode(lq)[0], ae.encode(gt)[0]))
        mu, x0 = (torch.cat(parts) for parts in zip(*loads, strict=True))
        t = torch.randint(1, 101, (mu.shape[0],), device=device)
        xt = sde.forward_sample(x0, mu, t, torch.randn_like(x0))
        loss = sde.training_loss(net(xt, mu, t), xt, x0, mu, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_row(
    stage: str,
    optim_name: str,
    side: int,
    args: argparse.Namespace,
    fns: dict[str, Callable[[], None]],
    device: torch.device,
    baseline: str,
    batch: int | None = None,
    same_maths: bool = True,
) -> dict[str, Any]:
    seconds = side_by_side(fns, device, args.repeats)
    batch = batch or args.train_batch
    row = {
        "stage": stage,
        "optimizer": optim_name,
        "batch": batch,
        "crop": side,
        "images_per_s": {k: batch / v for k, v in seconds.items()},
        "speedup_vs_original": seconds[baseline] / seconds["optimised"],
    }
    if same_maths:  # for the GEMM-rate ceiling (`main`)
        row |= {"baseline_s": seconds[baseline], "gflop_per_step": fn_flops(fns["optimised"]) / 1e9}
    print(json.dumps(row), flush=True)
    return row


def bench_autoencoder(args: argparse.Namespace, device: torch.device, gemm: float) -> dict[str, Any]:
    """Encode + decode at full resolution: the original form, eager NCHW, against `prepare_for_inference` (with
    sub-pixel upsampling convs). `gemm_bound`: the speedup if the prepared FLOPs all ran at the GEMM rate."""
    ae = autoencoder(net_settings(args.net)["autoencoder"], device, subpixel=False)
    fresh_compile(args.compile)
    prepared = prepare_for_inference(
        copy.deepcopy(ae).use_subpixel_upsampling(), device, compile=args.compile
    )
    x = torch.rand(1, 3, args.ae_size, args.ae_size, generator=torch.Generator().manual_seed(4)).to(device)
    outs: dict[str, Tensor] = {}

    def round_trip(name: str, net: UNetAutoencoder) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad(), autocast(device, "fp32" if name == "eager" else args.precision):
                outs[name] = net.decode(*net.encode(x))

        return go

    seconds = side_by_side(
        {"eager": round_trip("eager", ae), "prepared": round_trip("prepared", prepared)}, device, args.repeats
    )
    flops = {name: fn_flops(round_trip(name, net)) for name, net in (("eager", ae), ("prepared", prepared))}
    row = {
        "image": args.ae_size,
        "s": seconds,
        "speedup": seconds["eager"] / seconds["prepared"],
        "gflop": {name: f / 1e9 for name, f in flops.items()},
        "gemm_bound": seconds["eager"] / (flops["prepared"] / gemm),
        "rel_err": rel_err(outs["prepared"], outs["eager"]),
        "params": parameters(ae),
    }
    print(json.dumps(row), flush=True)
    return row


def bench_latent_vs_pixel(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One prepared sampling step at `size` in pixel space and in latent space, same net settings, interleaved."""
    settings = net_settings(args.net)["nafnet"]
    size = args.compare_size
    t = torch.full((1,), 10, device=device)
    fns = {}
    for variant in ("pixel", "latent"):
        fresh_compile(args.compile)
        net = prepare_for_inference(noise_nets(settings, variant, device)[0], device, compile=args.compile)
        side, channels = (size, 3) if variant == "pixel" else (size // LATENT_FACTOR, LATENT_CHANNELS)
        x = torch.rand(1, channels, side, side, device=device)

        def step(n: nn.Module = net, v: Tensor = x) -> None:
            with torch.no_grad(), autocast(device, args.precision):
                n(v, v, t)

        fns[variant] = step
    seconds = side_by_side(fns, device, args.repeats)
    row = {
        "image": size,
        "s_per_step": seconds,
        "latent_speedup_per_step": seconds["pixel"] / seconds["latent"],
    }
    print(json.dumps(row), flush=True)
    return row


def measure_large_images(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Restore photos of each `--large` size through the real command (`large_image.py`: paper autoencoder and
    noise net, random weights, `tile=auto`, 4 GB on CPUs): peak resident memory and wall time, measured."""
    rows = []
    for size in args.large:
        width, height = (int(v) for v in size.split("x"))
        out = args.output.with_name(f"{args.output.name}_large_{size}.json")
        command = [
            sys.executable, str(ROOT / "benchmarks" / "large_image.py"), "--width", str(width),
            "--height", str(height), "--steps", str(args.large_steps), "--device", str(device),
            "--max-memory", "4GB" if device.type == "cpu" else "null", "--out", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"large_image.py {size} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        rows.append(json.loads(out.read_text()))
        print(json.dumps({k: rows[-1][k] for k in ("image", "wall_seconds", "peak_rss_gib")}), flush=True)
    return rows


# ---- main -------------------------------------------------------------------------------------------------------
def autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Speed benchmark ({'quick' if report['args']['quick'] else 'full'})",
        "",
        f"Machine: {m.get('gpu') or m['processor']}, {m['threads']} thread(s), torch {m['torch']}, "
        f"load average at start {m['load_average_at_start'][0]:.1f}. fp32 GEMM: {report['gemm_gflops']:.0f} GFLOP/s "
        "(the better of the start and the end of the run). "
        f"Net `{report['args']['net']}`, precision {report['args']['precision']}, "
        f"compile {report['args']['compile']}.",
        "",
    ]
    if report.get("sampling"):
        lines += sampling_lines(report)
    return "\n".join(lines + other_lines(report))


def sampling_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Sampling (probability-flow ODE), s/step; ratios against the original network + sampler",
        "",
        "| net | image | net input | original | project eager | prepared | speedup | eager vs original "
        "| rel. error | sampler overhead ode / sde | GFLOP/step | achieved GFLOP/s | of GEMM rate (original) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.get("sampling", []):
        s = r["s_per_step"]
        lines.append(
            f"| {r['variant']} | {r['image']} | {r['net_input']} | {s['original']:.3f} | {s['eager']:.3f} | "
            f"{s['prepared']:.3f} | **{r['speedup_vs_original']:.2f}x** | {r['eager_vs_original']:.2f}x | "
            f"{r['rel_err_vs_original']:.1e} | {r['sampler_overhead_s_per_step']['ode'] * 1e3:.1f} / "
            f"{r['sampler_overhead_s_per_step']['sde'] * 1e3:.1f} ms | "
            f"{r['gflop_per_step']:.2f} | {r['achieved_gflops']:.1f} | {r['fraction_of_gemm']:.1%} "
            f"({r['original_fraction_of_gemm']:.1%}) |"
        )
    lines += ["", f"Parameters: {report['sampling'][0]['params'] / 1e6:.2f} M (pixel net).", ""]
    return lines


def other_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if report.get("training"):
        lines += [
            "## Training steps, images/s; ratio of the project's optimised step (channels-last, fused optimiser)"
            " against the original (AE: plain eager)",
            "",
            "| stage | optimiser | batch x crop | original | project eager | optimised | speedup | GFLOP/step "
            "| GEMM-rate ceiling |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["training"]:
            ips = {k: f"{v:.2f}" for k, v in r["images_per_s"].items()}
            flop = f"{r['gflop_per_step']:.1f} | {r['gemm_bound']:.2f}x" if "gemm_bound" in r else "- | -"
            lines.append(
                f"| {r['stage']} | {r.get('optimizer', 'adamw')} | {r['batch']} x {r['crop']} | "
                f"{ips.get('original', '-')} | {ips.get('eager', '-')} | {ips['optimised']} | "
                f"**{r['speedup_vs_original']:.2f}x** | {flop} |"
            )
        lines += [
            "",
            "GEMM-rate ceiling: the speedup if every FLOP of the optimised step (forward and backward, counted by "
            "`FlopCounterMode`) ran at the machine's fp32 GEMM rate; no same-FLOP optimisation gets past it.",
            "",
        ]
    if report.get("autoencoder"):
        a = report["autoencoder"]
        lines += [
            "## Autoencoder encode + decode at full resolution",
            "",
            f"{a['image']}x{a['image']}: eager {a['s']['eager']:.2f} s, prepared {a['s']['prepared']:.2f} s: "
            f"**{a['speedup']:.2f}x** (rel. error {a['rel_err']:.1e}, {a['params'] / 1e6:.2f} M parameters).",
            "",
        ]
        if "gflop" in a:
            lines += [
                f"FLOPs: {a['gflop']['eager']:.1f} G eager (upsample, then convolve), {a['gflop']['prepared']:.1f} G "
                f"prepared (sub-pixel upsampling convs). Running every prepared FLOP at the GEMM rate would be "
                f"{a['gemm_bound']:.2f}x the eager time: the ceiling for any same-FLOP speed-up on this machine.",
                "",
            ]
    if report.get("latent_vs_pixel"):
        c = report["latent_vs_pixel"]
        lines += [
            f"## Latent vs pixel sampling at {c['image']}x{c['image']} (same net settings, prepared)",
            "",
            f"Per step: pixel {c['s_per_step']['pixel']:.2f} s, latent {c['s_per_step']['latent']:.3f} s: "
            f"**{c['latent_speedup_per_step']:.1f}x** (the latent run also encodes and decodes once).",
            "",
        ]
    if report.get("large_images"):
        lines += [
            "## Large photos through `python -m refusion_pl.restore` (paper autoencoder + paper noise net)",
            "",
            "| image | steps | tile | peak resident memory | wall time |",
            "|---|---|---|---|---|",
        ]
        for g in report["large_images"]:
            tile = g["restore_output"][0].rsplit("tile=", 1)[-1].rstrip(")") if g["restore_output"] else "?"
            lines.append(
                f"| {g['image']} | {g['sample_steps']} | {g['tile']} = {tile} | {g['peak_rss_gib']:.2f} GiB | "
                f"**{g['wall_seconds']:.0f} s** |"
            )
        lines.append("")
    return lines


def save(report: dict[str, Any], output: Path) -> None:
    """Write the JSON and Markdown so far (atomically)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (output.with_suffix(".json"), json.dumps(report, indent=2)),
        (output.with_suffix(".md"), markdown(report) + "\n"),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps: minutes on 2 cores")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--net", default=None, help="conf/net preset (default: small; paper on GPU)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="sampling image sizes")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (= T of the timed SDE)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the prepared nets")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="sections to skip: training autoencoder compare large"
    )
    parser.add_argument(
        "--train-optims",
        nargs="+",
        default=["adamw", "lion"],
        choices=("adamw", "lion"),
        help="training section",
    )
    parser.add_argument("--echo", type=int, default=4, help="sde.echo of the stage-2-with-encoding row")
    parser.add_argument(
        "--large", nargs="+", default=None, help="WIDTHxHEIGHT photos restored for real (large section)"
    )
    parser.add_argument("--large-steps", type=int, default=20, help="sampling steps of the large photos")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.net = args.net or ("paper" if gpu else "small")
    args.sizes = args.sizes or ([64, 128] if args.quick else [256, 512])
    args.steps = args.steps or (3 if args.quick else 10)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.train_crop = 64 if args.quick else 128
    args.train_batch = 2 if args.quick else 4
    args.ae_size = 128 if args.quick else 512
    args.compare_size = 256 if args.quick else 1024
    args.large = args.large or (["600x400"] if args.quick else ["3000x2000", "6000x4000"])
    suffix = "_quick" if args.quick else ""
    suffix += "" if args.device == "cpu" else f"_{args.device.replace(':', '')}"
    args.output = args.output or RESULTS / f"bench{suffix}"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }
    report["machine"] = machine(device)
    started = time.perf_counter()
    report["gemm_gflops"] = gemm_rate(device, 1024 if args.quick else 2048) / 1e9
    print(f"GEMM {report['gemm_gflops']:.0f} GFLOP/s", flush=True)
    if "sampling" not in args.skip:
        report["sampling"] = bench_sampling(args, device, report["gemm_gflops"] * 1e9)
        save(report, args.output)  # a later section that fails or times out loses only itself
    if "training" not in args.skip:
        report["training"] = bench_training(args, device)
        save(report, args.output)
    if "autoencoder" not in args.skip:
        report["autoencoder"] = bench_autoencoder(args, device, report["gemm_gflops"] * 1e9)
        save(report, args.output)
    if "compare" not in args.skip:
        report["latent_vs_pixel"] = bench_latent_vs_pixel(args, device)
        save(report, args.output)
    if "large" not in args.skip:
        report["large_images"] = measure_large_images(args, device)
        save(report, args.output)
    report["gemm_gflops_end"] = gemm_rate(device, 1024 if args.quick else 2048) / 1e9
    report["gemm_gflops"] = gemm = max(
        report["gemm_gflops"], report["gemm_gflops_end"]
    )  # the less loaded one
    for row in report.get("training", []):
        if "gflop_per_step" in row:  # the speedup if the optimised step's FLOPs all ran at the GEMM rate
            row["gemm_bound"] = row["baseline_s"] / (row["gflop_per_step"] / gemm)
    if report.get("autoencoder"):
        ae_row = report["autoencoder"]
        ae_row["gemm_bound"] = ae_row["s"]["eager"] / (ae_row["gflop"]["prepared"] / gemm)
    for row in report.get("sampling", []):
        flop = row["gflop_per_step"]
        row["fraction_of_gemm"] = flop / row["s_per_step"]["prepared"] / gemm
        row["original_fraction_of_gemm"] = flop / row["s_per_step"]["original"] / gemm
    report["wall_s"] = time.perf_counter() - started
    save(report, args.output)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
