"""The config schema: one dataclass per config group, with types and range checks and no values.

The values live in the YAML option files under ``conf/`` (``conf/optim/adam.yaml`` holds the learning
rate, ``conf/data/mnist.yaml`` the batch size, ...), which name their group's schema in their own
defaults list, as in Hydra's structured-config schema tutorial. Every field here is ``MISSING``, so a
value is written exactly once, in YAML; a typo, a wrong type or a key the schema does not know fails
when the config is composed or converted, and :func:`to_config` runs every range check on the composed
result. :func:`compose` is the one way code and tests get a config: it composes ``conf/`` exactly as
``train.py`` does.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from gan.cli import unknown_key_sentence
from gan.errors import GanError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")
COLLAPSE_POLICIES = ("warn", "stop")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
WANDB_MODES = ("auto", "online", "offline", "disabled")
D_UPDATES = ("joint", "separate")
PRESET_GROUPS = ("experiment", "debug")  # global presets: each sets whole groups of the recipe


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise GanError(message)


def _require_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, f"{key} must be one of {', '.join(choices)}, got '{value}'.")


@dataclass
class ModelConfig:
    """conf/model/: which generator and discriminator classes are built, and their sizes."""

    generator: str = MISSING  # import path of a gan.models.Generator subclass, built with its from_config(model)
    discriminator: str = MISSING  # import path of a gan.models.Discriminator subclass
    latent_dim: int = MISSING
    num_classes: int = MISSING  # 0: unconditional; N: G and D take a class label (the digit) in 0..N-1
    g_hidden: list[int] = MISSING
    d_hidden: list[int] = MISSING
    d_dropout: float = MISSING  # dropout after each hidden layer of D
    d_pack: int = MISSING  # PacGAN: D judges this many images at once
    d_mbstd_group: int = MISSING  # minibatch standard deviation over groups of this size before D's last layer (0: off)

    def validate(self) -> None:
        _require(self.latent_dim > 0, f"model.latent_dim must be positive, got {self.latent_dim}.")
        _require(self.num_classes >= 0, f"model.num_classes must be 0 (unconditional) or the number of classes, got {self.num_classes}.")
        for key in ("g_hidden", "d_hidden"):
            widths = getattr(self, key)
            _require(len(widths) > 0 and all(w > 0 for w in widths),
                     f"model.{key} must be a non-empty list of positive widths, got {widths}.")
        _require(0.0 <= self.d_dropout < 1.0, f"model.d_dropout must be in [0, 1), got {self.d_dropout}.")
        _require(self.d_pack > 0, f"model.d_pack must be positive, got {self.d_pack}.")
        _require(self.d_mbstd_group >= 0, f"model.d_mbstd_group must be 0 (off) or a group size, got {self.d_mbstd_group}.")
        _require(self.d_pack == 1 or self.num_classes == 0,
                 f"model.d_pack={self.d_pack} judges several images as one, which a conditional model cannot label; "
                 f"use model.d_pack=1 with model.num_classes={self.num_classes}.")


@dataclass
class OptimConfig:
    """conf/optim/: Adam for both networks."""

    lr: float = MISSING  # both networks, unless lr_g / lr_d are set
    lr_g: float | None = MISSING
    lr_d: float | None = MISSING
    betas: list[float] = MISSING

    def validate(self) -> None:
        for name in ("lr", "lr_g", "lr_d"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"optim.{name} must be positive, got {value}.")
        _require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                 f"optim.betas must be two numbers in [0, 1), got {self.betas}.")

    @property
    def generator_lr(self) -> float:
        return self.lr if self.lr_g is None else self.lr_g

    @property
    def discriminator_lr(self) -> float:
        return self.lr if self.lr_d is None else self.lr_d


@dataclass
class DataConfig:
    """conf/data/: where MNIST is and how it is batched."""

    root: str = MISSING  # a folder holding MNIST/raw/ with the four IDX files
    download: bool = MISSING  # fetch missing files (never over a file that is there)
    batch_size: int = MISSING
    subset: int | None = MISSING  # train on the first N images only

    def validate(self) -> None:
        _require(self.batch_size > 0, f"data.batch_size must be positive, got {self.batch_size}.")
        _require(self.subset is None or self.subset > 0, f"data.subset must be positive or null, got {self.subset}.")


@dataclass
class DeviceConfig:
    """conf/device/: auto picks CUDA, then MPS, then the CPU."""

    name: str = MISSING

    def validate(self) -> None:
        _require_choice(self.name, DEVICES, "device")


@dataclass
class TrainConfig:
    """conf/train/: the losses and how a step is computed."""

    d_updates: str = MISSING  # joint: one D step on real+fake; separate: two (real, then fake)
    label_smoothing: float = MISSING  # one-sided: D's target for real images is 1 - label_smoothing
    ema_decay: float = MISSING  # generator EMA; step t uses min(ema_decay, (1+t)/(10+t))
    r1_gamma: float = MISSING  # R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images (0 with r1_gamma_end null: off)
    r1_gamma_end: float | None = MISSING  # null: gamma stays r1_gamma; else it moves linearly there over r1_decay_epochs
    r1_decay_epochs: int = MISSING  # epochs over which gamma moves from r1_gamma to r1_gamma_end
    r1_every: int = MISSING  # lazy R1: the penalty every N steps, weighted by N
    r1_batch: int | None = MISSING  # real images the penalty is estimated on: the batch's first N (null: all)
    # auto (bf16 on a CPU with bf16 matmuls, else fp32) | fp32 | tf32 (CUDA's fp32 matmuls on TF32 tensor cores) | bf16 | fp16
    precision: str = MISSING
    compile: bool = MISSING  # torch.compile G and D
    compile_mode: str = MISSING
    cuda_graph: bool = MISSING  # on CUDA: capture the whole step once and replay it
    log_every: int = MISSING  # steps between progress updates and logged scalars
    nonfinite: str = MISSING  # on a NaN/inf loss: stop (keep the last good checkpoint) | skip that update
    on_collapse: str = MISSING  # when the evaluations show a collapse that does not heal (gan/collapse.py): warn | stop

    def validate(self) -> None:
        _require_choice(self.d_updates, D_UPDATES, "train.d_updates")
        _require(0.0 <= self.label_smoothing < 1.0, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        _require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}.")
        _require(self.r1_gamma >= 0, f"train.r1_gamma must be 0 or more, got {self.r1_gamma}.")
        _require(self.r1_gamma_end is None or self.r1_gamma_end >= 0,
                 f"train.r1_gamma_end must be 0 or more, or null to keep train.r1_gamma, got {self.r1_gamma_end}.")
        _require(self.r1_decay_epochs >= 0, f"train.r1_decay_epochs must be 0 or more, got {self.r1_decay_epochs}.")
        _require(self.r1_gamma_end is None or self.r1_decay_epochs > 0,
                 f"train.r1_gamma_end={self.r1_gamma_end} needs train.r1_decay_epochs of 1 or more (the epochs gamma takes to get there).")
        _require(self.r1_every > 0, f"train.r1_every must be positive, got {self.r1_every}.")
        _require(self.r1_batch is None or self.r1_batch > 0, f"train.r1_batch must be positive or null, got {self.r1_batch}.")
        _require_choice(self.precision, PRECISIONS, "train.precision")
        _require_choice(self.compile_mode, COMPILE_MODES, "train.compile_mode")
        _require(self.log_every > 0, f"train.log_every must be positive, got {self.log_every}.")
        _require_choice(self.nonfinite, NONFINITE_POLICIES, "train.nonfinite")
        _require_choice(self.on_collapse, COLLAPSE_POLICIES, "train.on_collapse")


@dataclass
class EvalConfig:
    """conf/eval/: the built-in evaluator during training."""

    enabled: bool = MISSING
    every: int = MISSING  # epochs between evaluations; the last epoch is always evaluated
    n_samples: int = MISSING  # samples per evaluation during training
    final_n_samples: int = MISSING  # samples for the last epoch's evaluation (eval.json)
    seed: int = MISSING  # noise and KID-subset seed, apart from training's RNG

    def validate(self) -> None:
        _require(self.every > 0, f"eval.every must be positive, got {self.every}.")
        _require(self.n_samples > 1 and self.final_n_samples > 1, "eval.n_samples and eval.final_n_samples must be at least 2.")


@dataclass
class WandbConfig:
    """conf/wandb/: Weights & Biases tracking."""

    mode: str = MISSING  # auto: online with credentials, else offline | online | offline | disabled
    project: str = MISSING
    entity: str | None = MISSING
    group: str | None = MISSING  # null: the multirun sweep directory, shared by its jobs
    name: str | None = MISSING  # null: the command-line overrides, e.g. optim.lr=0.0001
    tags: list[str] = MISSING
    log_checkpoints: bool = MISSING  # upload kept checkpoints as model artifacts
    init_timeout: float = MISSING  # seconds to wait for W&B before going on offline

    def validate(self) -> None:
        _require_choice(self.mode, WANDB_MODES, "wandb.mode")
        _require(self.init_timeout > 0, f"wandb.init_timeout must be positive, got {self.init_timeout}.")


@dataclass
class Config:
    """conf/config.yaml: the run-level keys, and one option of each group."""

    epochs: int = MISSING  # a resumed run continues up to this number
    seed: int = MISSING  # weights, shuffling and the fixed noise: same seed + machine = same weights
    resume: str | None = MISSING  # a checkpoint path, or auto: this run directory's newest good checkpoint
    sample_every: int = MISSING  # epochs between fixed-noise sample grids
    checkpoint_every: int = MISSING  # epochs between kept checkpoints/epoch_NNN.pt (last.pt: every epoch)
    keep_last: int | None = MISSING  # epoch_NNN.pt files kept (null: all)
    grid_size: int = MISSING  # images in the fixed-noise grid
    grid_ema: bool = MISSING  # draw grids with the EMA generator
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    data: DataConfig = MISSING
    device: DeviceConfig = MISSING
    train: TrainConfig = MISSING
    wandb: WandbConfig = MISSING
    eval: EvalConfig = MISSING

    def validate(self) -> None:
        for group in (self.model, self.optim, self.data, self.device, self.train, self.wandb, self.eval):
            group.validate()
        _require(self.epochs >= 1, f"epochs must be 1 or more (the epochs to train, or to reach with resume), got {self.epochs}.")
        _require(self.sample_every > 0, f"sample_every must be positive, got {self.sample_every}.")
        _require(self.checkpoint_every > 0, f"checkpoint_every must be positive, got {self.checkpoint_every}.")
        _require(self.grid_size > 0, f"grid_size must be positive, got {self.grid_size}.")
        _require(self.keep_last is None or self.keep_last > 0, f"keep_last must be positive or null, got {self.keep_last}.")
        packed = self.data.batch_size // self.model.d_pack
        _require(self.data.batch_size % self.model.d_pack == 0,
                 f"data.batch_size ({self.data.batch_size}) must be a multiple of model.d_pack ({self.model.d_pack}).")
        _require(not self.model.d_mbstd_group or packed % self.model.d_mbstd_group == 0,
                 f"data.batch_size / model.d_pack ({packed}) must be a multiple of model.d_mbstd_group ({self.model.d_mbstd_group}); "
                 f"choose such a batch size, or model.d_mbstd_group=0 to turn minibatch standard deviation off.")
        r1_batch = self.train.r1_batch
        judged_at_once = self.model.d_pack * max(self.model.d_mbstd_group, 1)
        _require(r1_batch is None or r1_batch >= self.data.batch_size or r1_batch % judged_at_once == 0,
                 f"train.r1_batch ({r1_batch}) must be a multiple of model.d_pack x model.d_mbstd_group ({judged_at_once}), "
                 f"or null for the whole batch.")


@dataclass
class SampleConfig:
    """conf/sample.yaml: what sample.py draws, from which checkpoint, into which file."""

    checkpoint: str = MISSING
    n: int = MISSING
    digit: int | None = MISSING  # conditional checkpoints: draw this digit (null: every digit in equal shares)
    out: str | None = MISSING  # .png writes a grid; .pt or .npy the raw (n, 1, 28, 28) images; null: none
    overwrite: bool = MISSING  # replace an existing out= file (never a checkpoint)
    seed: int = MISSING
    ema: bool = MISSING
    evaluate: bool = MISSING  # print the sample-quality metrics of the n samples (use n=10000)
    data_root: str = MISSING  # MNIST test images, the reference for evaluate=true
    device: DeviceConfig = MISSING

    def validate(self) -> None:
        self.device.validate()
        _require(self.n > 0, f"n must be positive, got {self.n}.")
        _require(self.digit is None or self.digit >= 0, f"digit must be a class label such as 7, or null, got {self.digit}.")


@dataclass
class ExportConfig:
    """conf/export.yaml: which checkpoint's generator export.py writes, where, in which formats."""

    checkpoint: str = MISSING
    out: str = MISSING
    ema: bool = MISSING
    formats: list[str] = MISSING
    push_to_hub: str | None = MISSING  # a Hugging Face Hub repository id

    def validate(self) -> None:
        _require("safetensors" in self.formats and set(self.formats) <= {"safetensors", "onnx"},
                 f"formats must include safetensors and may add onnx, got {list(self.formats)}: use formats=[safetensors,onnx].")


