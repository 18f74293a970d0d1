"""Config composition and start-up validation: every group composes, bad values fail naming the key."""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

from refusion_pl.config import CONFIG_DIR, ConfigError, ModelName, Sampler, validate_config

GROUPS = {
    name: sorted(
        p.stem for p in (CONFIG_DIR / name).glob("*.yaml") if not p.stem.startswith("_")
    )  # _base: shared
    for name in ("task", "model", "net", "optim", "scheduler", "data", "trainer", "logger", "experiment")
}


def test_every_group_has_options():
    for group, options in GROUPS.items():
        assert options, f"conf/{group} is empty"
    assert {"shadow", "dehaze", "derain", "deblur", "denoise", "sr", "inpaint", "lowlight"} <= set(
        GROUPS["task"]
    )
    assert {"smoke", "demo", "paper_shadow", "paper_dehaze"} <= set(GROUPS["experiment"])


@pytest.mark.parametrize(
    "group", ["task", "model", "net", "optim", "scheduler", "data", "trainer", "logger", "experiment"]
)
def test_each_option_composes_and_validates(compose_config, group):
    # stereo and bokeh data hold samples only their own tasks train (task=stereo_sr / task=bokeh pick them)
    own_task = {("data", "stereo"): ["task=stereo_sr"], ("data", "bokeh"): ["task=bokeh"]}
    for option in GROUPS[group]:
        cfg = compose_config(f"{group}={option}", *own_task.get((group, option), []))
        validate_config(cfg)


def test_defaults(compose_config):
    cfg = compose_config()
    assert cfg.task.name == "shadow" and cfg.model.name == "latent"
    assert cfg.sde.steps == 100 and cfg.sde.max_sigma == 50 and cfg.sde.schedule == "cosine"
    assert cfg.sde.prediction == "noise"
    assert cfg.optim.name == "lion" and cfg.scheduler.name == "cosine"
    assert cfg.data.root is None  # bundled photos


def test_paper_presets_hold_published_settings(compose_config):
    shadow = compose_config("experiment=paper_shadow")
    assert shadow.model.name == "pixel"
    assert list(shadow.net.nafnet.enc_blk_nums) == [1, 1, 1, 28] and shadow.net.nafnet.width == 64
    assert shadow.optim.name == "lion" and shadow.optim.lr == pytest.approx(4e-5)
    assert (
        shadow.trainer.max_steps == 700_000 and shadow.data.crop_size == 128 and shadow.data.batch_size == 4
    )
    dehaze = compose_config("experiment=paper_dehaze")
    assert dehaze.model.name == "latent" and list(dehaze.net.autoencoder.ch_mult) == [4, 8, 8, 16]
    assert dehaze.autoencoder.max_steps == 300_000 and dehaze.trainer.max_steps == 400_000
    assert shadow.sde.prediction == dehaze.sde.prediction == "noise"  # the published target


def test_prediction_choices_match_the_library():
    from refusion_pl.config import PREDICTIONS as CONFIG_PREDICTIONS
    from refusion_pl.models import PREDICTIONS

    assert CONFIG_PREDICTIONS == PREDICTIONS


def test_sampler_choices_match_the_library(compose_config):
    from refusion_pl.config import SAMPLERS as CONFIG_SAMPLERS
    from refusion_pl.sampling import SAMPLERS

    assert CONFIG_SAMPLERS == SAMPLERS
    validate_config(compose_config("sde.sampler=mr_ode2", "sde.sample_steps=10", "val.sampler=mr_sde2"))
    message = composition_error(compose_config, "sde.sampler=mr_ode3")
    assert (
        "sde.sampler" in message
        and "'mr_ode3'" in message
        and "mr_ode1, mr_ode2, mr_sde1, mr_sde2" in message
    )


def test_spacing_choices_match_the_library_and_bad_ones_name_the_key(compose_config):
    from refusion_pl.config import SPACINGS as CONFIG_SPACINGS
    from refusion_pl.sampling import SPACINGS

    assert CONFIG_SPACINGS == SPACINGS
    cfg = validate_config(compose_config("sde.spacing=logsnr", "sde.sample_steps=10"))
    assert cfg.sde.spacing == cfg.val.spacing == "logsnr"  # validation samples with the same spacing
    assert compose_config().sde.spacing == "ou"  # the default is unchanged
    for key in ("sde.spacing", "val.spacing"):
        message = composition_error(compose_config, f"{key}=even")
        assert key in message and "'even'" in message and "ou, uniform, logsnr" in message, message


