"""Every config default, written once: one dataclass per config group.

The schema is registered with Hydra's ConfigStore as ``config_schema`` and listed first in
``conf/config.yaml``'s defaults, so each YAML option file holds only what it changes, an unknown key
or a wrong type fails at composition, and ``python train.py --cfg job`` prints the composed result.
Range checks live in ``__post_init__`` and run when :func:`to_config` turns the composed config into
these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan.errors import GanError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
WANDB_MODES = ("auto", "online", "offline", "disabled")
D_UPDATES = ("joint", "separate")
DATA_ROOT = "${oc.env:DATA_ROOT,./data}"  # the DATA_ROOT environment variable, else ./data


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise GanError(message)


def _require_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, f"{key} must be one of {', '.join(choices)}, got '{value}'.")


@dataclass
class ModelConfig:
    # The reference network: G 100-256-512-1024-784 (ReLU, Tanh), D 784-1024-512-256-1 (LeakyReLU 0.2).
    latent_dim: int = 100
    g_hidden: list[int] = field(default_factory=lambda: [256, 512, 1024])
    d_hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    d_dropout: float = 0.0  # dropout after each hidden layer of D; 0.2 and 0.3 scored worse and cost 10% of the step (README: Ablations)
    d_pack: int = 1  # PacGAN: D judges this many images at once (data.batch_size must be a multiple)
    d_mbstd_group: int = 0  # minibatch standard deviation over groups of this size before D's last layer (0: off)

    def __post_init__(self) -> None:
        _require(self.latent_dim > 0, f"model.latent_dim must be positive, got {self.latent_dim}.")
        for key in ("g_hidden", "d_hidden"):
            widths = getattr(self, key)
            _require(len(widths) > 0 and all(w > 0 for w in widths),
                     f"model.{key} must be a non-empty list of positive widths, got {widths}.")
        _require(0.0 <= self.d_dropout < 1.0, f"model.d_dropout must be in [0, 1), got {self.d_dropout}.")
        _require(self.d_pack > 0, f"model.d_pack must be positive, got {self.d_pack}.")
        _require(self.d_mbstd_group >= 0, f"model.d_mbstd_group must be 0 (off) or a group size, got {self.d_mbstd_group}.")


@dataclass
class OptimConfig:
    lr: float = 3e-4  # both networks, unless lr_g / lr_d are set; about sqrt(2) x the reference's 0.0002 for twice its batch
    lr_g: float | None = None
    lr_d: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # DCGAN's; the reference used torch's (0.9, 0.999)

    def __post_init__(self) -> None:
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
    root: str = DATA_ROOT  # a folder holding MNIST/raw/ with the four IDX files
    download: bool = True  # fetch the files when they are missing (never over a file that is there)
    batch_size: int = 128  # twice the reference's 64: as good over seeds, and faster per epoch (README: Speed, Ablations)
    subset: int | None = None  # train on the first N images only

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, f"data.batch_size must be positive, got {self.batch_size}.")
        _require(self.subset is None or self.subset > 0, f"data.subset must be positive or null, got {self.subset}.")


@dataclass
class DeviceConfig:
    name: str = "auto"  # auto: CUDA, then MPS, then CPU

    def __post_init__(self) -> None:
        _require_choice(self.name, DEVICES, "device")


@dataclass
class TrainConfig:
    d_updates: str = "joint"  # joint: one D step on real+fake; separate: the reference's two (real, then fake)
    label_smoothing: float = 0.1  # one-sided: D's target for real images is 1 - label_smoothing
    ema_decay: float = 0.999  # generator EMA; step t uses min(ema_decay, (1+t)/(10+t)), so 0.9999 is reached at step ~90k
    r1_gamma: float = 2.0  # R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images (0: off); 1 drew over 12% ones (README: Ablations)
    r1_every: int = 1  # lazy R1: the penalty every N steps, weighted by N; measured 16 and 4 cost FID (README)
    # Real images the R1 penalty is estimated on: the first ones of the batch (null, or the batch or more:
    # the whole batch). 32 of the 128 cost no quality over 3 seeds and make the step faster (README).
    r1_batch: int | None = 32
    precision: str = "fp32"  # fp32 | tf32 (CUDA's fp32 matmuls on TF32 tensor cores) | bf16 | fp16 (autocast; fp16 with grad scalers)
    compile: bool = False  # torch.compile G and D
    compile_mode: str = "reduce-overhead"  # CUDA graphs of the compiled parts, where cuda_graph is off
    cuda_graph: bool = True  # on CUDA: capture the whole step once and replay it (not with fp16 or nonfinite=skip)
    log_every: int = 50  # steps between progress updates and logged scalars
    nonfinite: str = "stop"  # on a NaN/inf loss: stop (keep the last good checkpoint) | skip that update

    def __post_init__(self) -> None:
        _require_choice(self.d_updates, D_UPDATES, "train.d_updates")
        _require(0.0 <= self.label_smoothing < 1.0, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        _require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}.")
        _require(self.r1_gamma >= 0, f"train.r1_gamma must be 0 or more, got {self.r1_gamma}.")
        _require(self.r1_every > 0, f"train.r1_every must be positive, got {self.r1_every}.")
        _require(self.r1_batch is None or self.r1_batch > 0, f"train.r1_batch must be positive or null, got {self.r1_batch}.")
        _require_choice(self.precision, PRECISIONS, "train.precision")
        _require_choice(self.compile_mode, COMPILE_MODES, "train.compile_mode")
        _require(self.log_every > 0, f"train.log_every must be positive, got {self.log_every}.")
        _require_choice(self.nonfinite, NONFINITE_POLICIES, "train.nonfinite")


@dataclass
class EvalConfig:
    enabled: bool = True
    every: int = 10  # epochs between evaluations; the last epoch is always evaluated
    n_samples: int = 5000  # samples per evaluation during training
    final_n_samples: int = 10000  # samples for the last epoch's evaluation (eval.json)
    seed: int = 1234  # noise and KID-subset seed, apart from training's RNG

    def __post_init__(self) -> None:
        _require(self.every > 0, f"eval.every must be positive, got {self.every}.")
        _require(self.n_samples > 1 and self.final_n_samples > 1, "eval.n_samples and eval.final_n_samples must be at least 2.")


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto: online with credentials, else offline (`wandb sync` uploads later) | online | offline | disabled
    project: str = "mnist-gan"
    entity: str | None = None
    group: str | None = None  # null: the multirun sweep directory, shared by its jobs
    name: str | None = None  # null: the command-line overrides, e.g. optim.lr=0.0001
    tags: list[str] = field(default_factory=list)
    log_checkpoints: bool = False  # upload kept checkpoints as model artifacts
    init_timeout: float = 30.0  # seconds to wait for W&B before going on offline

    def __post_init__(self) -> None:
        _require_choice(self.mode, WANDB_MODES, "wandb.mode")
        _require(self.init_timeout > 0, f"wandb.init_timeout must be positive, got {self.init_timeout}.")


@dataclass
class Config:
    epochs: int = 50  # a resumed run continues up to this number
    seed: int = 0  # weights, shuffling and the fixed noise: same seed + machine = same weights
    resume: str | None = None  # a checkpoint path, or auto: this run directory's checkpoints/last.pt if present
    sample_every: int = 1  # epochs between fixed-noise sample grids
    checkpoint_every: int = 10  # epochs between kept checkpoints/epoch_NNN.pt (last.pt: every epoch)
    keep_last: int | None = 5  # epoch_NNN.pt files kept (null: all)
    grid_size: int = 64  # images in the fixed-noise grid
    grid_ema: bool = True  # draw grids with the EMA generator
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, f"epochs must be 0 or more, got {self.epochs}.")
        _require(self.sample_every > 0, f"sample_every must be positive, got {self.sample_every}.")
        _require(self.checkpoint_every > 0, f"checkpoint_every must be positive, got {self.checkpoint_every}.")
        _require(self.grid_size > 0, f"grid_size must be positive, got {self.grid_size}.")
        _require(self.keep_last is None or self.keep_last > 0, f"keep_last must be positive or null, got {self.keep_last}.")
        packed = self.data.batch_size // self.model.d_pack
        _require(self.data.batch_size % self.model.d_pack == 0,
                 f"data.batch_size ({self.data.batch_size}) must be a multiple of model.d_pack ({self.model.d_pack}).")
        _require(not self.model.d_mbstd_group or packed % self.model.d_mbstd_group == 0,
                 f"data.batch_size / model.d_pack ({packed}) must be a multiple of model.d_mbstd_group ({self.model.d_mbstd_group}).")
        r1_batch = self.train.r1_batch
        judged_at_once = self.model.d_pack * max(self.model.d_mbstd_group, 1)
        _require(r1_batch is None or r1_batch >= self.data.batch_size or r1_batch % judged_at_once == 0,
                 f"train.r1_batch ({r1_batch}) must be a multiple of model.d_pack x model.d_mbstd_group ({judged_at_once}), "
                 f"or null for the whole batch.")


@dataclass
class SampleConfig:
    checkpoint: str = "???"
    n: int = 64
    out: str | None = "samples.png"  # .png writes a grid; .pt or .npy the raw (n, 1, 28, 28) images; null: none
    seed: int = 0
    ema: bool = True
    evaluate: bool = False  # print the sample-quality metrics of the n samples (use n=10000)
    data_root: str = DATA_ROOT  # MNIST test images, the reference for evaluate=true
    device: DeviceConfig = field(default_factory=DeviceConfig)

    def __post_init__(self) -> None:
        _require(self.n > 0, f"n must be positive, got {self.n}.")


def register_configs() -> None:
    """Make the schemas available to Hydra's defaults lists."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    store.store(name="sample_schema", node=SampleConfig)


def to_config(cfg: DictConfig) -> Any:
    """Turn a composed config into its schema's dataclass objects, running every range check."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        if isinstance(err.__cause__, GanError):
            raise err.__cause__ from None
        raise GanError(f"invalid config: {err}") from None


register_configs()