GROUP_SCHEMAS = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig, "device": DeviceConfig,
                 "train": TrainConfig, "eval": EvalConfig, "wandb": WandbConfig}


def register_configs() -> None:
    """Make the schemas available to the defaults lists: ``config_schema``, ``sample_schema``, ``export_schema`` and each group's ``schema``."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    store.store(name="sample_schema", node=SampleConfig)
    store.store(name="export_schema", node=ExportConfig)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)


def _unknown_keys(values: dict[str, Any], schema: type, prefix: str = "") -> list[tuple[str, type]]:
    """Keys that ``schema`` does not declare, with the schema each was found in (``+key=value`` can add them)."""
    hints = typing.get_type_hints(schema)
    unknown = []
    for key, value in values.items():
        if key not in hints:
            unknown.append((f"{prefix}{key}", schema))
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            unknown += _unknown_keys(value, hints[key], f"{prefix}{key}.")
    return unknown


def to_config(cfg: DictConfig) -> Any:
    """Turn a composed config into its schema's dataclass objects and run every range check."""
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        values = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
        for key, where in _unknown_keys(values, schema):
            raise GanError(unknown_key_sentence(key, where))
    try:
        config = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as err:
        raise GanError(f"{err.full_key} needs a value: pass {err.full_key}=... on the command line.") from None
    except OmegaConfBaseException as err:
        raise GanError(f"invalid config: {str(err).splitlines()[0]}") from None
    config.validate()
    return config


