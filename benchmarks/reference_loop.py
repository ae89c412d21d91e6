"""A faithful re-implementation of the reference README's training loop, the baseline of every speed figure.

    python benchmarks/reference_loop.py --data-root ../shared/data --epochs 2

torchvision's MNIST through a DataLoader with ToTensor + Normalize per image, batch 64, shuffled; G
100-256-512-1024-784 and D 784-1024-512-256-1 ending in a Sigmoid; BCELoss; Adam 0.0002 with torch's
default betas for both; per step two D updates (real batch, then fake batch) and one G update through
the unfrozen D. Like the reference, it picks CUDA when present. It does nothing else per epoch, so its
times are a lower bound for the reference program.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST


def reference_models(device: torch.device) -> tuple[nn.Module, nn.Module]:
    generator = nn.Sequential(nn.Linear(100, 256), nn.ReLU(True), nn.Linear(256, 512), nn.ReLU(True),
                              nn.Linear(512, 1024), nn.ReLU(True), nn.Linear(1024, 784), nn.Tanh())
    discriminator = nn.Sequential(nn.Linear(784, 1024), nn.LeakyReLU(0.2, True), nn.Linear(1024, 512), nn.LeakyReLU(0.2, True),
                                  nn.Linear(512, 256), nn.LeakyReLU(0.2, True), nn.Linear(256, 1), nn.Sigmoid())
    return generator.to(device), discriminator.to(device)


class ReferenceLoop:
    """The reference's data, models and optimizers; ``step`` trains on the next batch, ``epoch`` on all of them."""

    def __init__(self, data_root: str, device: torch.device) -> None:
        dataset = MNIST(data_root, train=True, download=False,
                        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
        self.loader = DataLoader(dataset, batch_size=64, shuffle=True)
        self.device = device
        self.generator, self.discriminator = reference_models(device)
        self.criterion = nn.BCELoss()
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=0.0002)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=0.0002)
        self.batches = iter(self.loader)
        self.steps_per_epoch = len(self.loader)

    def train_on(self, data: torch.Tensor) -> None:
        real = data.view(-1, 28 * 28).to(self.device)
        n = real.size(0)
        real_labels = torch.full((n, 1), 1.0, device=self.device)
        fake_labels = torch.full((n, 1), 0.0, device=self.device)
        self.opt_d.zero_grad()
        self.criterion(self.discriminator(real), real_labels).backward()
        self.opt_d.step()
        self.opt_d.zero_grad()
        fake = self.generator(torch.randn(n, 100, device=self.device))
        self.criterion(self.discriminator(fake.detach()), fake_labels).backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        self.criterion(self.discriminator(fake), real_labels).backward()
        self.opt_g.step()

    def step(self) -> None:
        try:
            data, _ = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            data, _ = next(self.batches)
        self.train_on(data)

    def epoch(self) -> None:
        for data, _ in self.loader:
            self.train_on(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder holding MNIST/raw (default: ./data)")
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loop = ReferenceLoop(args.data_root, device)
    for epoch in range(args.epochs):
        started = time.perf_counter()
        loop.epoch()
        print(f"epoch {epoch + 1}/{args.epochs}: {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
