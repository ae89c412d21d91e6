"""The training loop: config -> data, models, optimizers -> steps -> per-epoch hooks."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gan.checkpoint import load_checkpoint, load_weights, save_checkpoint
from gan.config import Config, OptimConfig, TrainConfig
from gan.data import training_images
from gan.device import resolve_device
from gan.history import TRACE_COLUMNS, plot_losses, write_metrics_csv
from gan.models import Discriminator, Generator, build_discriminator, build_generator
from gan.sampling import generate, noise, save_grid

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Tracker(Protocol):
    """Where a run's scalars and grids go besides the run directory (e.g. W&B)."""

    def log(self, values: dict[str, float], step: int) -> None: ...

    def log_grid(self, grid: torch.Tensor, step: int) -> None: ...


def make_optimizers(generator: nn.Module, discriminator: nn.Module, cfg: OptimConfig, device: torch.device) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    # A single fused kernel updates all parameters where the device has one; elsewhere torch picks foreach.
    fused = True if device.type == "cuda" else None
    betas = (cfg.betas[0], cfg.betas[1])
    return (
        torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr, betas=betas, fused=fused),
        torch.optim.Adam(discriminator.parameters(), lr=cfg.discriminator_lr, betas=betas, fused=fused),
    )


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    # Warm-up: early on the average would mostly remember the random initial weights.
    decay = min(decay, (1 + step) / (10 + step))
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def make_train_step(
    generator: Generator,
    discriminator: Discriminator,
    generator_ema: Generator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    cfg: TrainConfig,
    batch_size: int,
    device: torch.device,
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """One GAN step on a real batch: returns [d_loss, g_loss, D(x), D(G(z))] as a tensor, without syncing."""
    g_forward = torch.compile(generator) if cfg.compile else generator
    d_forward = torch.compile(discriminator) if cfg.compile else discriminator
    amp = (lambda: torch.autocast(device.type, dtype=AMP_DTYPES[cfg.precision])) if cfg.precision in AMP_DTYPES else contextlib.nullcontext
    scaler_g = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    scaler_d = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    real_target = torch.full((batch_size,), 1.0 - cfg.label_smoothing, device=device)
    ones = torch.ones(batch_size, device=device)
    zeros = torch.zeros(batch_size, device=device)

    def optimize(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def step(real: torch.Tensor, step_index: int) -> torch.Tensor:
        z = torch.randn(batch_size, generator.latent_dim, device=device)
        with amp():
            fake = g_forward(z)
        if cfg.d_updates == "joint":
            with amp():
                real_logits, fake_logits = d_forward(torch.cat([real, fake.detach()])).float().chunk(2)
            d_loss = F.binary_cross_entropy_with_logits(real_logits, real_target) + F.binary_cross_entropy_with_logits(fake_logits, zeros)
            optimize(d_loss, opt_d, scaler_d)
        else:  # the reference: one D update on the real batch, then another on the fake batch
            with amp():
                real_logits = d_forward(real).float()
            d_loss_real = F.binary_cross_entropy_with_logits(real_logits, real_target)
            optimize(d_loss_real, opt_d, scaler_d)
            with amp():
                fake_logits = d_forward(fake.detach()).float()
            d_loss_fake = F.binary_cross_entropy_with_logits(fake_logits, zeros)
            optimize(d_loss_fake, opt_d, scaler_d)
            d_loss = d_loss_real + d_loss_fake

        # Non-saturating generator loss; D's weights need no gradients here.
        discriminator.requires_grad_(False)
        with amp():
            g_logits = d_forward(fake).float()
        g_loss = F.binary_cross_entropy_with_logits(g_logits, ones)
        optimize(g_loss, opt_g, scaler_g)
        discriminator.requires_grad_(True)
        update_ema(generator_ema, generator, cfg.ema_decay, step_index)
        return torch.stack([d_loss, g_loss, real_logits.sigmoid().mean(), fake_logits.sigmoid().mean()]).detach()

    return step


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(cfg: Config, run_dir: Path, tracker: Tracker | None = None) -> dict[str, float]:
    """Train the GAN described by ``cfg``, writing samples, metrics and checkpoints under ``run_dir``.

    Returns the last epoch's record (losses, D outputs, speed).
    """
    device = resolve_device(cfg.device.name)
    torch.manual_seed(cfg.seed)
    images = training_images(cfg.data, device)
    generator = build_generator(cfg.model).to(device)
    discriminator = build_discriminator(cfg.model).to(device)
    generator_ema = copy.deepcopy(generator).requires_grad_(False)
    opt_g, opt_d = make_optimizers(generator, discriminator, cfg.optim, device)
    fixed_noise = noise(cfg.grid_size, cfg.model.latent_dim, seed=cfg.seed)
    start_epoch, step = 0, 0
    history: list[dict[str, float]] = []
    trace: list[list[float]] = []

    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume)
        for module, key in ((generator, "generator"), (discriminator, "discriminator"), (generator_ema, "generator_ema")):
            load_weights(module, ckpt[key], ckpt, cfg.model, key.replace("_", " "))
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        history, trace = ckpt["history"], ckpt["trace"].tolist()
        fixed_noise = ckpt["fixed_noise"]
        _set_rng_state(ckpt["rng"])
        log.info("resumed from %s at epoch %d (step %d)", cfg.resume, start_epoch, step)

    batch_size = cfg.data.batch_size
    steps_per_epoch = len(images) // batch_size  # drop the last partial batch: every step sees a full batch
    train_step = make_train_step(generator, discriminator, generator_ema, opt_g, opt_d, cfg.train, batch_size, device)
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    log.info("training on %s: %d images, %d steps per epoch, epochs %d..%d", device, len(images), steps_per_epoch, start_epoch + 1, cfg.epochs)

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        generator.train()
        discriminator.train()
        order = torch.randperm(len(images), device=device)
        epoch_sum = torch.zeros(len(TRACE_COLUMNS) - 1, device=device)
        window_sum, window_len = torch.zeros_like(epoch_sum), 0
        started = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", disable=None, leave=False, dynamic_ncols=True)
        for i in bar:
            stats = train_step(images[order[i * batch_size : (i + 1) * batch_size]], step)
            step += 1
            window_sum += stats
            window_len += 1
            if window_len == cfg.train.log_every or i == steps_per_epoch - 1:
                means = (window_sum / window_len).tolist()  # the only host sync, once per window
                epoch_sum += window_sum
                window_sum.zero_()
                window_len = 0
                trace.append([step, *means])
                rate = (i + 1) * batch_size / (time.perf_counter() - started)
                bar.set_postfix(d_loss=f"{means[0]:.3f}", g_loss=f"{means[1]:.3f}", img_s=f"{rate:.0f}")
                if tracker:
                    tracker.log({**dict(zip(TRACE_COLUMNS[1:], means)), "images_per_s": rate}, step)
        bar.close()
        seconds = time.perf_counter() - started

        means = (epoch_sum / steps_per_epoch).tolist()
        record = {"epoch": epoch, "step": step, **dict(zip(TRACE_COLUMNS[1:], means)),
                  "images_per_s": steps_per_epoch * batch_size / seconds, "epoch_time_s": seconds,
                  "lr_g": opt_g.param_groups[0]["lr"], "lr_d": opt_d.param_groups[0]["lr"]}
        history.append(record)
        log.info("epoch %d/%d  d_loss %.3f  g_loss %.3f  D(x) %.3f  D(G(z)) %.3f  %.0f img/s  %.1f s",
                 epoch, cfg.epochs, *means, record["images_per_s"], seconds)

        if epoch % cfg.sample_every == 0 or epoch == cfg.epochs:
            grid = save_grid(generate(generator_ema if cfg.grid_ema else generator, fixed_noise), run_dir / "samples" / f"epoch_{epoch:03d}.png")
            if tracker:
                tracker.log_grid(grid, step)
        write_metrics_csv(history, run_dir / "metrics.csv")
        plot_losses(trace, run_dir / "losses.png")
        if tracker:
            tracker.log({"epoch": epoch, "epoch_time_s": seconds}, step)

        state = {
            "epoch": epoch, "step": step,
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "generator_ema": generator_ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rng": _rng_state(), "fixed_noise": fixed_noise,
            "config": asdict(cfg), "history": history, "trace": torch.tensor(trace),
        }
        keep = (run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt",) if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs else ()
        save_checkpoint(state, run_dir / "checkpoints" / "last.pt", copies=keep)

    return history[-1] if history else {}