@pytest.mark.parametrize("experiment", ["smoke", "demo"])
def test_size_presets_do_not_pin_choices(compose_config, experiment):
    cfg = compose_config(f"experiment={experiment}", "task=derain", "model=pixel", "optim=adamw")
    assert cfg.task.name == "derain" and cfg.model.name == "pixel" and cfg.optim.name == "adamw"


def composition_error(compose_config, *overrides: str) -> str:
    """The message Hydra prints when composing fails (the error and the OmegaConf error under it)."""
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(*overrides)
    return f"{info.value}\n{info.value.__cause__}"


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("sde.schedule=quadratic", "sde.schedule", "cosine, linear, constant"),
        ("sde.sampler=ddim", "sde.sampler", "posterior"),
        ("sde.prediction=eps", "sde.prediction", "noise, x0"),
        ("val.sampler=ddim", "val.sampler", "mr_sde2"),
        ("stage=finetune", "stage", "auto, autoencoder, diffusion"),
        ("model.name=vae", "model.name", "latent, pixel"),
        ("optim.name=sgd", "optim.name", "lion, adamw"),
        ("scheduler.name=step", "scheduler.name", "cosine, multistep, constant"),
        ("autoencoder.init=kaiming", "autoencoder.init", "signal_preserving, default"),
        ("net.nafnet.variant=mono", "net.nafnet.variant", "stereo, bokeh"),
    ],
)
def test_choice_keys_fail_while_composing(compose_config, override, key, allowed):
    """Enums in the schema: Hydra refuses a bad choice while composing (``--cfg job`` too), before anything runs."""
    message = composition_error(compose_config, override)
    value = override.split("=")[1]
    assert key in message and f"'{value}'" in message and allowed in message, message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sde.steps=many", r"'many' of type 'str' could not be converted to Integer"),
        ("sde.stpes=10", r"Key 'stpes' not in 'SDEConfig'"),
        ("seed=abc", r"'abc' of type 'str' could not be converted to Integer"),
    ],
)
def test_types_and_unknown_keys_fail_while_composing(compose_config, override, message):
    text = composition_error(compose_config, override)
    assert re.search(message, text) and override.split("=")[0] in text, text


def test_unknown_group_option_lists_the_choices(compose_config):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as info:
        compose_config("optim=adam_w")
    assert "adam_w" in str(info.value) and "adamw" in str(info.value)


def test_a_key_added_with_plus_is_refused_by_the_schema(compose_config):
    """``+sde.stpes=10`` is how Hydra adds keys, even to typed nodes; the start-up check refuses it."""
    cfg = compose_config("+sde.stpes=10")
    with pytest.raises(ConfigError, match=r"'sde\.stpes'"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sde.steps=0", "sde.steps"),
        ("sde.eps=1.5", "sde.eps"),
        ("sde.max_sigma=-1", "sde.max_sigma"),
        ("sde.sample_steps=500", "sde.sample_steps"),
        ("optim.lr=0", "optim.lr"),
        ("autoencoder.skip_dropout=1.5", "autoencoder.skip_dropout"),
        ("sde.echo=0", "sde.echo"),
        ("val.edge_margin=-1", "val.edge_margin"),
        ("val.samples=0", "val.samples"),
        ("val.temperature=-0.5", "val.temperature"),
        ("autoencoder.residual_loss=-1", "autoencoder.residual_loss"),
    ],
)
def test_out_of_range_values_name_the_key(compose_config, override, key):
    cfg = compose_config(override)
    with pytest.raises(ConfigError, match=re.escape(override)):
        validate_config(cfg)


def test_composed_choices_are_enums_and_reach_modules_as_strings(compose_config):
    from refusion_pl.train import _plain

    cfg = compose_config("sde.sampler=ode", "model=pixel")
    assert cfg.sde.sampler is Sampler.ode and cfg.model.name is ModelName.pixel
    plain = _plain(cfg.sde)
    assert plain["sampler"] == "ode" and type(plain["sampler"]) is str  # checkpoints hold no config classes
    assert type(_plain(cfg.model.name)) is str


