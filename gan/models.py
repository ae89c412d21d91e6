"""The MLP generator and discriminator of the reference README, with configurable widths."""

from __future__ import annotations

import torch
from torch import nn

from gan.config import ModelConfig

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, 1, 28, 28) in [-1, 1]."""

    def __init__(self, latent_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        layers: list[nn.Module] = []
        width = latent_dim
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers += [nn.Linear(width, IMAGE_PIXELS), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *IMAGE_SHAPE)


class Discriminator(nn.Module):
    """images (N, 1, 28, 28) -> real/fake logits (N,).

    The reference ends in a Sigmoid; returning logits instead lets the loss use the numerically stable
    BCE-with-logits form, which equals Sigmoid + BCE but never saturates and is safe under autocast.
    """

    def __init__(self, hidden: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = IMAGE_PIXELS
        for out in hidden:
            # Dropout is always present (p=0 is a no-op) so checkpoints load whatever the dropout rate.
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.flatten(1)).squeeze(1)


def build_generator(cfg: ModelConfig) -> Generator:
    return Generator(cfg.latent_dim, list(cfg.g_hidden))


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(list(cfg.d_hidden), cfg.d_dropout)
