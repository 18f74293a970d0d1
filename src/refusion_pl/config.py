"""Typed schemas for the Hydra configs, and start-up validation with errors that name the key.

The schema is the first entry of ``conf/train.yaml``'s defaults list (``train_schema``, registered in Hydra's
ConfigStore), so Hydra checks types, unknown keys and the choice-like keys (Enums) while it composes the config:
before a run directory exists, before a sweep launches a job, and under ``--cfg job`` too. Range checks that a
type cannot express (``sde.steps=0``) run in the :class:`ValidateConfig` Hydra callback, which Hydra calls before
it creates the run directory (``on_run_start``) and before the sweeper starts (``on_multirun_start``: every job of
a grid sweep is composed and checked). ``validate_config`` runs the same checks for in-process callers.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException


# Choice-like keys. Member names equal their values: OmegaConf reads a YAML or command-line string by name.
class Schedule(StrEnum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class Sampler(StrEnum):
    """Mirrors refusion_pl.sampling.SAMPLERS (mr_*: exponential-integrator ODE/SDE solvers, order 1 or 2)."""

    sde = "sde"
    ode = "ode"
    posterior = "posterior"
    mr_ode1 = "mr_ode1"
    mr_ode2 = "mr_ode2"
    mr_sde1 = "mr_sde1"
    mr_sde2 = "mr_sde2"


class Spacing(StrEnum):
    """Mirrors refusion_pl.sampling.SPACINGS: the timesteps fewer-step sampling visits."""

    ou = "ou"
    uniform = "uniform"
    logsnr = "logsnr"


class Prediction(StrEnum):
    """Mirrors refusion_pl.models.PREDICTIONS (this module stays importable without torch)."""

    noise = "noise"
    x0 = "x0"


class SDELoss(StrEnum):
    """Mirrors refusion_pl.sde.LOSSES: match the reverse-SDE mean (the paper) or the implied clean image."""

    mean = "mean"
    x0 = "x0"


class LossNorm(StrEnum):
    """Mirrors refusion_pl.sde.LOSS_NORMS: absolute (the original's) or squared errors."""

    l1 = "l1"
    l2 = "l2"


class DecodeMode(StrEnum):
    """Mirrors refusion_pl.models.unet_ae.DECODE_MODES: how a restored latent becomes an image."""

    direct = "direct"
    residual = "residual"


class AutoencoderInit(StrEnum):
    """Mirrors refusion_pl.lit.autoencoder.AUTOENCODER_INITS."""

    signal_preserving = "signal_preserving"
    default = "default"


class OptimizerName(StrEnum):
    lion = "lion"
    adamw = "adamw"
    adam = "adam"


class LRSchedulerName(StrEnum):
    cosine = "cosine"
    multistep = "multistep"
    constant = "constant"


class ModelName(StrEnum):
    latent = "latent"
    pixel = "pixel"


class NetworkVariant(StrEnum):
    """ConditionalNAFNet variants: each model's plain network, stereo (pixel) and bokeh (latent)."""

    pixel = "pixel"
    latent = "latent"
    stereo = "stereo"
    bokeh = "bokeh"


class Stage(StrEnum):
    auto = "auto"
    autoencoder = "autoencoder"
    diffusion = "diffusion"


def _values(choices: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in choices)


SCHEDULES = _values(Schedule)
PREDICTIONS = _values(Prediction)
# Mirrors refusion_pl.models.nafnet.PHOTO_STATS: the net.nafnet.photo_stats settings besides false (and true: means)
PHOTO_STATS: tuple[str, ...] = ("means", "means_and_peaks", "peak")


def photo_stats_setting(setting: object) -> str | None:
    """A ``photo_stats`` setting by name (false/null: ``off``, true: ``means``), None if unknown."""
    if setting is None or setting is False:
        return "off"
    if setting is True:
        return "means"
    return setting if isinstance(setting, str) and setting in PHOTO_STATS else None


SDE_LOSSES = _values(SDELoss)
LOSS_NORMS = _values(LossNorm)
SAMPLERS = _values(Sampler)
SPACINGS = _values(Spacing)
AUTOENCODER_INITS = _values(AutoencoderInit)
OPTIMIZERS = _values(OptimizerName)
LR_SCHEDULERS = _values(LRSchedulerName)
MODELS = _values(ModelName)
STAGES = _values(Stage)
# ConditionalNAFNet variants each model can train (null: the model's plain network), and the data layout each
# variant needs: stereo networks take two views, bokeh networks lens scalars.
NETWORK_VARIANTS = {"pixel": ("pixel", "stereo"), "latent": ("latent", "bokeh")}
VARIANT_LAYOUTS = {"stereo": "stereo", "bokeh": "bokeh"}
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
SCHEMA_NAME = "train_schema"  # the first entry of conf/train.yaml's defaults list


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and what is allowed."""


@dataclass
class SDEConfig:
    max_sigma: float = 50.0
    steps: int = 100
    schedule: Schedule = Schedule.cosine
    eps: float = 0.005
    sampler: Sampler = Sampler.sde
    sample_steps: int | None = None
    spacing: Spacing = Spacing.ou
    prediction: Prediction = Prediction.noise
    loss: SDELoss = SDELoss.mean
    loss_norm: LossNorm = LossNorm.l1
    image_loss: float = 0.0
    mean_path: float = 0.0
    icnr: bool = False
    echo: int = 1


@dataclass
class TaskConfig:
    name: str = "shadow"
    channels: int = 3
    scale: int = 1
    crop_border: int = 0
    degradation: dict[str, Any] = field(default_factory=dict)
    mild_severity: list[float] = field(default_factory=lambda: [0.0, 1.0])
    # The demos' val.shift_jitter: off where lifting whole regions needs one grid phase (shadow).
    shift_jitter: bool = True
    # The latent demo's data.dark_prob: darkened scenes, so dark content is not taken for the degradation.
    dark_prob: float = 0.1
    # The latent demo's data.dark_gain: how much darkened scenes are darkened (low light: white points of 0.6-1).
    dark_gain: list[float] = field(default_factory=lambda: [0.15, 0.6])
    # The latent demo's data.dark_object_prob: dark objects painted into the clean photos (shadow: not every dark
    # blurred region is a shadow).
    dark_object_prob: float = 0.0
    # The latent demo's net.nafnet.photo_stats (low light: the photo's peak, so a dusk scene is not lifted).
    photo_stats: Any = False


@dataclass
class ModelConfig:
    name: ModelName = ModelName.latent


@dataclass
class NAFNetConfig:
    width: int = 32
    enc_blk_nums: list[int] = field(default_factory=lambda: [1, 1, 1, 4])
    middle_blk_num: int = 1
    dec_blk_nums: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    variant: NetworkVariant | None = (
        None  # null = the model's own; stereo (pixel) or bokeh (latent), set by the task
    )
    # false, means (or true), means_and_peaks or peak: condition on the whole input photo's statistics (README,
    # "Photo statistics")
    photo_stats: Any = False


@dataclass
class AutoencoderNetConfig:
    ch: int = 8
    ch_mult: list[int] = field(default_factory=lambda: [4, 8, 8, 16])
    embed_dim: int = 8
    decode_mode: DecodeMode = DecodeMode.direct


@dataclass
class NetConfig:
    nafnet: NAFNetConfig = field(default_factory=NAFNetConfig)
    autoencoder: AutoencoderNetConfig = field(default_factory=AutoencoderNetConfig)


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.lion
    lr: float = 4e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    lr_scale: float = 1.0
    fused: bool | None = None


@dataclass
class SchedulerConfig:
    name: LRSchedulerName = LRSchedulerName.cosine
    eta_min: float = 1e-7
    warmup_steps: int = 0
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.5


@dataclass
class AutoencoderStageConfig:
    ckpt: str | None = None
    max_steps: int = 2000
    optim: dict[str, Any] | None = None
    lr: float = 4e-5
    batch_size: int = 4
    crop_size: int = 128
    swap_prob: float = 0.5
    dark_prob: float | None = None  # null: data.dark_prob
    reg_weight: float = 0.001
    init: AutoencoderInit = AutoencoderInit.signal_preserving
    skip_dropout: float = 0.0
    skip_dropout_until: float | None = None
    dead_latent_db: float = 0.5
    latent_noise: float = 0.0
    residual_loss: float = 0.0


@dataclass
class ValConfig:
    num_images: int = 2
    sample_steps: int | None = None
    sampler: Sampler = Sampler.sde
    spacing: Spacing = Spacing.ou
    edge_margin: int = 16
    samples: int = 1
    temperature: float = 1.0
    shift_jitter: bool = False
    channels_last: bool = True
    compile: bool = False


@dataclass
class FigureConfig:
    enabled: bool = True
    num_images: int = 4
    sample_steps: int | None = None


@dataclass
class PathsConfig:
    root_dir: str = "."
    log_dir: str = "outputs"
    output_dir: str = "outputs/run"


@dataclass
class TrainConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    net: NetConfig = field(default_factory=NetConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    autoencoder: AutoencoderStageConfig = field(default_factory=AutoencoderStageConfig)
    val: ValConfig = field(default_factory=ValConfig)
    figure: FigureConfig = field(default_factory=FigureConfig)
    stage: Stage = Stage.auto
    seed: int = 42
    ckpt_path: str | None = None
    resume_strict: bool = True
    optimized_metric: str = "val/psnr"


def register_schemas() -> None:
    """Store the schema in Hydra's ConfigStore as ``train_schema``, which ``conf/train.yaml`` extends."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainConfig)


def _schema_error(err: OmegaConfBaseException) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    return ConfigError(
        f"invalid config key '{key}': {(getattr(err, 'msg', None) or str(err)).splitlines()[0]}"
    )


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _check_range(key: str, value: Any, low: float | None, high: float | None, closed: bool = True) -> None:
    ok = True
    if low is not None:
        ok &= value >= low if closed else value > low
    if high is not None:
        ok &= value <= high if closed else value < high
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        brackets = "[]" if closed else "()"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {brackets[0]}{lo}, {hi}{brackets[1]}")


def check_sde(sde: Any, prefix: str = "sde") -> None:
    """Range checks for an SDE node (also used on the settings stored in a checkpoint)."""
    _check_range(f"{prefix}.steps", sde.steps, 1, None)
    _check_range(f"{prefix}.max_sigma", sde.max_sigma, 0, None)
    _check_range(f"{prefix}.eps", sde.eps, 0, 1, closed=False)
    _check_choice(f"{prefix}.schedule", sde.schedule, SCHEDULES)
    _check_choice(f"{prefix}.sampler", sde.sampler, SAMPLERS)
    _check_choice(f"{prefix}.spacing", getattr(sde, "spacing", "ou"), SPACINGS)
    _check_choice(f"{prefix}.prediction", sde.prediction, PREDICTIONS)
    _check_choice(f"{prefix}.loss", getattr(sde, "loss", "mean"), SDE_LOSSES)
    _check_choice(f"{prefix}.loss_norm", getattr(sde, "loss_norm", "l1"), LOSS_NORMS)
    _check_range(f"{prefix}.image_loss", getattr(sde, "image_loss", 0.0), 0, None)
    _check_range(f"{prefix}.echo", getattr(sde, "echo", 1), 1, None)
    if sde.sample_steps is not None:
        _check_range(f"{prefix}.sample_steps", sde.sample_steps, 1, sde.steps)


def _check_values(cfg: Any) -> None:
    check_sde(cfg.sde)
    _check_choice("model", cfg.model.name, MODELS)
    _check_choice("stage", cfg.stage, STAGES)
    _check_choice("optim", cfg.optim.name, OPTIMIZERS)
    _check_choice("scheduler", cfg.scheduler.name, LR_SCHEDULERS)
    _check_choice("val.sampler", cfg.val.sampler, SAMPLERS)
    _check_choice("val.spacing", cfg.val.spacing, SPACINGS)
    _check_range("optim.lr", cfg.optim.lr, 0, None, closed=False)
    _check_range("autoencoder.lr", cfg.autoencoder.lr, 0, None, closed=False)
    _check_range("optim.lr_scale", cfg.optim.lr_scale, 0, None, closed=False)
    _check_range("optim.weight_decay", cfg.optim.weight_decay, 0, None)
    _check_range("task.channels", cfg.task.channels, 1, None)
    _check_range("task.scale", cfg.task.scale, 1, None)
    _check_range("autoencoder.swap_prob", cfg.autoencoder.swap_prob, 0, 1)
    _check_range("autoencoder.skip_dropout", cfg.autoencoder.skip_dropout, 0, 1)
    _check_range("autoencoder.latent_noise", cfg.autoencoder.latent_noise, 0, 10)
    _check_range("autoencoder.residual_loss", cfg.autoencoder.residual_loss, 0, None)
    if cfg.autoencoder.skip_dropout_until is not None:
        _check_range("autoencoder.skip_dropout_until", cfg.autoencoder.skip_dropout_until, 0, 1)
    _check_choice("autoencoder.init", cfg.autoencoder.init, AUTOENCODER_INITS)
    ema = cfg.callbacks.get("ema")
    if ema is not None and ema.get("decay") is not None:
        _check_range("callbacks.ema.decay", ema.decay, 0, 1)
    checkpoint = cfg.callbacks.get("model_checkpoint")
    if checkpoint is not None and checkpoint.get("every_n_train_steps") is not None:
        _check_range(
            "callbacks.model_checkpoint.every_n_train_steps", checkpoint.every_n_train_steps, 1, None
        )
    _check_range("val.num_images", cfg.val.num_images, 0, None)
    _check_range("val.edge_margin", cfg.val.edge_margin, 0, None)
    _check_range("val.samples", cfg.val.samples, 1, None)
    _check_range("val.temperature", cfg.val.temperature, 0, None)
    _check_range("autoencoder.max_steps", cfg.autoencoder.max_steps, 1, None)
    for key in ("val.sample_steps", "figure.sample_steps"):
        value = OmegaConf.select(cfg, key)
        if value is not None:
            _check_range(key, value, 1, cfg.sde.steps)
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas={list(cfg.optim.betas)} must hold two numbers")
    net = cfg.net.nafnet
    if len(net.enc_blk_nums) != len(net.dec_blk_nums):
        raise ConfigError(
            f"net.nafnet.enc_blk_nums ({len(net.enc_blk_nums)} levels) and net.nafnet.dec_blk_nums "
            f"({len(net.dec_blk_nums)} levels) must have the same length"
        )
    _check_variant(cfg)
    _check_echo(cfg)
    if cfg.model.name == "latent" and cfg.stage == "diffusion" and not cfg.autoencoder.ckpt:
        raise ConfigError(
            "stage=diffusion with model=latent needs a trained autoencoder: set autoencoder.ckpt=PATH "
            "(or run stage=auto to train both stages)"
        )


def _check_echo(cfg: Any) -> None:
    """`sde.echo` splits each training batch into `echo` loads: the batch size must divide, and the decoded
    image loss needs every image's hidden maps, which echoed latents no longer carry."""
    echo = int(cfg.sde.echo)
    if echo > 1 and cfg.data.batch_size % echo:
        raise ConfigError(
            f"sde.echo={echo} must divide data.batch_size={cfg.data.batch_size}: each step loads "
            "batch_size / echo new pairs and reuses the rest"
        )
    if echo > 1 and cfg.sde.image_loss > 0:
        raise ConfigError(f"sde.echo={echo} cannot be combined with sde.image_loss={cfg.sde.image_loss}")


def _check_variant(cfg: Any) -> None:
    """The network variant must fit the model, and stereo / bokeh networks need their data layouts."""
    variant = str(cfg.net.nafnet.variant or cfg.model.name)
    allowed = NETWORK_VARIANTS[str(cfg.model.name)]
    if variant not in allowed:
        hint = (
            f" (task={cfg.task.name} picks its own model: drop the model override)"
            if variant in VARIANT_LAYOUTS
            else ""
        )
        raise ConfigError(
            f"net.nafnet.variant={variant!r} does not fit model={cfg.model.name}, which takes: "
            f"{', '.join(allowed)}{hint}"
        )
    photo_stats = cfg.net.nafnet.photo_stats
    for key, value in (("net.nafnet.photo_stats", photo_stats), ("task.photo_stats", cfg.task.photo_stats)):
        if photo_stats_setting(value) is None:
            raise ConfigError(
                f"{key}={value!r} is not supported; choose one of: false, {', '.join(PHOTO_STATS)}"
            )
    if photo_stats and variant == "bokeh":
        raise ConfigError(
            f"net.nafnet.photo_stats={str(photo_stats).lower()} does not combine with task={cfg.task.name}'s "
            "bokeh network: its per-image scalars are the lens settings"
        )
    data_photo_stats = (cfg.data or {}).get("photo_stats", False)
    if photo_stats_setting(data_photo_stats) != photo_stats_setting(photo_stats):
        raise ConfigError(
            f"data.photo_stats={data_photo_stats} and net.nafnet.photo_stats={photo_stats} disagree: "
            "the network takes the photo statistics only the data computes (set net.nafnet.photo_stats alone)"
        )
    layout = (cfg.data or {}).get("layout")
    needed = VARIANT_LAYOUTS.get(variant)
    if layout is None:
        return
    if needed is not None and layout != needed:
        raise ConfigError(
            f"task={cfg.task.name} (net.nafnet.variant={variant}) needs data={needed}; "
            f"data.layout={layout!r} does not hold {needed} samples"
        )
    if needed is None and layout in VARIANT_LAYOUTS.values():
        task = {"stereo": "stereo_sr", "bokeh": "bokeh"}[layout]
        raise ConfigError(f"data.layout={layout!r} holds {layout} samples, which only task={task} trains")


def _import_target(target: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"_target_ '{target}' cannot be imported: {err}") from err


def check_target_keys(node: Any, key: str) -> None:
    """Fail early, naming the key, when a ``_target_`` node holds an argument its class does not take."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    params = inspect.signature(_import_target(node._target_)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [name for name in params if name != "self"]
    for name in node:
        if str(name).startswith("_"):
            continue
        if name not in params:
            raise ConfigError(
                f"unknown config key '{key}.{name}' for {node._target_}; allowed keys: {', '.join(allowed)}"
            )


def validate_config(cfg: DictConfig) -> DictConfig:
    """Check ``cfg`` against the schema and value ranges; return it unchanged or raise ConfigError."""
    schema = OmegaConf.structured(TrainConfig)
    # Merged as plain values: a typed config can hold keys its schema lacks (Hydra's `+key=value` adds them).
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    try:
        merged = OmegaConf.merge(schema, plain)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:
        raise _schema_error(err) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"config key(s) without a value (???): {', '.join(missing)}; set them")
    _check_values(merged)
    check_target_keys(cfg.get("data"), "data")
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or node is False:
            continue  # switched off
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(
                f"callbacks.{name} must be a node with a _target_ (a Callback class), or null to switch it off"
            )
        check_target_keys(node, f"callbacks.{name}")
    return cfg


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_job_overrides(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job a grid sweep will launch, expanded as Hydra's BasicSweeper expands them;
    None for sweepers that draw their values while they run (Optuna)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides([*params, *config.hydra.overrides.task])
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def task_config(config: DictConfig) -> DictConfig:
    """``config`` without its ``hydra`` node, as the task function will see it. The run directory does not
    exist yet (``paths.output_dir`` is Hydra's runtime value), so a placeholder stands for it."""
    task = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(task):
        task.pop("hydra", None)
        if "paths" in task:
            task.paths.output_dir = "<run dir>"
    return task


def _exit_with(message: str) -> NoReturn:
    # SystemExit, not an exception: Hydra turns a callback's exceptions into warnings and goes on.
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)  # what the task function's own config errors exit with


def _validate_or_exit(config: DictConfig, context: str = "") -> None:
    try:
        validate_config(task_config(config))
    except ConfigError as err:
        _exit_with(f"{context}{err}")


class ValidateConfig(Callback):
    """Hydra callback (``hydra.callbacks.validate_config``): the checks types cannot express, before Hydra makes
    any directory.

    ``on_run_start`` comes before Hydra creates the run directory; ``on_multirun_start`` before the sweeper is
    built (it creates the sweep directory): every job of a grid sweep is composed as the launcher will compose it
    and checked, so one bad value launches no job. Optuna draws its values during the search; the fixed part of
    its config is checked here, each trial again when it starts.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        jobs = sweep_job_overrides(config)
        if jobs is None:
            _validate_or_exit(config)
            return
        loader = GlobalHydra.instance().config_loader()
        for num, overrides in enumerate(jobs):
            context = f"sweep job {num} ({' '.join(overrides)}): "
            try:
                job = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
            except (HydraException, OmegaConfBaseException) as err:
                cause = str(err.__cause__ or "").strip()
                _exit_with(f"{context}{err}" + (f"\n{cause}" if cause else ""))
            _validate_or_exit(job, context)


register_schemas()
