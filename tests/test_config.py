"""Configs compose, every default is written once, the reference's numbers hold, bad input is refused clearly."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from gan.config import Config, to_config
from gan.errors import GanError
from gan.models import build_discriminator, build_generator
from helpers.runs import CONF, compose_config

GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir() if group.is_dir()
    for option in group.glob("*.yaml")
)
GLOBAL_PRESETS = {"experiment", "sweep", "debug"}  # option files that set keys anywhere (@package _global_)


def test_every_group_has_options():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"model", "optim", "data", "device", "train", "eval", "wandb", "experiment", "debug", "sweep"} <= groups


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_validates(group, option):
    added = "+" if group == "sweep" else ""  # presets outside the defaults list are added: +sweep=lr
    cfg = to_config(compose_config(f"{added}{group}={option}"))
    assert isinstance(cfg, Config)


def test_the_composed_defaults_are_the_schema_defaults(monkeypatch):
    """The YAML files restate nothing, so the dataclasses in gan/config.py are the one place a default lives."""
    monkeypatch.setenv("DATA_ROOT", "/data")
    composed = dataclasses.asdict(to_config(compose_config()))
    schema = dataclasses.asdict(Config())
    assert schema["data"]["root"] == "${oc.env:DATA_ROOT,./data}"
    schema["data"]["root"] = "/data"
    assert composed == schema


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, o in GROUP_OPTIONS if g not in GLOBAL_PRESETS])
def test_an_option_file_holds_only_what_it_changes(group, option):
    values = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
    defaults = dataclasses.asdict(Config())[group]
    restated = {key: value for key, value in values.items() if defaults.get(key) == value}
    assert not restated, f"conf/{group}/{option}.yaml restates schema defaults: {restated}"


def test_presets_hold_only_what_they_change():
    defaults = dataclasses.asdict(Config())
    for group, option in GROUP_OPTIONS:
        if group not in GLOBAL_PRESETS - {"sweep"}:
            continue
        values = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
        for section, entries in values.items():
            if section in ("defaults", "hydra") or not isinstance(entries, dict):
                assert section in ("defaults", "hydra") or defaults[section] != entries, f"{group}/{option}: {section}"
                continue
            restated = {k: v for k, v in entries.items() if defaults[section].get(k) == v}
            assert not restated, f"conf/{group}/{option}.yaml restates schema defaults under {section}: {restated}"


def test_defaults_keep_the_reference_readmes_run_length_and_latent_size():
    cfg = to_config(compose_config())
    assert (cfg.epochs, cfg.model.latent_dim) == (50, 100)
    # Twice the reference's batch of 64, with the learning rate scaled by about sqrt(2): see the README's ablations.
    assert cfg.data.batch_size == 128
    assert cfg.optim.generator_lr == cfg.optim.discriminator_lr == pytest.approx(3e-4)
    assert cfg.device.name == "auto"


def test_base_model_is_exactly_the_reference_architecture():
    cfg = to_config(compose_config("model=base"))
    g_layers = [(m.in_features, m.out_features) for m in build_generator(cfg.model).modules() if hasattr(m, "in_features")]
    d_layers = [(m.in_features, m.out_features) for m in build_discriminator(cfg.model).modules() if hasattr(m, "in_features")]
    assert g_layers == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert d_layers == [(784, 1024), (1024, 512), (512, 256), (256, 1)]
    g_acts = [type(m).__name__ for m in build_generator(cfg.model).net if not hasattr(m, "in_features")]
    assert g_acts == ["ReLU", "ReLU", "ReLU", "Tanh"]
    leaky = [m.negative_slope for m in build_discriminator(cfg.model).net if type(m).__name__ == "LeakyReLU"]
    assert leaky == [0.2, 0.2, 0.2]


def test_small_and_large_scale_the_widths():
    base = to_config(compose_config("model=base")).model
    for option, factor in (("small", 0.5), ("large", 2)):
        model = to_config(compose_config(f"model={option}")).model
        assert model.g_hidden == [int(w * factor) for w in base.g_hidden]
        assert model.d_hidden == [int(w * factor) for w in base.d_hidden]


def test_seed_replica_is_the_reference_recipe():
    cfg = to_config(compose_config("experiment=seed_replica"))
    assert cfg.optim.betas == [0.9, 0.999]
    assert cfg.optim.lr == pytest.approx(2e-4) and cfg.optim.lr_g is None and cfg.optim.lr_d is None
    assert (cfg.train.d_updates, cfg.train.label_smoothing, cfg.train.r1_gamma) == ("separate", 0.0, 0.0)
    assert cfg.model.d_dropout == 0.0
    assert (cfg.model.g_hidden, cfg.model.d_hidden) == ([256, 512, 1024], [1024, 512, 256])
    assert (cfg.epochs, cfg.data.batch_size) == (50, 64)


def test_batch64_restores_the_batch_settings_most_ablations_ran_with():
    cfg = to_config(compose_config("experiment=batch64", "train.r1_gamma=0.3"))
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.train.r1_batch, cfg.train.r1_gamma) == (64, pytest.approx(2e-4), None, 0.3)
    assert cfg.train == dataclasses.replace(to_config(compose_config()).train, r1_batch=None, r1_gamma=0.3)


def test_debug_preset_is_a_quick_cpu_run_and_yields_to_the_command_line():
    cfg = to_config(compose_config("debug=default"))
    assert (cfg.device.name, cfg.epochs, cfg.data.subset, cfg.wandb.mode, cfg.eval.enabled) == ("cpu", 1, 1280, "disabled", False)
    assert to_config(compose_config("debug=default", "device=auto", "epochs=3")).device.name == "auto"


def test_command_line_overrides_apply():
    cfg = to_config(compose_config("optim.lr=0.0001", "epochs=100", "optim.lr_d=0.0004"))
    assert cfg.epochs == 100
    assert cfg.optim.generator_lr == pytest.approx(1e-4)
    assert cfg.optim.discriminator_lr == pytest.approx(4e-4)


def test_data_root_follows_the_environment(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/somewhere/else")
    assert to_config(compose_config()).data.root == "/somewhere/else"
    assert to_config(compose_config("checkpoint=x.pt", config_name="sample")).data_root == "/somewhere/else"
    monkeypatch.delenv("DATA_ROOT")
    assert to_config(compose_config()).data.root == "./data"


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_config("optim.lrr=0.1")


def test_wrong_type_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError), match="epochs"):
        compose_config("epochs=many")


def test_unknown_group_option_names_the_choices():
    with pytest.raises(ConfigCompositionException, match="tpu"):
        compose_config("device=tpu")


def test_typo_in_a_yaml_option_fails_at_composition(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "typo.yaml").write_text("g_hiden: [256, 512, 1024]\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError), match="g_hiden"):
            compose(config_name="config", overrides=["model=typo"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=0", "optim.lr must be positive"),
        ("optim.lr=-0.001", "optim.lr must be positive"),
        ("optim.lr_g=-1", "optim.lr_g must be positive"),
        ("data.batch_size=0", "data.batch_size must be positive"),
        ("epochs=-1", "epochs must be 0 or more"),
        ("optim.betas=[0.5]", "optim.betas must be two numbers"),
        ("model.d_dropout=1.5", "model.d_dropout"),
        ("train.precision=fp8", "train.precision must be one of fp32, tf32, bf16, fp16, got 'fp8'"),
        ("train.d_updates=thrice", "train.d_updates"),
        ("train.r1_gamma=-1", "train.r1_gamma must be 0 or more"),
        ("train.r1_every=0", "train.r1_every must be positive"),
        ("train.compile_mode=fastest", "train.compile_mode"),
        ("wandb.mode=sometimes", "wandb.mode must be one of"),
    ],
)
def test_out_of_range_values_fail_with_one_sentence(override, message):
    with pytest.raises(GanError, match=message):
        to_config(compose_config(override))


def test_default_recipe_and_seed_replica_differ_only_where_documented():
    default, replica = to_config(compose_config()), to_config(compose_config("experiment=seed_replica"))
    assert (default.train.label_smoothing, default.train.r1_gamma, default.train.d_updates, default.model.d_dropout) == (0.1, 2.0, "joint", 0.0)
    assert (replica.train.label_smoothing, replica.train.r1_gamma, replica.train.d_updates, replica.model.d_dropout) == (0.0, 0.0, "separate", 0.0)
