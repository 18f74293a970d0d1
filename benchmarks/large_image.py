"""Restore a 6000x4000 photograph at bounded memory and record peak resident memory and time.

Runs the real command, ``python -m refusion_pl.restore ... tile=auto``, in a child process on a checkpoint with
the paper-size autoencoder ([4, 8, 8, 16], ch 8, embed 8) and the paper noise net (random weights: memory
and time do not depend on training), 20 sampling steps as issue 11 asks, and writes
``benchmarks/results/large_image.json``.

    .venv/bin/python benchmarks/large_image.py                      # CPU: paper nets, 20 steps, 4 GiB budget
    .venv/bin/python benchmarks/large_image.py --net small --steps 2
    .venv/bin/python benchmarks/large_image.py --net paper --device cuda --steps 100
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "large_image.json"


def net_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "net" / f"{name}.yaml").read_text())


def make_checkpoint(path: Path, net: str, ae_net: str, steps: int) -> None:
    """A self-contained latent diffusion checkpoint (random weights) in the training checkpoint format."""
    from refusion_pl.lit.diffusion import DiffusionModule

    torch.manual_seed(0)
    sde = {"max_sigma": 50, "steps": steps, "schedule": "cosine", "eps": 0.005, "sampler": "sde"}
    module = DiffusionModule(
        model="latent",
        nafnet=net_config(net)["nafnet"],
        autoencoder=net_config(ae_net)["autoencoder"],
        sde=sde,
    )
    meta = {"kind": "diffusion", "config": {"task": {"name": "benchmark", "scale": 1}}}
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "refusion_pl": meta},
        path,
    )


def make_photo(path: Path, height: int, width: int) -> None:
    """A real photograph (scikit-image's astronaut) upscaled to ``height x width``, with sensor-like noise."""
    from skimage import data

    from refusion_pl.data.io import write_image

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    big = F.interpolate(photo, size=(height, width), mode="bilinear", align_corners=False)[0]
    big.add_(torch.randn(big.shape, generator=torch.Generator().manual_seed(0)), alpha=0.03).clamp_(0, 1)
    write_image(path, big)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--net", default="paper", help="noise-net size (conf/net/<name>.yaml)")
    parser.add_argument("--autoencoder", default="paper", help="autoencoder size (conf/net/<name>.yaml)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", default="auto")
    parser.add_argument("--max-memory", default="4GB")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_checkpoint(work / "model.ckpt", args.net, args.autoencoder, steps=100)
        make_photo(work / "photo.jpg", args.height, args.width)
        command = [
            sys.executable, "-m", "refusion_pl.restore", f"ckpt={work / 'model.ckpt'}",
            f"input={work / 'photo.jpg'}", f"output={work / 'out'}", f"sample_steps={args.steps}",
            f"device={args.device}", f"tile={args.tile}", f"max_memory={args.max_memory}", "progress=false",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        print(done.stdout + done.stderr)
        if done.returncode != 0:
            sys.exit(done.returncode)
        written = (work / "out" / "photo.jpg").is_file()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB (Linux)
    result = {
        "image": f"{args.width}x{args.height}",
        "autoencoder": net_config(args.autoencoder)["autoencoder"],
        "nafnet": net_config(args.net)["nafnet"],
        "sample_steps": args.steps,
        "device": args.device,
        "tile": args.tile,
        "max_memory": args.max_memory,
        "wall_seconds": round(seconds, 1),
        "peak_rss_gib": round(peak, 3),
        "output_written": written,
        "restore_output": done.stdout.strip().splitlines()[-2:],  # the tile size chosen and restore's summary
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak resident memory {peak:.2f} GiB, wall time {seconds:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