def test_typo_in_a_config_file_names_the_key(tmp_path):
    """A typo'd key in a YAML file fails while Hydra composes, naming the key and the file's group."""
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    with (conf / "sde" / "default.yaml").open("a") as handle:
        handle.write("stpes: 10\n")
    GlobalHydra.instance().clear()
    try:
        with (
            initialize_config_dir(config_dir=str(conf), version_base="1.3"),
            pytest.raises(ConfigCompositionException) as info,
        ):
            compose("train")
    finally:
        GlobalHydra.instance().clear()
    assert "stpes" in f"{info.value} {info.value.__cause__}"


def test_typo_in_an_untyped_config_names_the_key(compose_config):
    """In-process callers may hand ``train`` a plain config: validate_config merges the schema over it."""
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config()))
    cfg.sde.stpes = 10
    with pytest.raises(ConfigError, match="stpes"):
        validate_config(cfg)


def test_unknown_data_argument_names_the_key(compose_config):
    cfg = compose_config()
    with open_dict(cfg):
        cfg.data.crop_sise = 64
    with pytest.raises(ConfigError, match=r"data\.crop_sise"):
        validate_config(cfg)


def test_latent_diffusion_stage_needs_an_autoencoder(compose_config):
    cfg = compose_config("stage=diffusion")
    with pytest.raises(ConfigError, match=r"autoencoder\.ckpt"):
        validate_config(cfg)


def test_stereo_and_bokeh_tasks_pick_their_model_data_and_network(compose_config):
    stereo = compose_config("task=stereo_sr")
    assert (
        stereo.model.name == "pixel"
        and stereo.data.layout == "stereo"
        and stereo.net.nafnet.variant == "stereo"
    )
    assert stereo.task.scale == 4 and stereo.data.scale == 4
    bokeh = compose_config("task=bokeh", "net=paper")
    assert (
        bokeh.model.name == "latent" and bokeh.data.layout == "bokeh" and bokeh.net.nafnet.variant == "bokeh"
    )
    # net=paper for bokeh: the published bokeh sizes, not the shadow model's
    assert dict(bokeh.net.nafnet) == {
        "width": 64, "enc_blk_nums": [2, 2, 4, 8], "middle_blk_num": 12, "dec_blk_nums": [2, 2, 2, 2], "variant": "bokeh",
        "photo_stats": False,
    }  # fmt: skip
    assert dict(bokeh.net.autoencoder) == {
        "ch": 64,
        "ch_mult": [1, 2, 4],
        "embed_dim": 4,
        "decode_mode": "direct",
    }
    assert list(compose_config("net=paper").net.nafnet.enc_blk_nums) == [1, 1, 1, 28]
    for cfg in (stereo, bokeh):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=stereo_sr", "model=latent"], r"net\.nafnet\.variant='stereo' does not fit model=latent"),
        (["task=bokeh", "model=pixel"], r"net\.nafnet\.variant='bokeh' does not fit model=pixel"),
        (["task=stereo_sr", "data=ntire"], r"task=stereo_sr .*needs data=stereo; data\.layout='ntire'"),
        (
            ["task=shadow", "data=bokeh"],
            r"data\.layout='bokeh' holds bokeh samples, which only task=bokeh trains",
        ),
        (["task=bokeh", "net.nafnet.photo_stats=true"], r"net\.nafnet\.photo_stats=true does not combine"),
        (
            ["net.nafnet.photo_stats=peaks"],
            r"net\.nafnet\.photo_stats='peaks' is not supported.*means_and_peaks",
        ),
        (
            ["task.photo_stats=peaks"],
            r"task\.photo_stats='peaks' is not supported.*means_and_peaks",
        ),
        (
            ["net.nafnet.photo_stats=means_and_peaks", "data.photo_stats=means"],
            r"data\.photo_stats=means and net\.nafnet\.photo_stats=means_and_peaks disagree",
        ),
        (
            ["net.nafnet.photo_stats=true", "data.photo_stats=false"],
            r"data\.photo_stats=False and net\.nafnet",
        ),
    ],
)
def test_stereo_and_bokeh_mismatches_name_the_keys(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(*overrides))


