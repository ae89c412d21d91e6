"""One GAN training step: the losses, and every option that changes how they are computed.

The loop hands :class:`GanStep` a real batch (with its labels, for a conditional model) and the global
step number; the step draws a fake batch (with uniformly drawn labels, for a conditional model),
updates D (BCE on logits with one-sided label smoothing, plus the R1 penalty every ``r1_every`` steps,
on ``r1_batch`` of the real images), updates G (the non-saturating loss), and moves G-EMA. Precision,
grad scalers, torch.compile, the whole-step CUDA graph and the non-finite skip live here, so the loop
never sees them; the step reaches G and D only through the interface of gan/models.py. ``state_dict``
holds what the step carries from one step to the next besides the weights (both optimizers and both
grad scalers), so every precision resumes exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan.config import OptimConfig, TrainConfig
from gan.cuda_graph import GraphedStep
from gan.device import resolve_precision
from gan.models import Discriminator, Generator

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_optimizers(generator: nn.Module, discriminator: nn.Module, cfg: OptimConfig,
                    device: torch.device, capturable: bool = False) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    # One fused kernel updates all parameters of a network, on the CPU and on CUDA; elsewhere torch picks
    # foreach. ``capturable``: safe inside a CUDA graph.
    fused = True if device.type in ("cuda", "cpu") else None
    betas = (cfg.betas[0], cfg.betas[1])
    return (
        torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr, betas=betas, fused=fused, capturable=capturable),
        torch.optim.Adam(discriminator.parameters(), lr=cfg.discriminator_lr, betas=betas, fused=fused, capturable=capturable),
    )


def ema_weight(decay: float, step: int) -> float:
    """How far G-EMA moves towards G at ``step``: 1 - min(decay, (1 + step) / (10 + step)).

    The warm-up ramp keeps the average from remembering the random initial weights; it reaches 0.999 at
    step ~9k and 0.9999 at step ~90k.
    """
    return 1.0 - min(decay, (1 + step) / (10 + step))


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """CUDA's fp32 matmuls on TF32 tensor cores (10-bit mantissa) inside the block; the setting is restored after."""
    matmul = torch.backends.cuda.matmul
    key = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"  # torch >= 2.9 : older
    saved = getattr(matmul, key)
    setattr(matmul, key, "tf32" if key == "fp32_precision" else True)
    try:
        yield
    finally:
        setattr(matmul, key, saved)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, weight: float | torch.Tensor) -> None:
    """ema += weight * (model - ema); a tensor ``weight`` (a device scalar) can change between CUDA graph replays."""
    averaged, current = list(ema.parameters()), list(model.parameters())
    if isinstance(weight, torch.Tensor):
        steps = torch._foreach_sub(current, averaged)
        torch._foreach_mul_(steps, weight)
        torch._foreach_add_(averaged, steps)
    else:
        torch._foreach_lerp_(averaged, current, weight)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def r1_gamma_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """R1's gamma at ``step``: ``r1_gamma``, or on its linear way to ``r1_gamma_end`` over ``r1_decay_epochs``."""
    if cfg.r1_gamma_end is None:
        return cfg.r1_gamma
    done = min(step / (cfg.r1_decay_epochs * steps_per_epoch), 1.0)
    return cfg.r1_gamma + (cfg.r1_gamma_end - cfg.r1_gamma) * done


