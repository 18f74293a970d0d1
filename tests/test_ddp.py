"""Data-parallel training on the CPU: Lightning DDP (``trainer=ddp``) with the gloo backend, two processes.

Lightning's own launcher starts the second process by re-running the driver script, as it re-runs
``python -m refusion_pl.train`` for users. Both ranks must see different batches yet end with identical
weights (gradients are all-reduced), and the checkpoint written under DDP must resume in a single process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.lit import DiffusionModule
from refusion_pl.train import train
from tests.conftest import FAST_SMOKE

OVERRIDES = [*FAST_SMOKE, "optim=adamw", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]

# Runs train() like the entry point does, plus a callback that saves what each rank saw and ended with.
DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import lightning.pytorch as pl
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import refusion_pl.train as entry
    from refusion_pl.config import CONFIG_DIR

    out = Path(sys.argv[1])

    class DumpRank(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            if not hasattr(self, "first"):
                self.first = batch["gt"].clone()

        def on_train_end(self, trainer, module):
            state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
            info = {"net": state, "first_batch": self.first, "world_size": trainer.world_size}
            torch.save(info, out / f"rank{trainer.global_rank}.pt")

    build = entry.build_callbacks
    entry.build_callbacks = lambda *a, **k: [*build(*a, **k), DumpRank()]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=sys.argv[2:])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "run")
    entry.train(cfg)
    """
)


def test_ddp_gloo_two_processes_then_single_process_resume(compose_config, tmp_path):
    script = tmp_path / "ddp_driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_GLOBAL_SEED": "42"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), *OVERRIDES],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert not torch.equal(rank0["first_batch"], rank1["first_batch"])  # each rank had its own data ...
    assert rank0["net"].keys() == rank1["net"].keys()
    for key, value in rank0["net"].items():  # ... and yet the same weights: gradients were all-reduced
        assert torch.equal(value, rank1["net"][key]), key

    ckpt = tmp_path / "run" / "diffusion" / "checkpoints" / "last.ckpt"
    assert safe_torch_load(ckpt)["global_step"] == 2
    module = DiffusionModule.from_checkpoint(ckpt)  # loads strictly in a plain process
    for key, value in module.net.state_dict().items():
        assert torch.equal(value, rank0["net"][key]), key

    single = [o for o in OVERRIDES if not o.startswith(("trainer=", "trainer.devices", "trainer.max_steps"))]
    resumed = tmp_path / "single"
    train(compose_config(*single, "trainer.max_steps=4", f"ckpt_path={ckpt}", output_dir=resumed))
    assert safe_torch_load(resumed / "diffusion" / "checkpoints" / "last.ckpt")["global_step"] == 4
