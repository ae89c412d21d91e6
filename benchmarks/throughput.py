"""Steps/s of the training step train.py runs, next to the reference loop's, measured side by side.

    python -m benchmarks.throughput --data-root ../shared/data [--config "train.r1_gamma=0 train.r1_gamma_end=null" ...]

Each ``--config`` is a set of train.py overrides; the config is composed from conf/ exactly as train.py
composes it (the default recipe when no override is given), and its step is the Trainer's own GanStep on
the preloaded dataset. The loops take turns, repeat after repeat, so a machine whose speed drifts treats
them alike; each figure is the median over repeats, after warm-up steps. Also reported: FLOPs per step
(torch's FlopCounterMode, averaged over an R1 interval), the best matmul throughput at the models' layer
shapes, and the fraction of it each loop achieves.

All loops share one process: this compares the steps' own work. ``benchmarks.wall_time`` runs the
reference as its own plain process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import machine, train_config
from benchmarks.reference_loop import ReferenceLoop
from gan.trainer import Trainer


@dataclass
class Loop:
    label: str
    step: Callable[[], None]
    r1_interval: int  # FLOPs are averaged over this many steps
    batch_size: int
    steps_per_epoch: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def repo_step(overrides: list[str], data_root: str) -> tuple[Loop, torch.device]:
    """One training step of ``python train.py OVERRIDES``, and the device it runs on."""
    cfg = train_config(f"data.root={data_root}", "data.download=false", "wandb.mode=disabled", *overrides)
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()))
    order = torch.randperm(len(trainer.images), device=trainer.device)
    batch_size, steps_per_epoch = trainer.batch_size, trainer.steps_per_epoch
    position = {"step": 0}

    def step() -> None:
        i = position["step"] % steps_per_epoch
        batch = order[i * batch_size : (i + 1) * batch_size]
        trainer.gan_step(trainer.images[batch], trainer.labels[batch] if trainer.conditional else None, position["step"])
        position["step"] += 1

    interval = cfg.train.r1_every if cfg.train.r1_gamma > 0 else 1
    label = f"train.py {' '.join(overrides)}" if overrides else "train.py (default recipe)"
    return Loop(label, step, interval, batch_size, steps_per_epoch), trainer.device


def flops_per_step(step: Callable[[], None], steps: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(steps):
            step()
    return counter.get_total_flops() / steps


def kernel_seconds_per_step(step: Callable[[], None], steps: int, device: torch.device, top: int = 0) -> float | None:
    """GPU time spent in kernels and copies per step (torch.profiler); None off CUDA. Divided by the step's
    unprofiled time it is the GPU's busy share: the rest is launch overhead and host work. ``top``: also
    print the kernels that take the most time."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = prof.key_averages()
    if top:
        print(kernels.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=70))
    return sum(event.self_device_time_total for event in kernels) / 1e6 / steps


def matmul_peak_gflops(device: torch.device, repeats: int = 5) -> float:
    """Best fp32 matmul throughput over the models' layer shapes at batch 64, 128 and 256 (forward and weight-gradient forms)."""
    widths = [(100, 256), (256, 512), (512, 1024), (1024, 784), (784, 1024), (1024, 512), (512, 256)]
    best = 0.0
    for batch in (64, 128, 256):
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
                        help='train.py overrides of one loop, e.g. "train.r1_gamma=0 train.r1_gamma_end=null" for R1 off '
                             '(repeatable; default: the default recipe)')
    parser.add_argument("--steps", type=int, default=320, help="timed steps per repeat (a multiple of train.r1_every)")
    parser.add_argument("--warmup", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernels", type=int, default=0, help="on CUDA, print the N kernels that take the most time per loop")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    device = torch.device("cpu")
    loops: list[Loop] = []
    for overrides in args.config or [""]:
        loop, device = repo_step(overrides.split(), args.data_root)
        loops.append(loop)
    reference_loop = ReferenceLoop(args.data_root, device)
    loops.insert(0, Loop("reference loop", reference_loop.step, 1, 64, reference_loop.steps_per_epoch))

    flops = {loop.label: flops_per_step(loop.step, loop.r1_interval) for loop in loops}
    for loop in loops:
        for _ in range(args.warmup):
            loop.step()
    rates: dict[str, list[float]] = {loop.label: [] for loop in loops}
    for _ in range(args.repeats):  # the loops take turns
        for loop in loops:
            synchronize(device)
            started = time.perf_counter()
            for _ in range(args.steps):
                loop.step()
            synchronize(device)
            rates[loop.label].append(args.steps / (time.perf_counter() - started))
    peak = matmul_peak_gflops(device)
    kernel_seconds = {}
    for loop in loops:
        if args.kernels:
            print(f"kernels of {loop.label}, {4 * loop.r1_interval} steps:")
        kernel_seconds[loop.label] = kernel_seconds_per_step(loop.step, 4 * loop.r1_interval, device, args.kernels)

    def epoch_seconds(loop: Loop) -> float:
        return loop.steps_per_epoch / statistics.median(rates[loop.label])

    reference = epoch_seconds(loops[0])
    print(f"{machine()}; median of {args.repeats} repeats x {args.steps} steps, taking turns, after {args.warmup} warm-up steps, one process")
    print(f"fp32 matmul peak at the models' layer shapes: {peak:.0f} GFLOP/s")
    on_gpu = device.type == "cuda"
    print("| loop | batch | steps/s | images/s | one epoch | vs reference (epoch time) | GFLOP/step | GFLOP/s | % of matmul peak |"
          + (" GPU busy (kernel time / step time) |" if on_gpu else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if on_gpu else ""))
    for loop in loops:
        rate = statistics.median(rates[loop.label])
        achieved = rate * flops[loop.label] / 1e9
        print(f"| {loop.label} | {loop.batch_size} | {rate:.1f} | {rate * loop.batch_size:.0f} | {epoch_seconds(loop):.1f} s | "
              f"{reference / epoch_seconds(loop):.2f}x | {flops[loop.label] / 1e9:.2f} | {achieved:.0f} | {100 * achieved / peak:.0f}% |"
              + (f" {100 * kernel_seconds[loop.label] * rate:.0f}% |" if on_gpu else ""))


if __name__ == "__main__":
    main()
