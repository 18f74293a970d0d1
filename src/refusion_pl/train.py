"""``python -m refusion_pl.train``: train the autoencoder and/or the diffusion stage from a Hydra config.

``train(cfg)`` does the work and returns the final metrics, so tests and sweeps call it in-process; ``main`` is
the thin Hydra entry point that turns known errors into one readable line and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.config import ConfigError, validate_config
from refusion_pl.data import DataError
from refusion_pl.extras import require_extras_for
from refusion_pl.figures import save_restoration_figure
from refusion_pl.files import OutputError, atomic_write_json, atomic_write_text
from refusion_pl.lit import AutoencoderModule, DiffusionModule
from refusion_pl.lit.callbacks import NonFiniteGuard, build_callbacks, has_progress_bar
from refusion_pl.lit.checkpointing import LAST_NAME, AtomicCheckpointIO, RunCheckpoint
from refusion_pl.summary import report_run

log = logging.getLogger("refusion_pl.train")


class TrainingStopped(RuntimeError):
    """Training ended early: a stop signal (the state is in last.ckpt) or a run that kept diverging."""

    def __init__(self, message: str, exit_code: int, status: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status  # "interrupted" (resumable) or "failed"


# ---- planning ------------------------------------------------------------------------------------------------
def plan_stages(cfg: DictConfig) -> list[str]:
    """auto: both stages for latent models, diffusion only for pixel models; otherwise the named stage."""
    if cfg.stage != "auto":
        return [str(cfg.stage)]
    return ["autoencoder", "diffusion"] if cfg.model.name == "latent" else ["diffusion"]


def own_last_checkpoint(output_dir: Path, stage: str) -> Path | None:
    """This run directory's ``last.ckpt`` of ``stage``, if an earlier start of the same run wrote one."""
    own = output_dir / stage / "checkpoints" / LAST_NAME
    return own if own.is_file() else None


