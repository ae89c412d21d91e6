"""The recipe lives in the YAML groups, once; the schema types and checks it; presets are whole recipes; bad input is one sentence."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from gan.cli import config_error_sentence
from gan.config import GROUP_SCHEMAS, Config, SampleConfig, to_config
from gan.errors import GanError
from helpers.runs import CONF, REPO, compose_config, config

GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir() if group.is_dir()
    for option in group.glob("*.yaml")
)
PRESET_GROUPS = {"experiment", "sweep", "debug"}  # option files that set keys anywhere (@package _global_)
VALUE_OPTIONS = [(group, option) for group, option in GROUP_OPTIONS if group not in PRESET_GROUPS]
# What a recipe is: every value that changes what is trained, as an experiment preset must write it.
RECIPE_KEYS = ({"epochs"} | {f"model.{f.name}" for f in dataclasses.fields(GROUP_SCHEMAS["model"])}
               | {f"optim.{f.name}" for f in dataclasses.fields(GROUP_SCHEMAS["optim"])} | {"data.batch_size"}
               | {f"train.{key}" for key in ("d_updates", "label_smoothing", "ema_decay", "r1_gamma", "r1_every", "r1_batch")})


def option_values(group: str, option: str) -> dict:
    """The values an option file writes itself (its defaults list left out)."""
    values = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
    values.pop("defaults", None)
    return values


def flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_group_has_options():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"model", "optim", "data", "device", "train", "eval", "wandb", "experiment", "debug", "sweep"} <= groups


def test_the_schema_holds_types_and_checks_but_no_values():
    for schema in (Config, SampleConfig, *GROUP_SCHEMAS.values()):
        valued = [f.name for f in dataclasses.fields(schema) if f.default is not MISSING or f.default_factory is not dataclasses.MISSING]
        assert not valued, f"{schema.__name__} holds values for {valued}: they belong in a YAML option file"


def test_the_defaults_are_the_briefs_numbers_written_in_their_groups():
    # The one place the brief's numbers are pinned: the composed default, and the YAML file that writes each.
    cfg = config()
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.epochs, cfg.model.latent_dim) == (0.0002, 64, 50, 100)
    assert (cfg.model.g_hidden, cfg.model.d_hidden) == ([256, 512, 1024], [1024, 512, 256])
    assert cfg.optim.generator_lr == cfg.optim.discriminator_lr == cfg.optim.lr
    assert option_values("optim", "adam")["lr"] == cfg.optim.lr and option_values("data", "mnist")["batch_size"] == cfg.data.batch_size
    assert option_values("model", "base")["g_hidden"] == cfg.model.g_hidden
    assert yaml.safe_load((CONF / "config.yaml").read_text())["epochs"] == cfg.epochs


def test_the_composed_defaults_leave_nothing_missing():
    for name in ("config", "sample"):
        composed = compose_config(*(["checkpoint=x.pt"] if name == "sample" else []), config_name=name)
        assert OmegaConf.missing_keys(composed) == set(), name


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_with_its_own_values(group, option):
    added = "+" if group == "sweep" else ""  # presets outside the defaults list are added: +sweep=lr
    composed_config = compose_config(f"{added}{group}={option}")
    to_config(composed_config)  # and validates
    composed = OmegaConf.to_container(composed_config)
    written = flat(option_values(group, option)) if group in PRESET_GROUPS else flat({group: option_values(group, option)})
    written = {key: value for key, value in written.items() if not key.startswith("hydra.")}
    for key, value in written.items():
        node = composed
        for part in key.split("."):
            node = node[part]
        assert node == value, f"{group}={option}: {key}"


@pytest.mark.parametrize(("group", "option"), VALUE_OPTIONS)
def test_an_option_extending_another_writes_only_what_it_changes(group, option):
    """Every value is written once: small.yaml gives the widths and takes the rest from base.yaml."""
    defaults = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()).get("defaults", [])
    assert defaults[0] == "schema" or (CONF / group / f"{defaults[0]}.yaml").is_file(), "an option names its schema or a sibling it extends"
    if defaults[0] == "schema":
        return
    parent = option_values(group, defaults[0])
    restated = {key: value for key, value in option_values(group, option).items() if parent.get(key) == value}
    assert not restated, f"conf/{group}/{option}.yaml restates {defaults[0]}.yaml: {restated}"


@pytest.mark.parametrize("option", sorted(option for group, option in GROUP_OPTIONS if group == "experiment"))
def test_an_experiment_preset_is_a_whole_recipe_that_stays_put_when_defaults_move(option, tmp_path):
    written = set(flat(option_values("experiment", option)))
    assert RECIPE_KEYS <= written, f"experiment/{option}.yaml leaves {sorted(RECIPE_KEYS - written)} to the defaults"

    moved = tmp_path / "conf"
    shutil.copytree(CONF, moved)
    for group, option_file, key, value in (("optim", "adam", "lr", "0.1"), ("data", "mnist", "batch_size", "32"),
                                           ("train", "default", "r1_gamma", "7.0"), ("model", "base", "d_dropout", "0.4")):
        path = moved / group / f"{option_file}.yaml"
        path.write_text(re.sub(rf"^{key}: .*$", f"{key}: {value}", path.read_text(), flags=re.M))
    with initialize_config_dir(config_dir=str(moved), version_base="1.3"):
        after = compose(config_name="config", overrides=[f"experiment={option}"])
    before = compose_config(f"experiment={option}")
    for key in RECIPE_KEYS:
        assert OmegaConf.select(after, key) == OmegaConf.select(before, key), key


def test_seed_replica_is_the_reference_recipe_and_differs_from_the_default_where_documented():
    default, replica = config(), config("experiment=seed_replica")
    assert replica.optim.betas == [0.9, 0.999] and replica.optim.lr == pytest.approx(2e-4)
    assert (replica.train.d_updates, replica.train.label_smoothing, replica.train.r1_gamma) == ("separate", 0.0, 0.0)
    assert replica.train.r1_gamma_end is None, "the reference has no R1 at all"
    assert (replica.model.d_dropout, replica.epochs, replica.data.batch_size) == (0.0, 50, 64)
    assert (default.train.d_updates, default.train.label_smoothing, default.train.r1_gamma) == ("joint", 0.1, 10.0)
    assert (default.train.r1_gamma_end, default.train.r1_decay_epochs) == (1.0, 20), "gamma 10 falls to 1 over 20 epochs"
    assert default.model.d_mbstd_group == 4 and replica.model.d_mbstd_group == 0
    assert dataclasses.replace(default.model, d_mbstd_group=0) == replica.model and default.data.batch_size == replica.data.batch_size


def test_fast_is_the_batch_128_recipe():
    fast = config("experiment=fast")
    assert (fast.data.batch_size, fast.optim.lr, fast.train.r1_batch, fast.train.r1_gamma) == (128, pytest.approx(3e-4), 32, 2.0)


def test_small_large_and_conditional_extend_the_base_model():
    base = config().model
    for option, factor in (("small", 0.5), ("large", 2)):
        model = config(f"model={option}").model
        assert model.g_hidden == [int(w * factor) for w in base.g_hidden]
        assert model.d_hidden == [int(w * factor) for w in base.d_hidden]
        assert dataclasses.replace(model, g_hidden=base.g_hidden, d_hidden=base.d_hidden) == base
    assert config("model=conditional").model == dataclasses.replace(base, num_classes=10, d_mbstd_group=0)


def test_debug_preset_is_a_quick_cpu_run_and_yields_to_the_command_line():
    cfg = config("debug=default")
    assert (cfg.device.name, cfg.epochs, cfg.wandb.mode, cfg.eval.enabled) == ("cpu", 1, "disabled", False)
    assert cfg.data.subset // cfg.data.batch_size == 10  # "one epoch of 10 steps", as conf/debug/default.yaml and the README say
    assert config("debug=default", "device=auto", "epochs=3").device.name == "auto"


def test_command_line_overrides_apply():
    cfg = config("optim.lr=0.0001", "epochs=100", "optim.lr_d=0.0004")
    assert cfg.epochs == 100
    assert cfg.optim.generator_lr == pytest.approx(1e-4)
    assert cfg.optim.discriminator_lr == pytest.approx(4e-4)


def test_data_root_follows_the_environment(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/somewhere/else")
    assert to_config(compose_config()).data.root == "/somewhere/else"
    assert to_config(compose_config("checkpoint=x.pt", config_name="sample")).data_root == "/somewhere/else"
    monkeypatch.delenv("DATA_ROOT")
    assert to_config(compose_config()).data.root == "./data"


@pytest.mark.parametrize(("override", "key", "known"), [
    ("+optim.lrr=0.1", "optim.lrr", "lr, lr_g, lr_d, betas"),
    ("+lr=0.1", "lr", "epochs, seed, resume"),
    ("+train.r1=2", "train.r1", "d_updates, label_smoothing"),
])
def test_a_key_the_schema_does_not_know_fails_even_when_added_with_plus(override, key, known):
    with pytest.raises(GanError, match=rf"^{re.escape(key)} is not a config key \(known there: {known}"):
        to_config(compose_config(override))


def test_an_unknown_key_without_plus_fails_at_composition():
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
    (conf / "model" / "typo.yaml").write_text("defaults:\n  - base\n  - _self_\ng_hiden: [256, 512, 1024]\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError), match="g_hiden") as raised:
            compose(config_name="config", overrides=["model=typo"])
    sentence = config_error_sentence(raised.value)
    assert sentence.startswith("conf/model/typo.yaml sets model.g_hiden, which is not a config key (known there: "), sentence
    assert "g_hidden" in sentence and "\n" not in sentence


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=0", "optim.lr must be positive"),
        ("optim.lr=-0.001", "optim.lr must be positive"),
        ("optim.lr_g=-1", "optim.lr_g must be positive"),
        ("data.batch_size=0", "data.batch_size must be positive"),
        ("epochs=-1", "epochs must be 1 or more"),
        ("epochs=0", "epochs must be 1 or more"),
        ("optim.betas=[0.5]", "optim.betas must be two numbers"),
        ("model.d_dropout=1.5", "model.d_dropout"),
        ("model.num_classes=-1", "model.num_classes must be 0"),
        ("train.precision=fp8", "train.precision must be one of auto, fp32, tf32, bf16, fp16, got 'fp8'"),
        ("train.d_updates=thrice", "train.d_updates"),
        ("train.r1_gamma=-1", "train.r1_gamma must be 0 or more"),
        ("train.r1_every=0", "train.r1_every must be positive"),
        ("train.r1_gamma_end=-1", "train.r1_gamma_end must be 0 or more"),
        ("train.r1_decay_epochs=0", r"train.r1_gamma_end=1.0 needs train.r1_decay_epochs of 1 or more"),
        ("train.r1_decay_epochs=-2", "train.r1_decay_epochs must be 0 or more"),
        ("train.compile_mode=fastest", "train.compile_mode"),
        ("wandb.mode=sometimes", "wandb.mode must be one of"),
    ],
)
def test_out_of_range_values_fail_with_one_sentence(override, message):
    with pytest.raises(GanError, match=message):
        to_config(compose_config(override))


def test_a_conditional_model_cannot_pack_images():
    with pytest.raises(GanError, match="model.d_pack=2 judges several images as one"):
        config("model=conditional", "model.d_pack=2")


def test_requirements_txt_lists_the_packages_of_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    required = [line for line in lines if line]

    def normalized(requirements: list[str]) -> set[str]:
        return {re.sub(r"\s+", "", r.split(";")[0]).lower() for r in requirements}

    assert normalized(required) == normalized(project)
