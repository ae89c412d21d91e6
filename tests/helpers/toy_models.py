"""A model that is not the repo's MLP, named by import path from the config (model.generator=helpers.toy_models.LinearGenerator):
it proves the seam, since nothing in the step or the loop knows it. Its discriminator keeps the interface's
general R1 path (autograd's double backward)."""

from __future__ import annotations

import torch
from torch import nn

from gan.config import ModelConfig
from gan.models import IMAGE_PIXELS, IMAGE_SHAPE, Discriminator, Generator


class LinearGenerator(Generator):
    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.linear = nn.Linear(latent_dim, IMAGE_PIXELS)
        self.label_bias = nn.Embedding(max(num_classes, 1), IMAGE_PIXELS)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> LinearGenerator:
        return cls(cfg.latent_dim, cfg.num_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.linear(z)
        if labels is not None:
            out = out + self.label_bias(labels)
        return out.tanh().view(-1, *IMAGE_SHAPE)


class LinearDiscriminator(Discriminator):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(IMAGE_PIXELS, 1)
        self.label_weight = nn.Embedding(max(num_classes, 1), IMAGE_PIXELS)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> LinearDiscriminator:
        return cls(cfg.num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.reshape(-1, IMAGE_PIXELS)
        logits = self.linear(x).squeeze(1)
        if labels is not None:
            logits = logits + (self.label_weight(labels) * x.square()).sum(1)  # non-linear in x: R1 has a double backward to take
        return logits


class NotAModel(nn.Module):
    pass