def preset_groups(preset_group: str, option: str) -> dict[str, str]:
    """The groups whose values a preset (conf/experiment/fast.yaml) writes, with the option it picks for each
    (``override /model: base`` and a ``model:`` block -> {"model": "base"})."""
    path = CONF_DIR / preset_group / f"{option}.yaml"
    preset = OmegaConf.load(path) if path.is_file() else OmegaConf.create()
    groups = {}
    for entry in preset.get("defaults", []):
        if OmegaConf.is_dict(entry):
            for key, value in entry.items():
                group = str(key).removeprefix("override /")
                if group != key and group in preset:
                    groups[group] = str(value)
    return groups


def check_group_choices(overrides: Iterable[str], choices: Mapping[str, Any]) -> None:
    """Refuse a group choice on the command line that a chosen preset sets otherwise (``experiment=fast model=large``).

    A preset is a whole recipe: it writes every value of the groups it names, after them, so the values of a
    group chosen beside it would silently give way to the preset's.
    """
    overrides = list(overrides)
    for preset_group in PRESET_GROUPS:
        option = choices.get(preset_group)
        if option is None:
            continue
        for group, preset_choice in preset_groups(preset_group, option).items():
            typed = [o.lstrip("+~").partition("=")[2] for o in overrides if o.lstrip("+~").partition("=")[0] == group]
            for value in typed:
                if value != preset_choice:
                    raise GanError(f"{preset_group}={option} sets {group}={preset_choice} as part of its whole recipe, so {group}={value} "
                                   f"would be dropped; drop {group}={value} to train the preset as it is, or drop {preset_group}={option} "
                                   f"and pass {group}={value} with the values you want.")


def compose(*overrides: str, config_name: str = "config") -> Any:
    """The validated config of ``python train.py OVERRIDES`` (or ``sample.py`` with ``config_name="sample"``)."""
    if not GlobalHydra.instance().is_initialized():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(*overrides, config_name=config_name)
    # inside a Hydra app (or the block above): the search path is conf/
    cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    check_group_choices(overrides, cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return to_config(cfg)


def model_config(values: dict[str, Any]) -> ModelConfig:
    """A model config from plain values (a checkpoint's), through the schema and its checks."""
    return to_config(OmegaConf.merge(OmegaConf.structured(ModelConfig), values))


register_configs()
