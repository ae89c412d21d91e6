"""Configs compose, carry the reference's numbers, and reject bad input with a clear message."""

from __future__ import annotations

import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import CONF, compose_config
from gan.config import Config, to_config
from gan.errors import GanError
from gan.models import build_discriminator, build_generator

GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir() if group.is_dir()
    for option in group.glob("*.yaml")
)


def test_every_group_has_options():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"model", "optim", "data", "device", "train", "experiment"} <= groups


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_validates(group, option):
    added = "+" if group == "sweep" else ""  # presets outside the defaults list are added: +sweep=lr
    cfg = to_config(compose_config(f"{added}{group}={option}"))
    assert isinstance(cfg, Config)


def test_defaults_match_the_reference_readme():
    cfg = to_config(compose_config())
    assert cfg.epochs == 50
    assert cfg.data.batch_size == 64
    assert cfg.model.latent_dim == 100
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.optim.generator_lr == cfg.optim.discriminator_lr == pytest.approx(2e-4)
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
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.train.d_updates == "separate"
    assert cfg.train.label_smoothing == 0.0
    assert cfg.model.d_dropout == 0.0
    assert cfg.model.g_hidden == [256, 512, 1024]
    assert (cfg.epochs, cfg.data.batch_size) == (50, 64)


def test_command_line_overrides_apply():
    cfg = to_config(compose_config("optim.lr=0.0001", "epochs=100", "optim.lr_d=0.0004"))
    assert cfg.epochs == 100
    assert cfg.optim.generator_lr == pytest.approx(1e-4)
    assert cfg.optim.discriminator_lr == pytest.approx(4e-4)


def test_data_root_follows_the_environment(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/somewhere/else")
    assert to_config(compose_config()).data.root == "/somewhere/else"
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
    (conf / "model" / "typo.yaml").write_text("latent_dim: 100\ng_hiden: [256, 512, 1024]\n")
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
        ("train.precision=fp8", "train.precision"),
        ("train.d_updates=thrice", "train.d_updates"),
        ("train.r1_gamma=-1", "train.r1_gamma must be 0 or more"),
        ("train.compile_mode=fastest", "train.compile_mode"),
    ],
)
def test_out_of_range_values_fail_with_one_sentence(override, message):
    with pytest.raises(GanError, match=message):
        to_config(compose_config(override))


def test_default_recipe_and_seed_replica_differ_only_where_documented():
    default, replica = to_config(compose_config()).train, to_config(compose_config("experiment=seed_replica")).train
    assert (default.label_smoothing, default.r1_gamma, default.d_updates) == (0.1, 1.0, "joint")
    assert (replica.label_smoothing, replica.r1_gamma, replica.d_updates) == (0.0, 0.0, "separate")
