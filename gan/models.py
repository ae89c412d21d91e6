"""The MLP generator and discriminator of the reference README, with configurable widths."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class Dropout(nn.Module):
    """Inverted dropout that draws its CPU masks four elements per random number.

    torch's CPU dropout draws one random number per element (``bernoulli_``), which cost D's three
    dropout layers about 4.5 ms of a 25 ms step on a 2-core CPU. Here every 64-bit random word gives
    four 16-bit uniform values, so p is rounded to a multiple of 1/65536 (0.3 becomes 0.300003).
    Elsewhere (CUDA, MPS) torch's fused kernel is already cheap and is used as it is.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        dropped = round(p * 65536)
        self.threshold = dropped - 32768  # keep an element where its int16 value is >= threshold
        self.scale = 65536 / (65536 - dropped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return x * self.cpu_factor(x)

    def with_factor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The forward's output and the factor each element was multiplied by (None: dropout is off)."""
        if not self.training or self.p == 0:
            return x, None
        if x.device.type != "cpu":
            out, keep = torch.native_dropout(x, self.p, True)
            return out, keep.to(x.dtype) / (1 - self.p)
        factor = self.cpu_factor(x)
        return x * factor, factor

    def cpu_factor(self, x: torch.Tensor) -> torch.Tensor:
        # The full 64-bit range: a plain random_() leaves the top bit 0, which would bias one value in four.
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = words.view(torch.int16)[: x.numel()].view_as(x) >= self.threshold
        return keep.to(x.dtype) * self.scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MinibatchStd(nn.Module):
    """Appends one feature: how much the features vary across each group of ``group`` samples (StyleGAN2's
    mbstd), so D can tell a batch that lacks variety, which pushes G towards more of it.

    Groups are runs of consecutive samples (StyleGAN2 strides them), so D's one forward over real images
    followed by fake ones never puts a real and a fake image in the same group: each group's spread is
    then that of real data or that of G's samples, the difference D is meant to see.
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, width = x.shape
        group = min(self.group, n)
        # The epsilon keeps the gradient finite where a feature is equal across the group (sqrt'(0) is infinite).
        spread = (x.view(-1, group, width).var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=1)  # one value per group
        # each group's value repeated for its samples (as repeat_interleave, with a view and one copy)
        return torch.cat([x, spread.unsqueeze(1).expand(-1, group).reshape(-1, 1)], dim=1)

    def extra_repr(self) -> str:
        return f"group={self.group}"


class Discriminator(nn.Module):
    """images (N, 1, 28, 28) -> real/fake logits (N / pack,).

    The reference ends in a Sigmoid; returning logits instead lets the loss use the numerically stable
    BCE-with-logits form, which equals Sigmoid + BCE but never saturates and is safe under autocast.
    With ``pack`` > 1 (PacGAN) D judges ``pack`` consecutive images at once, as one input.
    """

    def __init__(self, hidden: list[int], dropout: float = 0.0, pack: int = 1, mbstd_group: int = 0) -> None:
        super().__init__()
        self.pack, self.mbstd_group = pack, mbstd_group
        layers: list[nn.Module] = []
        width = IMAGE_PIXELS * pack
        for out in hidden:
            # Dropout is always present (p=0 is a no-op) so checkpoints load whatever the dropout rate.
            layers += [nn.Linear(width, out), nn.LeakyReLU(0.2), Dropout(dropout)]
            width = out
        if mbstd_group:
            layers.append(MinibatchStd(mbstd_group))
            width += 1
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.reshape(-1, IMAGE_PIXELS * self.pack)).squeeze(1)

    # -- D's gradient with respect to its input, for the R1 penalty --------------------------------
    # Without minibatch stddev, D is Linear, then (LeakyReLU, dropout) per hidden layer, so its input
    # gradient is a chain of weight matrices and elementwise factors: LeakyReLU's slope (1 or 0.2) times
    # the dropout factor. Those factors are piecewise constant in the weights, so the penalty's gradient
    # flows through the weight matrices alone: a forward without autograd finds the factors, and the
    # penalty takes one ordinary backward. autograd's double backward instead keeps that forward's graph
    # and propagates zeros back through the factors (the default step: 19.8 against 17.1 steps/s on 2
    # CPU cores in two throughput runs, README: Speed).

    def slopes(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's elementwise factor (LeakyReLU slope x dropout factor) at ``images``, from a
        forward that draws dropout masks as D's forward does."""
        if self.mbstd_group:
            raise ValueError("minibatch stddev mixes samples: take D's input gradient with autograd")
        x = images.reshape(-1, IMAGE_PIXELS * self.pack)
        factors: list[torch.Tensor] = []
        for layer in self.net[:-1]:
            if isinstance(layer, nn.LeakyReLU):
                factors.append(torch.where(x > 0, 1.0, layer.negative_slope).to(x.dtype))
                x = layer(x)
            elif isinstance(layer, Dropout):
                x, factor = layer.with_factor(x)
                if factor is not None:
                    factors[-1] = factors[-1] * factor
            else:
                x = layer(x)
        return factors

    def input_gradient(self, slopes: list[torch.Tensor]) -> torch.Tensor:
        """d(sum of D's logits)/d(input) at the inputs these slopes are of, (rows, 784 x pack), differentiable in the weights."""
        linears = [layer for layer in self.net if isinstance(layer, nn.Linear)]
        grad = linears[-1].weight.expand(len(slopes[-1]), -1)
        for linear, slope in zip(reversed(linears[:-1]), reversed(slopes)):
            grad = (grad * slope) @ linear.weight
        return grad


def build_generator(cfg: ModelConfig) -> Generator:
    return Generator(cfg.latent_dim, list(cfg.g_hidden))


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(list(cfg.d_hidden), cfg.d_dropout, cfg.d_pack, cfg.d_mbstd_group)
