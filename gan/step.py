"""One GAN training step: the losses, and every option that changes how they are computed.

The loop hands :class:`GanStep` a real batch and the global step number; the step draws a fake batch,
updates D (BCE on logits with one-sided label smoothing, plus the R1 penalty every ``r1_every``
steps, on ``r1_batch`` of the real images), updates G (the non-saturating loss), and moves G-EMA. Precision, grad scalers, torch.compile
and the non-finite skip live here, so the loop never sees them. ``state_dict`` holds what the step
carries from one step to the next besides the weights (both optimizers and both grad scalers), so
every precision resumes exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan.config import OptimConfig, TrainConfig
from gan.models import Discriminator, Generator

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
STATS = ("d_loss", "g_loss", "d_real", "d_fake")  # what a step returns, in this order


def make_optimizers(generator: nn.Module, discriminator: nn.Module, cfg: OptimConfig,
                    device: torch.device) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    # One fused kernel updates all parameters of a network (on 2 CPU cores: 51.5 vs 42.4 steps/s
    # against foreach); elsewhere torch picks foreach.
    fused = True if device.type in ("cuda", "cpu") else None
    betas = (cfg.betas[0], cfg.betas[1])
    return (
        torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr, betas=betas, fused=fused),
        torch.optim.Adam(discriminator.parameters(), lr=cfg.discriminator_lr, betas=betas, fused=fused),
    )


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    # Warm-up: early on the average would mostly remember the random initial weights. The ramp reaches
    # 0.999 at step ~9k and 0.9999 at step ~90k (a 50-epoch run at batch 128 takes 23,400 steps).
    decay = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


class GanStep:
    """Calling it runs one step on a real batch and returns [d_loss, g_loss, D(x), D(G(z))] without a host sync."""

    def __init__(self, generator: Generator, discriminator: Discriminator, generator_ema: Generator,
                 optim: OptimConfig, cfg: TrainConfig, batch_size: int, device: torch.device) -> None:
        self.generator, self.discriminator, self.generator_ema = generator, discriminator, generator_ema
        self.cfg, self.batch_size, self.device = cfg, batch_size, device
        self.r1_batch = min(cfg.r1_batch or batch_size, batch_size)
        # gamma/2 * E||grad_x D(x)||^2 on real images keeps D smooth where the data is (Mescheder et al.,
        # 2018); lazy R1 weighs it by its interval so the strength is unchanged.
        self.r1_weight = 0.5 * cfg.r1_gamma * cfg.r1_every
        self.opt_g, self.opt_d = make_optimizers(generator, discriminator, optim, device)
        fp16 = cfg.precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)
        dtype = AMP_DTYPES.get(cfg.precision)
        self.autocast: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext)

        # On the CPU, reduce-overhead has no CUDA graphs to capture and compiles as the default mode.
        mode = cfg.compile_mode if device.type == "cuda" or cfg.compile_mode != "reduce-overhead" else "default"
        self.g_forward = torch.compile(generator, mode=mode) if cfg.compile else generator
        # The R1 penalty runs D eagerly (it walks D's layers for the input gradient, or takes autograd's
        # double backward, which torch.compile does not support); the losses run the compiled D.
        self.d_forward = torch.compile(discriminator, mode=mode) if cfg.compile else discriminator
        # CUDA graphs reuse their output memory: each step starts a new generation of graph replays, and
        # D's statistics are read right after each D forward, before D runs again.
        self.mark_graph_step = cfg.compile and mode == "reduce-overhead"

        judged = batch_size // discriminator.pack  # D's outputs per batch
        self.real_target = torch.full((judged,), 1.0 - cfg.label_smoothing, device=device)
        self.ones = torch.ones(judged, device=device)
        self.zeros = torch.zeros(judged, device=device)

    def r1_due(self, step: int) -> bool:
        """Lazy R1 (as StyleGAN2): the penalty on every ``r1_every``-th step, weighted by the interval."""
        return self.cfg.r1_gamma > 0 and step % self.cfg.r1_every == 0

    def __call__(self, real: torch.Tensor, step: int) -> torch.Tensor:
        if self.mark_graph_step:
            torch.compiler.cudagraph_mark_step_begin()
        z = torch.randn(self.batch_size, self.generator.latent_dim, device=self.device)
        with self.autocast():
            fake = self.g_forward(z)
        d_loss, d_real, d_fake = self.discriminator_step(real, fake.detach(), step)
        g_loss = self.generator_step(fake)
        update_ema(self.generator_ema, self.generator, self.cfg.ema_decay, step)
        return torch.stack([d_loss, g_loss, d_real, d_fake])

    # -- the losses --------------------------------------------------------------------------
    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, step: int) -> tuple[torch.Tensor, ...]:
        """Update D on real and (detached) fake images; returns D's loss and its mean outputs."""
        with_r1 = self.r1_due(step)
        if self.cfg.d_updates == "joint":
            real_logits, fake_logits = self.d_logits(torch.cat([real, fake])).chunk(2)
            d_loss = self.bce(real_logits, self.real_target) + self.bce(fake_logits, self.zeros)
            self.optimize(self.with_penalty(d_loss, real, with_r1), self.opt_d, self.scaler_d)
        else:  # the reference: one D update on the real batch, then another on the fake batch
            real_logits = self.d_logits(real)
            d_loss_real = self.bce(real_logits, self.real_target)
            self.optimize(self.with_penalty(d_loss_real, real, with_r1), self.opt_d, self.scaler_d)
            fake_logits = self.d_logits(fake)
            d_loss_fake = self.bce(fake_logits, self.zeros)
            self.optimize(d_loss_fake, self.opt_d, self.scaler_d)
            d_loss = d_loss_real + d_loss_fake
        return d_loss.detach(), real_logits.detach().sigmoid().mean(), fake_logits.detach().sigmoid().mean()

    def d_logits(self, images: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.d_forward(images).float()

    def with_penalty(self, loss: torch.Tensor, real: torch.Tensor, with_r1: bool) -> torch.Tensor:
        return loss + self.r1_penalty(real) if with_r1 else loss

    def r1_penalty(self, real: torch.Tensor) -> torch.Tensor:
        """gamma/2 * r1_every * E||grad_x D(x)||^2 over the first r1_batch real images, on dropout masks of their own."""
        subset = real[: self.r1_batch].detach()
        if not self.discriminator.mbstd_group:
            # D's input gradient written out (Discriminator.input_gradient): a forward without autograd
            # finds its factors, and the penalty needs no double backward.
            with torch.no_grad(), self.autocast():
                slopes = self.discriminator.slopes(subset)
            with self.autocast():
                grad = self.discriminator.input_gradient(slopes).float()
        else:  # minibatch stddev mixes samples: autograd's double backward
            subset.requires_grad_(True)
            with self.autocast():
                # D reads a copy: autograd.grad refuses a leaf as the input of a module with backward hooks
                # (profilers, FlopCounterMode), and the copy's gradient reaches the leaf all the same.
                logits = self.discriminator(subset.clone()).float()
            (grad,) = torch.autograd.grad(logits.sum(), subset, create_graph=True)
        return self.r1_weight * grad.pow(2).sum() / self.r1_batch

    def generator_step(self, fake: torch.Tensor) -> torch.Tensor:
        """Update G with the non-saturating loss through the just-updated D."""
        self.discriminator.requires_grad_(False)  # D's weights need no gradients here
        g_loss = self.bce(self.d_logits(fake), self.ones)
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
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for key, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            # Checkpoints from before the scalers were saved, or from a run without fp16, have none.
            if state.get(key) and scaler.is_enabled():
                scaler.load_state_dict(state[key])