class GanStep:
    """Calling it runs one step on a real batch and returns [d_loss, g_loss, D(x), D(G(z))] without a host sync."""

    generator: Generator
    discriminator: Discriminator

    def __init__(self, generator: Generator, discriminator: Discriminator, generator_ema: Generator,
                 optim: OptimConfig, cfg: TrainConfig, batch_size: int, device: torch.device, steps_per_epoch: int) -> None:
        self.generator, self.discriminator, self.generator_ema = generator, discriminator, generator_ema
        self.cfg, self.batch_size, self.device, self.steps_per_epoch = cfg, batch_size, device, steps_per_epoch
        self.r1_batch = min(cfg.r1_batch or batch_size, batch_size)
        self.num_classes = generator.num_classes  # 0: unconditional
        # gamma/2 * E||grad_x D(x)||^2 on real images keeps D smooth where the data is (Mescheder et al.,
        # 2018); lazy R1 weighs it by its interval so the strength is unchanged. The weight is a device
        # scalar, set before each step, so a gamma that moves over the epochs reaches CUDA graph replays too.
        self.r1_weight = torch.full((), 0.5 * r1_gamma_at(cfg, 0, steps_per_epoch) * cfg.r1_every, device=device)
        self.precision = resolve_precision(cfg.precision, device)  # auto: bf16 on a CPU with bf16 matmuls, else fp32
        fp16 = self.precision == "fp16"
        # The whole step as CUDA graphs (gan/cuda_graph.py). Not under fp16, whose grad scalers read the
        # gradients' inf checks on the host, nor under nonfinite=skip, which reads the loss on the host.
        graphed = device.type == "cuda" and cfg.cuda_graph and not fp16 and cfg.nonfinite == "stop"
        self.opt_g, self.opt_d = make_optimizers(generator, discriminator, optim, device, capturable=graphed)
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)
        dtype = AMP_DTYPES.get(self.precision)
        self.autocast: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext)
        # tf32: only the step's matmuls (evaluation keeps fp32); on the CPU it is fp32.
        self.matmul_precision = tf32_matmuls if self.precision == "tf32" and device.type == "cuda" else contextlib.nullcontext

        # reduce-overhead and max-autotune capture CUDA graphs of their own: not on the CPU, where there
        # are none, nor inside the whole-step graph.
        mode = cfg.compile_mode
        if device.type != "cuda" or graphed:
            mode = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)
        self.g_forward = torch.compile(generator, mode=mode) if cfg.compile else generator
        # The R1 penalty runs D eagerly (D's own input gradient: written out, or autograd's double backward,
        # which torch.compile does not support); the losses run the compiled D.
        self.d_forward = torch.compile(discriminator, mode=mode) if cfg.compile else discriminator
        # CUDA graphs reuse their output memory: each step starts a new generation of graph replays, and
        # D's statistics are read right after each D forward, before D runs again.
        self.mark_graph_step = cfg.compile and mode == "reduce-overhead"  # CUDA without the whole-step graph

        judged = batch_size // discriminator.images_per_logit  # D's outputs per batch
        self.real_target = torch.full((judged,), 1.0 - cfg.label_smoothing, device=device)
        self.ones = torch.ones(judged, device=device)
        self.zeros = torch.zeros(judged, device=device)
        # On CUDA the EMA's weight is a device scalar, set before each step, so graph replays and eager
        # steps compute the average the same way; the graph reads it from there.
        self.ema_weight_on_device = torch.zeros((), device=device) if device.type == "cuda" else None
        self.graphed = GraphedStep(lambda with_r1, real, *labels: self.run(real, labels[0] if labels else None, with_r1,
                                                                           self.ema_weight_on_device)) if graphed else None

    def r1_due(self, step: int) -> bool:
        """Lazy R1 (as StyleGAN2): the penalty on every ``r1_every``-th step, weighted by the interval."""
        return r1_gamma_at(self.cfg, step, self.steps_per_epoch) > 0 and step % self.cfg.r1_every == 0

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None, step: int) -> torch.Tensor:
        """One step on ``real`` images and their ``labels`` (None for an unconditional model)."""
        if self.cfg.r1_gamma_end is not None:  # a constant gamma keeps the weight set at the start
            self.r1_weight.fill_(0.5 * r1_gamma_at(self.cfg, step, self.steps_per_epoch) * self.cfg.r1_every)
        weight: float | torch.Tensor = ema_weight(self.cfg.ema_decay, step)
        if self.ema_weight_on_device is not None:
            weight = self.ema_weight_on_device.fill_(weight)
        if self.graphed is not None:
            return self.graphed(self.r1_due(step), real, *(() if labels is None else (labels,)))
        return self.run(real, labels, self.r1_due(step), weight)

    def run(self, real: torch.Tensor, labels: torch.Tensor | None, with_r1: bool, weight: float | torch.Tensor) -> torch.Tensor:
        """The step's work: fake batch, D update, G update, EMA at ``weight`` (on CUDA the device scalar)."""
        if self.mark_graph_step:
            torch.compiler.cudagraph_mark_step_begin()
        z = torch.randn(self.batch_size, self.generator.latent_dim, device=self.device)
        fake_labels = torch.randint(self.num_classes, (self.batch_size,), device=self.device) if self.num_classes else None
        with self.matmul_precision():
            with self.autocast():
                fake = self.g_forward(z, fake_labels)
            d_loss, d_real, d_fake = self.discriminator_step(real, labels, fake.detach(), fake_labels, with_r1)
            g_loss = self.generator_step(fake, fake_labels)
        update_ema(self.generator_ema, self.generator, weight)
        return torch.stack([d_loss, g_loss, d_real, d_fake])

    # -- the losses --------------------------------------------------------------------------
    def discriminator_step(self, real: torch.Tensor, labels: torch.Tensor | None, fake: torch.Tensor, fake_labels: torch.Tensor | None,
                           with_r1: bool) -> tuple[torch.Tensor, ...]:
        """Update D on real and (detached) fake images, with the R1 penalty when due; returns D's loss and its mean outputs."""
        if self.cfg.d_updates == "joint":
            both_labels = None if labels is None else torch.cat([labels, fake_labels])
            real_logits, fake_logits = self.d_logits(torch.cat([real, fake]), both_labels).chunk(2)
            d_loss = self.bce(real_logits, self.real_target) + self.bce(fake_logits, self.zeros)
            self.optimize(self.with_penalty(d_loss, real, labels, with_r1), self.opt_d, self.scaler_d)
        else:  # the reference: one D update on the real batch, then another on the fake batch
            real_logits = self.d_logits(real, labels)
            d_loss_real = self.bce(real_logits, self.real_target)
            self.optimize(self.with_penalty(d_loss_real, real, labels, with_r1), self.opt_d, self.scaler_d)
            fake_logits = self.d_logits(fake, fake_labels)
            d_loss_fake = self.bce(fake_logits, self.zeros)
            self.optimize(d_loss_fake, self.opt_d, self.scaler_d)
            d_loss = d_loss_real + d_loss_fake
        return d_loss.detach(), real_logits.detach().sigmoid().mean(), fake_logits.detach().sigmoid().mean()

    def d_logits(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        with self.autocast():
            return self.d_forward(images, labels).float()

    def with_penalty(self, loss: torch.Tensor, real: torch.Tensor, labels: torch.Tensor | None, with_r1: bool) -> torch.Tensor:
        return loss + self.r1_penalty(real, labels) if with_r1 else loss

    def r1_penalty(self, real: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """gamma/2 * r1_every * E||grad_x D(x)||^2 over the first r1_batch real images (and their labels), on dropout masks of their own."""
        subset = real[: self.r1_batch].detach()
        subset_labels = None if labels is None else labels[: self.r1_batch]
        with self.autocast():
            grad = self.discriminator.input_gradient(subset, subset_labels).float()
        return self.r1_weight * grad.pow(2).sum() / self.r1_batch

    def generator_step(self, fake: torch.Tensor, fake_labels: torch.Tensor | None) -> torch.Tensor:
        """Update G with the non-saturating loss through the just-updated D."""
        self.discriminator.requires_grad_(False)  # D's weights need no gradients here
        g_loss = self.bce(self.d_logits(fake, fake_labels), self.ones)
        self.optimize(g_loss, self.opt_g, self.scaler_g)
        self.discriminator.requires_grad_(True)
        return g_loss.detach()

    @staticmethod
    def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.cfg.nonfinite == "skip" and not torch.isfinite(loss):  # a host sync, paid only under the skip policy
            return
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    # -- what a checkpoint keeps -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, optimizer in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            # The state (moments, step counts) comes from the checkpoint; the settings (lr, betas, fused,
            # capturable) from this run's config and device, so `resume=... optim.lr=0.0001` takes effect.
            settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            optimizer.load_state_dict(state[key])
            for group, setting in zip(optimizer.param_groups, settings):
                group.update(setting)
        for key, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            # Checkpoints from before the scalers were saved, or from a run without fp16, have none.
            if state.get(key) and scaler.is_enabled():
                scaler.load_state_dict(state[key])