def find_last_checkpoint(output_dir: Path, stage: str) -> Path | None:
    """The newest ``last.ckpt`` of ``stage``: in this run directory, else in the newest sibling run."""
    own = own_last_checkpoint(output_dir, stage)
    if own is not None:
        return own
    candidates = sorted(
        output_dir.parent.glob(f"*/{stage}/checkpoints/{LAST_NAME}"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    return candidates[0] if candidates else None


def resolve_resume(cfg: DictConfig, output_dir: Path, stage: str) -> str | None:
    """The checkpoint to resume ``stage`` from.

    ``ckpt_path=null`` resumes this run directory's own ``last.ckpt`` when there is one (a requeued or restarted
    job runs the same command in the same directory), else starts fresh; ``last`` also looks in sibling runs;
    a path is used as given. Another run's checkpoint is refused when its task, model or network differ
    (``RestorationModule.on_load_checkpoint``).
    """
    if cfg.ckpt_path is None:
        found = own_last_checkpoint(output_dir, stage)
    elif cfg.ckpt_path == "last":
        found = find_last_checkpoint(output_dir, stage)
    else:
        found = Path(cfg.ckpt_path)
        if not found.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
    if found is not None:
        log.info("Resuming %s stage from %s", stage, found)
    return str(found) if found else None


# ---- building --------------------------------------------------------------------------------------------------
def _plain(node: Any) -> Any:
    """Plain Python values; the schema's Enums become strings (checkpoints hold no config classes)."""
    if not OmegaConf.is_config(node):
        return str(node) if isinstance(node, Enum) else node
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def _wandb_offline(requested: bool | None) -> bool:
    """Offline unless W&B is configured: WANDB_MODE wins, then an API key (environment or netrc)."""
    if requested is not None:
        return bool(requested)
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun")
    netrc = Path.home() / ".netrc"
    has_netrc_key = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return not (os.environ.get("WANDB_API_KEY") or has_netrc_key)


def sweep_info() -> tuple[str | None, list[str]]:
    """(group, tags) of a multirun job: the sweep directory's name and the job's overrides."""
    if not HydraConfig.initialized():
        return None, []
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(hydra_cfg.sweep.dir).name, overrides
    return None, overrides


def logger_save_dir(node: DictConfig, stage_dir: Path, stage: str) -> str:
    """A logger's ``save_dir`` with the stage appended (each stage logs on its own); null: the stage's directory."""
    configured = node.get("save_dir")
    return str(Path(configured) / stage) if configured else str(stage_dir)


def build_loggers(cfg: DictConfig, stage_dir: Path, stage: str, run_config: dict) -> list[Any]:
    loggers: list[Any] = []
    group, tags = sweep_info()
    for name, node in (cfg.logger or {}).items():
        require_extras_for(hydra.utils.get_class(node._target_), f"logger.{name}")  # tensorboard: its extra
        kwargs: dict[str, Any] = {"save_dir": logger_save_dir(node, stage_dir, stage)}
        if name == "wandb":
            kwargs.update(
                offline=_wandb_offline(node.get("offline")),
                group=node.get("group") or group,
                tags=[str(tag)[:64] for tag in list(node.get("tags") or []) + tags],  # W&B's limit
                name=node.get("name") or f"{stage_dir.parent.name}-{stage}",
                job_type=node.get("job_type") or stage,
                config=run_config,
            )
            os.environ.setdefault("WANDB_SILENT", "true")
            # `config` would clash with instantiate()'s own first argument: build the class directly.
            params = {k: v for k, v in _plain(node).items() if not k.startswith("_")}
            loggers.append(hydra.utils.get_class(node._target_)(**{**params, **kwargs}))
            continue
        loggers.append(hydra.utils.instantiate(node, **kwargs))
    return loggers


def log_final_table(trainer: pl.Trainer, stage: str, metrics: dict[str, float]) -> None:
    """The stage's final metrics as one W&B table, so runs of a sweep compare side by side."""
    rows = [[key, value] for key, value in sorted(metrics.items())]
    for logger in trainer.loggers:
        if hasattr(logger, "log_table"):  # WandbLogger
            logger.log_table(key=f"{stage}/final_metrics", columns=["metric", "value"], data=rows)


def finish_wandb(exit_code: int = 0) -> None:
    """Close the active W&B run: Lightning's WandbLogger would otherwise reuse it for the next stage or for the
    next job of a multirun (all in one process), mixing their logs."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def trainer_plugins() -> list[Any]:
    """Atomic checkpoint writes; under SLURM, Lightning's own requeue handler is replaced by RunCheckpoint's
    stop signals (which save at a step boundary, then requeue)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def validation_interval(requested: int, max_steps: int) -> int:
    """At most ``requested`` steps between validations, spread so that the last one lands on the final step.

    With 800 steps and a requested 500, validating at 500 only would leave the last 300 steps out of the
    best-checkpoint choice; 400 validates at 400 and 800. The largest divisor of ``max_steps`` between half the
    requested interval and the interval itself; the requested interval when there is none.
    """
    requested = max(1, min(requested, max_steps))
    for every in range(requested, math.ceil(requested / 2) - 1, -1):
        if max_steps % every == 0:
            return every
    return requested


def build_trainer(
    cfg: DictConfig, stage: str, stage_dir: Path, max_steps: int, run_config: dict
) -> pl.Trainer:
    loggers = build_loggers(cfg, stage_dir, stage, run_config)
    callbacks = build_callbacks(cfg, stage, stage_dir / "checkpoints", has_logger=bool(loggers))
    # trainer.enable_progress_bar: null follows callbacks.progress_bar; false hides any bar; true shows one
    # (Lightning's default bar when callbacks.progress_bar is null).
    show_progress = cfg.trainer.get("enable_progress_bar")
    if show_progress is False:
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    val_every = validation_interval(int(cfg.trainer.val_check_interval), max_steps)
    return hydra.utils.instantiate(
        cfg.trainer,
        max_steps=max_steps,
        val_check_interval=val_every,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(stage_dir),
        enable_progress_bar=has_progress_bar(callbacks) if show_progress is None else bool(show_progress),
        plugins=trainer_plugins(),
    )


def check_stopped_early(trainer: pl.Trainer, stage: str) -> None:
    """Turn an early end of ``fit`` into an error that says why and how to go on."""
    for callback in trainer.callbacks:
        if isinstance(callback, RunCheckpoint) and callback.stopped_by:
            run_dir = Path(trainer.default_root_dir).parent
            raise TrainingStopped(
                f"{stage} stage stopped by {callback.stopped_by} at step {trainer.global_step}; the state is in "
                f"{callback.last_path}. Resume: the same command with hydra.run.dir={run_dir}",
                exit_code=143,  # 128 + SIGTERM, what a shell reports for a terminated job
                status="interrupted",
            )
        if isinstance(callback, NonFiniteGuard) and callback.failure:
            raise TrainingStopped(f"{stage} stage: {callback.failure}", exit_code=3, status="failed")
    if trainer.interrupted:
        raise KeyboardInterrupt(f"{stage} stage interrupted; resume with ckpt_path=last")


def build_datamodule(cfg: DictConfig, stage: str) -> pl.LightningDataModule:
    if stage == "autoencoder":
        return hydra.utils.instantiate(
            cfg.data,
            batch_size=cfg.autoencoder.batch_size,
            crop_size=cfg.autoencoder.crop_size,
            swap_prob=cfg.autoencoder.swap_prob,
            dark_prob=cfg.data.dark_prob if cfg.autoencoder.dark_prob is None else cfg.autoencoder.dark_prob,
            photo_stats=False,  # the autoencoder takes no photo statistics: none to draw
        )
    # sde.echo: each step loads batch_size / echo new pairs; the module trains on the last `echo` loads
    return hydra.utils.instantiate(cfg.data, batch_size=cfg.data.batch_size // int(cfg.sde.echo))


def build_module(cfg: DictConfig, stage: str, autoencoder_ckpt: str | None) -> pl.LightningModule:
    common = {
        "optim": _plain(cfg.optim),
        "scheduler": _plain(cfg.scheduler),
        "crop_border": int(cfg.task.crop_border),
        "channels": int(cfg.task.channels),
    }
    if stage == "autoencoder":
        stage_cfg = cfg.autoencoder
        # Its own optimiser settings over `optim`; its lr is used as given (optim.lr_scale is for stage 2).
        optim = {**common.pop("optim"), **(_plain(stage_cfg.optim) or {}), "lr_scale": 1.0}
        return AutoencoderModule(
            net=_plain(cfg.net.autoencoder),
            optim=optim,
            lr=float(stage_cfg.lr),
            max_steps=int(stage_cfg.max_steps),
            reg_weight=float(stage_cfg.reg_weight),
            init=_plain(stage_cfg.init),
            skip_dropout=float(stage_cfg.skip_dropout),
            skip_dropout_until=stage_cfg.skip_dropout_until,
            dead_latent_db=float(stage_cfg.dead_latent_db),
            latent_noise=float(stage_cfg.latent_noise),
            residual_loss=float(stage_cfg.residual_loss),
            **common,
        )
    module = DiffusionModule(
        model=_plain(cfg.model.name),
        nafnet=_plain(cfg.net.nafnet),
        autoencoder=_plain(cfg.net.autoencoder) if cfg.model.name == "latent" else None,
        sde=_plain(cfg.sde),
        lr=float(cfg.optim.lr),
        max_steps=int(cfg.trainer.max_steps),
        val=_plain(cfg.val),
        **common,
    )
    if cfg.model.name == "latent":
        if autoencoder_ckpt is None:
            raise ConfigError("the latent diffusion stage needs autoencoder.ckpt=PATH (a stage-1 checkpoint)")
        module.load_autoencoder(autoencoder_ckpt)
    return module


# ---- running -------------------------------------------------------------------------------------------------
def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, float)
    }


def run_stage(
    cfg: DictConfig, stage: str, output_dir: Path, run_config: dict, autoencoder_ckpt: str | None
) -> tuple[dict[str, float], Path, pl.LightningModule, pl.LightningDataModule]:
    """Fit one stage (resuming if asked), validate at the end, and return (metrics, best-or-last ckpt)."""
    stage_dir = output_dir / stage
    max_steps = int(cfg.autoencoder.max_steps if stage == "autoencoder" else cfg.trainer.max_steps)
    datamodule = build_datamodule(cfg, stage)
    module = build_module(cfg, stage, autoencoder_ckpt)
    module.run_config = run_config
    trainer = build_trainer(cfg, stage, stage_dir, max_steps, run_config)
    resume = resolve_resume(cfg, output_dir, stage)  # a finished stage's fit returns at once
    with contextlib.suppress(SIGTERMException):  # RunCheckpoint saved last.ckpt; check_stopped_early says so
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    check_stopped_early(trainer, stage)
    # Lightning's ThroughputMonitor logs the batches and seconds of training so far (validation excluded); with
    # a logger only, and validate() below clears them
    batches, seconds = (trainer.logged_metrics.get(f"train/{name}") for name in ("batches", "time"))
    metrics = _scalars(trainer.callback_metrics)
    if cfg.optimized_metric not in metrics:  # the last validation did not fall on the final step
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics = _scalars(trainer.callback_metrics)
    if batches is not None and seconds:  # the mean over the whole fit
        metrics.setdefault("train/steps_per_sec", float(batches) / float(seconds))
    log_final_table(trainer, stage, metrics)
    finish_wandb()
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb and ckpt_cb.best_model_path else None
    last = stage_dir / "checkpoints" / "last.ckpt"
    return metrics, Path(best) if best else last, module, datamodule


def kept_module(module: DiffusionModule, checkpoint: Path) -> DiffusionModule:
    """``module`` with the weights of its stage's kept checkpoint (the best by validation; loaded in place, its
    settings kept): the run's figure shows what restoring with that checkpoint gives, not the last step's
    weights, which may restore worse."""
    if checkpoint.name == "last.ckpt" or not checkpoint.is_file():
        return module
    module.load_state_dict(safe_torch_load(checkpoint, map_location="cpu")["state_dict"])
    return module


def _write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    """metrics.json, written by rank 0 only (every DDP rank runs ``train``)."""
    if rank_zero_only.rank == 0:
        atomic_write_json(output_dir / "metrics.json", summary)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run the configured stage(s) in one run directory; write config.yaml and metrics.json; return metrics.

    A failure is recorded in metrics.json (status, error, traceback) before it propagates, so a sweep's report
    can list the failed job with its error while the other jobs keep their results.
    """
    output_dir = Path(cfg.paths.output_dir)
    summary: dict[str, Any] = {"status": "running", "stages": {}, "overrides": sweep_info()[1]}
    try:
        return _train(cfg, output_dir, summary)
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        status = err.status if isinstance(err, TrainingStopped) else status
        error = f"{type(err).__name__}: {err}".strip()
        summary.update(status=status, error=error, traceback=traceback.format_exc())
        with contextlib.suppress(OutputError):  # an unwritable run directory is the error being reported
            _write_summary(output_dir, summary)
        finish_wandb(exit_code=1)
        raise


def _train(cfg: DictConfig, output_dir: Path, summary: dict[str, Any]) -> dict[str, float]:
    validate_config(cfg)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {output_dir}: {err.strerror or err}") from err
    if rank_zero_only.rank == 0:
        atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    run_config = _plain(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)
    _write_summary(output_dir, summary)

    metrics: dict[str, float] = {}
    autoencoder_ckpt = cfg.autoencoder.ckpt
    module = datamodule = None
    for stage in plan_stages(cfg):
        metrics, checkpoint, module, datamodule = run_stage(
            cfg, stage, output_dir, run_config, autoencoder_ckpt
        )
        summary["stages"][stage] = {"metrics": metrics, "checkpoint": str(checkpoint)}
        if stage == "autoencoder":
            autoencoder_ckpt = str(checkpoint)
        _write_summary(output_dir, summary)

    if isinstance(module, DiffusionModule) and cfg.figure.enabled and rank_zero_only.rank == 0:
        shown = kept_module(module, checkpoint)
        figure = save_restoration_figure(shown, datamodule, output_dir / "restorations.png", cfg.figure)
        summary["figure"] = str(figure)
    summary.update(status="completed", final=metrics)
    _write_summary(output_dir, summary)
    if rank_zero_only.rank == 0:
        report_run(summary, output_dir, str(cfg.optimized_metric))
    return metrics


def user_error(err: BaseException) -> ConfigError | DataError | OutputError | None:
    """The configuration, data or output error behind ``err`` (Hydra wraps errors raised while instantiating)."""
    while err is not None:
        if isinstance(err, (ConfigError, DataError, OutputError)):
            return err
        err = err.__cause__
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except TrainingStopped as stopped:
        log.error("%s", stopped)
        print(f"stopped: {stopped}", file=sys.stderr)
        if (
            HydraConfig.initialized()
            and HydraConfig.get().mode == RunMode.MULTIRUN
            and stopped.exit_code == 3
        ):
            raise  # a diverged job fails alone; the sweep goes on
        sys.exit(stopped.exit_code)
    except Exception as raised:
        err = user_error(raised)
        if err is None:
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(2)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