def run_train_app(monkeypatch, cwd, *args: str) -> tuple[list[float], int | str | None]:
    """Hydra's own entry machinery in-process (compose, callbacks, sweeper, launcher) around a stand-in task
    that records each job it is given; returns (max_sigma of each job run, exit code)."""
    jobs: list[float] = []

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
    def task(cfg: DictConfig) -> None:
        jobs.append(cfg.sde.max_sigma)

    monkeypatch.setattr(sys, "argv", ["train", *args])
    monkeypatch.chdir(cwd)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    GlobalHydra.instance().clear()
    code = None
    try:
        task()
    except SystemExit as stop:
        code = stop.code
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:] = handlers
        root.setLevel(level)
    return jobs, code


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["sde.steps=0"], "sde.steps=0"),  # a range: the ValidateConfig callback, before run_job
        (["-m", "sde.max_sigma=10,-1"], "sweep job 1 (sde.max_sigma=-1): sde.max_sigma=-1"),  # one bad job
        (["-m", "sde.sampler=sde,ddim"], "sde.sampler=ddim"),  # a choice in a sweep: composing it fails
        (["--cfg", "job", "sde.sampler=ddim"], "'ddim', expected one of [sde, ode"),  # --cfg validates
    ],
)
def test_bad_value_fails_before_any_directory_or_job(monkeypatch, capsys, tmp_path, args, named):
    jobs, code = run_train_app(monkeypatch, tmp_path, *args)
    out = capsys.readouterr()
    assert code not in (None, 0) and jobs == []
    assert named in out.err, out.err
    assert list(tmp_path.iterdir()) == []  # no run directory, no sweep directory


def test_valid_sweep_runs_every_job(monkeypatch, tmp_path):
    """The pre-launch checks compose each job as the launcher does and let a valid sweep through unchanged."""
    jobs, code = run_train_app(
        monkeypatch, tmp_path, "-m", "sde.max_sigma=10,30", f"hydra.sweep.dir={tmp_path}/s"
    )
    assert code is None and jobs == [10.0, 30.0]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["0", "1", "multirun.yaml"]


def test_data_presets_compose_to_their_values_before_sharing_a_base(compose_config):
    """The presets inherit conf/data/_base.yaml now; each composes to exactly what its full file held."""
    snapshot = OmegaConf.to_container(
        OmegaConf.load(Path(__file__).parent / "fixtures/config/data_presets.yaml")
    )
    assert set(snapshot) <= set(GROUPS["data"])
    own_task = {"stereo": ["task=stereo_sr"], "bokeh": ["task=bokeh"]}
    for preset, values in snapshot.items():
        cfg = compose_config(f"data={preset}", *own_task.get(preset, []))
        assert OmegaConf.to_container(cfg.data, resolve=False) == values, preset
    base = OmegaConf.load(CONFIG_DIR / "data" / "_base.yaml")
    assert len(base) > 20 and all(
        len(OmegaConf.load(CONFIG_DIR / "data" / f"{p}.yaml")) < 8 for p in snapshot
    )


def test_data_base_is_not_a_preset(compose_config):
    cfg = compose_config("data=_base")
    with pytest.raises(ConfigError, match=r"data\.layout"):
        validate_config(cfg)


def test_docs_named_in_the_configs_exist():
    """Comments in conf/ point users to docs/*.md: each one must be there."""
    root = CONFIG_DIR.resolve().parent
    named = {
        match
        for path in CONFIG_DIR.rglob("*.yaml")
        for match in re.findall(r"docs/[\w./-]+\.md", path.read_text())
    }
    assert "docs/scale_out.md" in named
    assert [doc for doc in sorted(named) if not (root / doc).is_file()] == []


def test_echo_must_divide_the_batch_and_skips_the_image_loss(compose_config):
    """Each step loads batch_size / sde.echo pairs; the decoded image loss needs every image's hidden maps."""
    validate_config(compose_config("data.batch_size=8", "sde.echo=4"))
    with pytest.raises(ConfigError, match=r"sde\.echo=3 must divide data\.batch_size=8"):
        validate_config(compose_config("data.batch_size=8", "sde.echo=3"))
    with pytest.raises(ConfigError, match=r"sde\.echo=2 cannot be combined with sde\.image_loss=0\.5"):
        validate_config(compose_config("data.batch_size=8", "sde.echo=2", "sde.image_loss=0.5"))


