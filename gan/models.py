"""The networks, behind the small interface the training step talks to.

A :class:`Generator` maps latents ``z`` (N, latent_dim) and class labels (N,) to images (N, 1, 28, 28) in
[-1, 1]; a :class:`Discriminator` maps images and labels to real/fake logits and gives its input
gradient for the R1 penalty. ``num_classes`` 0 means unconditional, and then ``labels`` is None. The
model config names the two classes by import path (``model.generator: gan.models.MlpGenerator``) and
each is built by its ``from_config(model_config)``, so a new model is a pair of classes and a YAML
option, with nothing to change in the step or the loop (docs/architecture.md).
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from gan.config import ModelConfig
from gan.errors import GanError

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28


class Generator(nn.Module):
    """The generator interface: ``forward(z, labels)`` -> images (N, 1, 28, 28) in [-1, 1]."""

    latent_dim: int
    num_classes: int  # 0: unconditional (labels is None)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> Generator:
        raise NotImplementedError

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class Discriminator(nn.Module):
    """The discriminator interface: ``forward(images, labels)`` -> logits, one per ``images_per_logit`` images."""

    num_classes: int  # 0: unconditional (labels is None)
    images_per_logit: int = 1

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> Discriminator:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def input_gradient(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """d(sum of logits)/d(images), differentiable in the weights: the R1 penalty is its squared norm.

        The general way is autograd's double backward; a model may override it with a faster written-out form.
        """
        leaf = images.detach().requires_grad_(True)
        # D reads a copy: autograd.grad refuses a leaf as the input of a module with backward hooks
        # (profilers, FlopCounterMode), and the copy's gradient reaches the leaf all the same.
        logits = self(leaf.clone(), labels).float()
        (grad,) = torch.autograd.grad(logits.sum(), leaf, create_graph=True)
        return grad


class MlpGenerator(Generator):
    """The reference MLP: z -> hidden layers (ReLU) -> 784 pixels (Tanh). Conditional: the label's one-hot joins z."""

    def __init__(self, latent_dim: int, hidden: list[int], num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        layers: list[nn.Module] = []
        width = latent_dim + num_classes
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers += [nn.Linear(width, IMAGE_PIXELS), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> MlpGenerator:
        return cls(cfg.latent_dim, list(cfg.g_hidden), cfg.num_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            # The first layer's columns for the one-hot are the label's learned embedding.
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.net(z).view(-1, *IMAGE_SHAPE)


class Dropout(nn.Dropout):
    """nn.Dropout that can also return the factor each element was multiplied by (for D's written-out input
    gradient); forward and ``with_factor`` draw their masks with the same op, so equal RNG states give equal masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_factor(x)[0]

    def with_factor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.training or self.p == 0:
            return x, None
        out, keep = torch.native_dropout(x, self.p, True)
        return out, keep.to(x.dtype) / (1 - self.p)


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
        centred, sigma = self.centred_and_sigma(x)
        spread = sigma.mean(dim=2)  # one value per group, (groups, 1)
        # each group's value repeated for its samples (as repeat_interleave, with a view and one copy)
        return torch.cat([x, spread.to(x.dtype).expand(-1, centred.shape[1]).reshape(-1, 1)], dim=1)

    def centred_and_sigma(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, width) as groups less their mean (groups, group, width), and each feature's spread in
        its group, sqrt(var + eps) (groups, 1, width)."""
        if x.dtype == torch.float16:  # in fp16 the squares of small deviations underflow to 0, where sqrt' is infinite
            x = x.float()
        n, width = x.shape
        grouped = x.view(-1, min(self.group, n), width)
        centred = grouped - grouped.mean(dim=1, keepdim=True)
        # Written out: torch.var over the middle dimension is many times slower on the CPU (docs/speed.md). The epsilon keeps
        # the gradient finite where a feature is equal across the group (sqrt'(0) is infinite).
        return centred, (centred.pow(2).mean(dim=1, keepdim=True) + 1e-8).sqrt()

    def feature_gradient(self, x: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
        """d(sum_i outer_i * spread_of_group(i))/dx for features ``x`` (N, width) and ``outer`` (N,), the
        gradient the appended feature sends back to ``x``, written out and differentiable in ``x``.

        A group's spread is mean_k sigma_k with sigma_k = sqrt(var_k + eps) over the group, so
        d spread/d x_jk = (x_jk - mean_k) / (group * width * sigma_k); each sample of the group reads it.
        """
        centred, sigma = self.centred_and_sigma(x)
        groups, group, width = centred.shape
        outer_per_group = outer.reshape(groups, group).sum(dim=1).view(-1, 1, 1)
        return (outer_per_group * centred / (group * width * sigma)).view(-1, width)

    def extra_repr(self) -> str:
        return f"group={self.group}"


class MlpDiscriminator(Discriminator):
    """The reference MLP: 784 pixels -> hidden layers (LeakyReLU 0.2, optional dropout) -> one logit.

    The reference ends in a Sigmoid; returning logits instead lets the loss use the numerically stable
    BCE-with-logits form, which equals Sigmoid + BCE but never saturates and is safe under autocast.
    With ``pack`` > 1 (PacGAN) D judges ``pack`` consecutive images at once, as one input. Conditional
    (``num_classes`` > 0), it is a projection discriminator (Miyato & Koyama, 2018): the logit gains the
    inner product of the last hidden features with a learned embedding of the label.
    """

    def __init__(self, hidden: list[int], dropout: float = 0.0, pack: int = 1, mbstd_group: int = 0, num_classes: int = 0) -> None:
        super().__init__()
        self.pack, self.mbstd_group, self.num_classes = pack, mbstd_group, num_classes
        self.images_per_logit = pack
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
        if num_classes:
            self.label_embedding = nn.Embedding(num_classes, width)
            nn.init.uniform_(self.label_embedding.weight, -width**-0.5, width**-0.5)  # as the last layer's weights

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> MlpDiscriminator:
        return cls(list(cfg.d_hidden), cfg.d_dropout, cfg.d_pack, cfg.d_mbstd_group, cfg.num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.reshape(-1, IMAGE_PIXELS * self.pack)
        if not self.num_classes:
            return self.net(x).squeeze(1)
        features = self.net[:-1](x)
        return self.net[-1](features).squeeze(1) + (self.label_embedding(labels) * features).sum(dim=1)

    # -- D's gradient with respect to its input, for the R1 penalty --------------------------------
    # D is Linear, then (LeakyReLU, dropout) per hidden layer, then (with minibatch stddev) the group's
    # spread, then the last Linear. Back to the last hidden features h, the input gradient is a chain of
    # weight matrices and elementwise factors: LeakyReLU's slope (1 or 0.2) times the dropout factor. Those
    # factors are piecewise constant in the weights, so the penalty's gradient flows through the weight
    # matrices alone: a forward without autograd finds the factors, and the penalty takes one ordinary
    # backward instead of autograd's double backward, which would keep that forward's graph and propagate
    # zeros back through the factors (docs/speed.md has the figures). Minibatch stddev adds a term smooth
    # in h (``MinibatchStd.feature_gradient``), so with it the forward keeps autograd for h alone.

    def input_gradient(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.set_grad_enabled(bool(self.mbstd_group) and torch.is_grad_enabled()):
            features, slopes = self.features_and_slopes(images)
        linears = [layer for layer in self.net if isinstance(layer, nn.Linear)]
        # d(logit)/d(the last layer's input): its weights, plus the label's embedding when conditional
        grad = linears[-1].weight if not self.num_classes else linears[-1].weight + self.label_embedding(labels)
        grad = grad.expand(len(features), -1)
        if self.mbstd_group:
            mbstd = self.net[-2]
            grad = grad[:, :-1] + mbstd.feature_gradient(features, grad[:, -1])
        for linear, slope in zip(reversed(linears[:-1]), reversed(slopes)):
            grad = (grad * slope) @ linear.weight
        return grad

    def features_and_slopes(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last hidden features and each hidden layer's elementwise factor (LeakyReLU slope x dropout
        factor) at ``images``, from a forward that draws dropout masks as D's forward does."""
        x = images.reshape(-1, IMAGE_PIXELS * self.pack)
        factors: list[torch.Tensor] = []
        for layer in self.net[: -2 if self.mbstd_group else -1]:  # the hidden layers
            if isinstance(layer, nn.LeakyReLU):
                factors.append(torch.where(x > 0, 1.0, layer.negative_slope).to(x.dtype))
                x = layer(x)
            elif isinstance(layer, Dropout):
                x, factor = layer.with_factor(x)
                if factor is not None:
                    factors[-1] = factors[-1] * factor
            else:
                x = layer(x)
        return x, factors


def _model_class(cfg: ModelConfig, key: str, interface: type) -> type:
    path = getattr(cfg, key)
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise GanError(f"model.{key}={path} is not an importable {interface.__module__}.{interface.__name__} class; "
                       f"name one such as gan.models.Mlp{interface.__name__}.")
    return cls


def build_generator(cfg: ModelConfig) -> Generator:
    return _model_class(cfg, "generator", Generator).from_config(cfg)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return _model_class(cfg, "discriminator", Discriminator).from_config(cfg)
