"""Config composition and start-up validation: every group composes, bad values fail naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict

from refusion_pl.config import CONFIG_DIR, ConfigError, validate_config

GROUPS = {
    name: sorted(p.stem for p in (CONFIG_DIR / name).glob("*.yaml"))
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
    with pytest.raises(ConfigError, match=r"sde\.sampler='mr_ode3'.*mr_ode1, mr_ode2, mr_sde1, mr_sde2"):
        validate_config(compose_config("sde.sampler=mr_ode3"))


@pytest.mark.parametrize("experiment", ["smoke", "demo"])
def test_size_presets_do_not_pin_choices(compose_config, experiment):
    cfg = compose_config(f"experiment={experiment}", "task=derain", "model=pixel", "optim=adamw")
    assert cfg.task.name == "derain" and cfg.model.name == "pixel" and cfg.optim.name == "adamw"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sde.steps=0", "sde.steps"),
        ("sde.eps=1.5", "sde.eps"),
        ("sde.max_sigma=-1", "sde.max_sigma"),
        ("sde.schedule=quadratic", "sde.schedule"),
        ("sde.sampler=ddim", "sde.sampler"),
        ("sde.prediction=eps", "sde.prediction"),
        ("sde.sample_steps=500", "sde.sample_steps"),
        ("optim.lr=0", "optim.lr"),
        ("stage=finetune", "stage"),
        ("model.name=vae", "model"),
    ],
)
def test_bad_values_name_the_key(compose_config, override, key):
    cfg = compose_config(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_bad_type_names_the_key(compose_config):
    cfg = compose_config("sde.steps=many")
    with pytest.raises(ConfigError, match="steps"):
        validate_config(cfg)


def test_unknown_group_option_lists_the_choices(compose_config):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as info:
        compose_config("optim=adam_w")
    assert "adam_w" in str(info.value) and "adamw" in str(info.value)


def test_typo_in_a_config_file_names_the_key(compose_config):
    cfg = compose_config()
    with open_dict(cfg):
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
    }  # fmt: skip
    assert dict(bokeh.net.autoencoder) == {"ch": 64, "ch_mult": [1, 2, 4], "embed_dim": 4}
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
    ],
)
def test_stereo_and_bokeh_mismatches_name_the_keys(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(*overrides))