def test_mild_severity_is_a_task_property(compose_config):
    """Low light keeps its mild pairs mild (a half-way blend looks like a dark photo to brighten); other tasks
    blend by any amount; a data override still wins."""
    assert list(compose_config("task=lowlight", "experiment=demo").data.mild_severity) == [0.0, 0.3]
    assert list(compose_config("task=shadow", "experiment=demo").data.mild_severity) == [0.0, 1.0]
    assert list(compose_config("task=lowlight", "data.mild_severity=[0,1]").data.mild_severity) == [0, 1]


def test_shift_jitter_is_on_for_the_demos_but_not_for_shadow(compose_config):
    """Both demos restore with a fresh grid phase every step, except on shadow (its task says so); trained runs by
    default sample as the original; an override still wins."""
    assert compose_config("task=lowlight").val.shift_jitter is False
    assert compose_config("task=lowlight", "experiment=demo").val.shift_jitter is True
    assert compose_config("task=lowlight", "experiment=demo_pixel").val.shift_jitter is True
    assert compose_config("task=shadow", "experiment=demo").val.shift_jitter is False
    assert compose_config("task=shadow", "experiment=demo", "val.shift_jitter=true").val.shift_jitter is True
    validate_config(compose_config("task=denoise", "experiment=demo"))


def test_the_latent_demo_trains_2000_steps_and_shadow_on_more_darkened_scenes(compose_config):
    """Stage 2 of `experiment=demo` runs 2000 steps; its share of darkened scenes is the task's (shadow and low light 0.3, else
    0.1); the pixel demo keeps its own recipe; an override wins; runs outside the demos darken nothing."""
    shadow, lowlight, derain = (
        compose_config(f"task={t}", "experiment=demo") for t in ("shadow", "lowlight", "derain")
    )
    assert shadow.trainer.max_steps == lowlight.trainer.max_steps == 2000
    assert (shadow.data.dark_prob, lowlight.data.dark_prob, derain.data.dark_prob) == (0.3, 0.3, 0.1)
    pixel = compose_config("task=shadow", "experiment=demo_pixel")
    assert pixel.data.dark_prob == 0.1 and pixel.trainer.max_steps == 1500
    assert compose_config("task=shadow", "experiment=demo", "data.dark_prob=0").data.dark_prob == 0
    assert compose_config("task=shadow").data.dark_prob == 0.0
    validate_config(shadow)


def test_the_low_light_demo_knows_the_photos_peak_and_sees_scenes_without_white(compose_config):
    """Low light's demo: the network told the photo's peak, 30% of scenes darkened to white points of 0.6-1;
    other tasks' demos and the pixel demo keep their recipes; an override wins."""
    lowlight = compose_config("task=lowlight", "experiment=demo")
    assert lowlight.net.nafnet.photo_stats == lowlight.data.photo_stats == "peak"
    assert list(lowlight.data.dark_gain) == [0.6, 1.0]
    validate_config(lowlight)
    for others in (("task=shadow", "experiment=demo"), ("task=lowlight", "experiment=demo_pixel")):
        cfg = compose_config(*others)
        assert cfg.net.nafnet.photo_stats is False and cfg.data.photo_stats is False, others
        assert list(cfg.data.dark_gain) == [0.15, 0.6], others
        validate_config(cfg)
    off = compose_config("task=lowlight", "experiment=demo", "net.nafnet.photo_stats=false")
    assert off.data.photo_stats is False
    assert compose_config("task=lowlight").net.nafnet.photo_stats is False  # outside the demos: off


def test_photo_stats_reach_the_data_from_the_network_key(compose_config):
    """One key: the network conditioned on photo means and the data that computes them (off by default)."""
    assert compose_config("task=lowlight").data.photo_stats is False
    cfg = compose_config("task=lowlight", "experiment=demo", "net.nafnet.photo_stats=true")
    assert cfg.data.photo_stats is True and cfg.net.nafnet.photo_stats is True
    validate_config(cfg)
    peaks = compose_config("task=lowlight", "experiment=demo", "net.nafnet.photo_stats=means_and_peaks")
    assert peaks.data.photo_stats == "means_and_peaks"
    validate_config(peaks)


def test_photo_stats_settings_match_the_library():
    from refusion_pl.config import PHOTO_STATS as CONFIG_PHOTO_STATS
    from refusion_pl.models.nafnet import PHOTO_STATS

    assert CONFIG_PHOTO_STATS == PHOTO_STATS
