"""Steps/s of the reference's training loop against this repo's, on the same machine in one run.

    python -m benchmarks.throughput --data-root ../shared/data [--device cpu] [--precision fp32] [--compile]

(a) a faithful re-implementation of the reference README's loop: torchvision DataLoader with
    ToTensor + Normalize per image, batch 64, Sigmoid + BCELoss, two separate D updates, default Adam;
(b) this repo's loop (gan.training.make_train_step on a preloaded tensor) with the chosen options.
Also measured: the device's matmul throughput at the model's layer shapes (the roofline), FLOPs per step
(torch's FlopCounterMode), and from those the achieved GFLOP/s and fraction of peak. Warm-up steps are
excluded; each figure is the median of several repeats.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms
from torchvision.datasets import MNIST

from gan.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from gan.data import training_images
from gan.device import resolve_device
from gan.models import build_discriminator, build_generator
from gan.training import make_optimizers, make_train_step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_models(device: torch.device) -> tuple[nn.Module, nn.Module]:
    generator = nn.Sequential(nn.Linear(100, 256), nn.ReLU(True), nn.Linear(256, 512), nn.ReLU(True),
                              nn.Linear(512, 1024), nn.ReLU(True), nn.Linear(1024, 784), nn.Tanh())
    discriminator = nn.Sequential(nn.Linear(784, 1024), nn.LeakyReLU(0.2, True), nn.Linear(1024, 512), nn.LeakyReLU(0.2, True),
                                  nn.Linear(512, 256), nn.LeakyReLU(0.2, True), nn.Linear(256, 1), nn.Sigmoid())
    return generator.to(device), discriminator.to(device)


def reference_loop(data_root: str, device: torch.device) -> tuple[Callable[[], None], Callable[[], None]]:
    """The reference's loop: returns (run one step, run one step under the FLOP counter)."""
    dataset = MNIST(data_root, train=True, download=False,
                    transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    generator, discriminator = reference_models(device)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=0.0002)
    opt_g = torch.optim.Adam(generator.parameters(), lr=0.0002)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            data, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            data, _ = next(batches)
        real = data.view(-1, 28 * 28).to(device)
        n = real.size(0)
        real_labels = torch.full((n, 1), 1.0, device=device)
        fake_labels = torch.full((n, 1), 0.0, device=device)
        opt_d.zero_grad()
        criterion(discriminator(real), real_labels).backward()
        opt_d.step()
        opt_d.zero_grad()
        fake = generator(torch.randn(n, 100, device=device))
        criterion(discriminator(fake.detach()), fake_labels).backward()
        opt_d.step()
        opt_g.zero_grad()
        criterion(discriminator(fake), real_labels).backward()
        opt_g.step()

    return step, step


def repo_loop(data_root: str, device: torch.device, train_cfg: TrainConfig) -> tuple[Callable[[], None], Callable[[], None]]:
    model_cfg, batch_size = ModelConfig(), 64
    images = training_images(DataConfig(root=data_root, download=False, batch_size=batch_size), device)
    generator, discriminator = build_generator(model_cfg).to(device), build_discriminator(model_cfg).to(device)
    generator_ema = copy.deepcopy(generator).requires_grad_(False)
    opt_g, opt_d = make_optimizers(generator, discriminator, OptimConfig(), device)
    train_step = make_train_step(generator, discriminator, generator_ema, opt_g, opt_d, train_cfg, batch_size, device)
    order = torch.randperm(len(images), device=device)
    position = {"i": 0, "step": 0}
    steps_per_epoch = len(images) // batch_size

    def step() -> None:
        i = position["i"] % steps_per_epoch
        train_step(images[order[i * batch_size : (i + 1) * batch_size]], position["step"])
        position["i"] += 1
        position["step"] += 1

    # The FLOP count is of the plain eager step: a compiled one is the same math.
    eager_cfg = TrainConfig(**{**train_cfg.__dict__, "compile": False})
    eager_step = make_train_step(generator, discriminator, generator_ema, opt_g, opt_d, eager_cfg, batch_size, device)
    return step, lambda: eager_step(images[:batch_size], 0)


def flops_per_step(step: Callable[[], None]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def steps_per_second(step: Callable[[], None], device: torch.device, steps: int, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps / (time.perf_counter() - started))
    return statistics.median(rates)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best matmul throughput over the models' layer shapes at batch 64 and 128 (forward and weight-gradient forms)."""
    widths = [(100, 256), (256, 512), (512, 1024), (1024, 784), (784, 1024), (1024, 512), (512, 256)]
    best = 0.0
    for batch in (64, 128):
        for k, n in widths:
            for a_shape, b_shape in (((batch, k), (k, n)), ((k, batch), (batch, n))):
                a = torch.randn(*a_shape, device=device, dtype=dtype)
                b = torch.randn(*b_shape, device=device, dtype=dtype)
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
    parser.add_argument("--data-root", default="./data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--r1-gamma", type=float, default=TrainConfig.r1_gamma,
                        help="R1 penalty of (b) (default: the default recipe's); 0 measures the loop without it")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    train_cfg = TrainConfig(precision=args.precision, compile=args.compile, r1_gamma=args.r1_gamma)

    reference_step, reference_flop_step = reference_loop(args.data_root, device)
    repo_step, repo_flop_step = repo_loop(args.data_root, device, train_cfg)
    reference_flops, repo_flops = flops_per_step(reference_flop_step), flops_per_step(repo_flop_step)
    peak = matmul_peak_gflops(device, torch.bfloat16 if args.precision == "bf16" else torch.float16 if args.precision == "fp16" else torch.float32)
    reference_rate = steps_per_second(reference_step, device, args.steps, args.warmup, args.repeats)
    repo_rate = steps_per_second(repo_step, device, args.steps, args.warmup, args.repeats)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    rows = [("(a) reference loop", reference_rate, reference_flops), (f"(b) this repo ({args.precision}, R1 {'on' if args.r1_gamma else 'off'}{', compiled' if args.compile else ''})", repo_rate, repo_flops)]
    print(f"device: {device} ({name}), torch {torch.__version__}, batch 64, {args.repeats} repeats x {args.steps} steps (median), {args.warmup} warm-up steps")
    print(f"matmul peak at the model's shapes: {peak:.1f} GFLOP/s")
    print("| loop | steps/s | images/s | GFLOP/step | GFLOP/s | % of matmul peak | 50 epochs (937 steps each) |")
    print("|---|---|---|---|---|---|---|")
    for label, rate, flops in rows:
        achieved = rate * flops / 1e9
        print(f"| {label} | {rate:.1f} | {rate * 64:.0f} | {flops / 1e9:.2f} | {achieved:.1f} | {100 * achieved / peak:.0f}% | {50 * 937 / rate / 60:.1f} min |")
    print(f"speed-up (b)/(a): {repo_rate / reference_rate:.2f}x")


if __name__ == "__main__":
    main()
