"""Steps/s of the training step train.py runs, next to the reference loop's, measured side by side.

    python -m benchmarks.throughput --data-root ../shared/data [--config "train.r1_gamma=0" ...]

Each ``--config`` is a set of train.py overrides; the config is composed from conf/ exactly as train.py
composes it (the default recipe when no override is given), and its step is the Trainer's own GanStep on
the preloaded dataset. The loops take turns, repeat after repeat, so a machine whose speed drifts treats
them alike; each figure is the median over repeats, after warm-up steps. Also reported: FLOPs per step
(torch's FlopCounterMode, averaged over an R1 interval), the best matmul throughput at the models' layer
shapes, and the fraction of it each loop achieves.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import machine, train_config
from benchmarks.reference_loop import ReferenceLoop
from gan.trainer import Trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def repo_step(overrides: list[str], data_root: str) -> tuple[Callable[[], None], int, torch.device]:
    """One training step of ``python train.py OVERRIDES``; returns it, the steps of one R1 interval, the device."""
    cfg = train_config(f"data.root={data_root}", "data.download=false", "wandb.mode=disabled", *overrides)
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()))
    order = torch.randperm(len(trainer.images), device=trainer.device)
    batch_size, steps_per_epoch = trainer.batch_size, trainer.steps_per_epoch
    position = {"step": 0}

    def step() -> None:
        i = position["step"] % steps_per_epoch
        trainer.gan_step(trainer.images[order[i * batch_size : (i + 1) * batch_size]], position["step"])
        position["step"] += 1

    interval = cfg.train.r1_every if cfg.train.r1_gamma > 0 else 1
    return step, interval, trainer.device


def flops_per_step(step: Callable[[], None], steps: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(steps):
            step()
    return counter.get_total_flops() / steps


def matmul_peak_gflops(device: torch.device, repeats: int = 5) -> float:
    """Best fp32 matmul throughput over the models' layer shapes at batch 64 and 128 (forward and weight-gradient forms)."""
    widths = [(100, 256), (256, 512), (512, 1024), (1024, 784), (784, 1024), (1024, 512), (512, 256)]
    best = 0.0
    for batch in (64, 128):
        for k, n in widths:
            for a_shape, b_shape in (((batch, k), (k, n)), ((k, batch), (batch, n))):
                a, b = torch.randn(*a_shape, device=device), torch.randn(*b_shape, device=device)
                flops = 2 * a_shape[0] * a_shape[1] * b_shape[1]
                iterations = max(10, int(2e9 / flops))
                for _ in range(3):
                    a @ b
                synchronize(device)
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    for _ in range(iterations):
                        a @ b
                    synchronize(device)
                    times.append((time.perf_counter() - started) / iterations)
                best = max(best, flops / min(times) / 1e9)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder holding MNIST/raw (default: ./data)")
    parser.add_argument("--config", action="append", default=None,
                        help='train.py overrides of one loop, e.g. "train.r1_gamma=0 model.d_dropout=0" (repeatable; default: the default recipe)')
    parser.add_argument("--steps", type=int, default=320, help="timed steps per repeat (a multiple of train.r1_every)")
    parser.add_argument("--warmup", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    loops: list[tuple[str, Callable[[], None], int]] = []
    device = torch.device("cpu")
    for overrides in args.config or [""]:
        step, interval, device = repo_step(overrides.split(), args.data_root)
        loops.append((f"train.py {overrides}".strip() if overrides else "train.py (default recipe)", step, interval))
    loops.insert(0, ("reference loop", ReferenceLoop(args.data_root, device).step, 1))

    flops = {label: flops_per_step(step, interval) for label, step, interval in loops}
    for _, step, _ in loops:
        for _ in range(args.warmup):
            step()
    rates: dict[str, list[float]] = {label: [] for label, _, _ in loops}
    for _ in range(args.repeats):  # the loops take turns
        for label, step, _ in loops:
            synchronize(device)
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            synchronize(device)
            rates[label].append(args.steps / (time.perf_counter() - started))
    peak = matmul_peak_gflops(device)

    reference = statistics.median(rates["reference loop"])
    print(f"{machine()}; batch 64; median of {args.repeats} repeats x {args.steps} steps, taking turns, after {args.warmup} warm-up steps")
    print(f"fp32 matmul peak at the models' layer shapes: {peak:.0f} GFLOP/s")
    print("| loop | steps/s | images/s | vs reference | GFLOP/step | GFLOP/s | % of matmul peak | one epoch (937 steps) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, _, _ in loops:
        rate = statistics.median(rates[label])
        achieved = rate * flops[label] / 1e9
        print(f"| {label} | {rate:.1f} | {rate * 64:.0f} | {rate / reference:.2f}x | {flops[label] / 1e9:.2f} | {achieved:.0f} | "
              f"{100 * achieved / peak:.0f}% | {937 / rate:.1f} s |")


if __name__ == "__main__":
    main()
