"""Sample-quality metrics computed from feature vectors and class logits.

FID and KID follow torchmetrics' definitions to the letter (FID in float64 with the eigenvalue form of
the matrix square root; KID as the unbiased polynomial-kernel MMD averaged over random subsets), so
their numbers are those of ``torchmetrics.image.FrechetInceptionDistance`` / ``KernelInceptionDistance``
fed the same features; the tests check it. Precision and recall follow Kynkaanniemi et al. (2019): a
sample counts as precise when it falls inside the k-NN ball of some real image, a real image as recalled
when it falls inside the k-NN ball of some sample.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from gan.columns import DIGITS


class GaussianStats(NamedTuple):
    mean: torch.Tensor  # float64 (d,)
    cov: torch.Tensor  # float64 (d, d)


def gaussian_stats(features: torch.Tensor) -> GaussianStats:
    """Mean and unbiased covariance of features (N, d), in float64."""
    features = features.double()
    n = len(features)
    mean = features.sum(dim=0) / n
    cov = (features.t().mm(features) - n * torch.outer(mean, mean)) / (n - 1)
    return GaussianStats(mean, cov)


def frechet_distance(real: GaussianStats, fake: GaussianStats) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)), the square root's trace from the eigenvalues of S_r S_f."""
    mean_term = (real.mean - fake.mean).square().sum()
    sqrt_trace = torch.linalg.eigvals(real.cov @ fake.cov).sqrt().real.sum()
    return (mean_term + real.cov.trace() + fake.cov.trace() - 2 * sqrt_trace).item()


def _polynomial_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 under the kernel (x.y / d + 1)^3."""
    gamma, m = 1.0 / x.shape[1], len(x)
    k_xx, k_yy, k_xy = ((a @ b.T * gamma + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return within / (m * (m - 1)) - 2 * k_xy.sum() / m**2


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator,
                              subsets: int = 100, subset_size: int = 1000) -> float:
    """KID: the polynomial MMD^2 averaged over ``subsets`` random subsets of each set, drawn with ``generator``."""
    subset_size = min(subset_size, len(real), len(fake))
    scores = []
    for _ in range(subsets):
        real_subset = real[torch.randperm(len(real), generator=generator)[:subset_size]]
        fake_subset = fake[torch.randperm(len(fake), generator=generator)[:subset_size]]
        scores.append(_polynomial_mmd(real_subset, fake_subset))
    return torch.stack(scores).mean().item()


def knn_radii(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each feature vector to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, real_radii: torch.Tensor | None = None,
                     chunk: int = 2048) -> tuple[float, float]:
    """k-NN precision and recall in float64; ``real_radii`` (from :func:`knn_radii`) may be computed once and reused.

    Both come from one pass over the real-to-fake distances: a fake is precise when it lies within some
    real image's radius, a real image is recalled when it lies within some fake's radius.
    """
    real, fake = real.double(), fake.double()
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    fake_radii = knn_radii(fake, k)
    precise = torch.zeros(len(fake), dtype=torch.bool, device=fake.device)
    recalled = []
    for start in range(0, len(real), chunk):
        distances = torch.cdist(real[start : start + chunk], fake)  # (chunk, n_fake)
        precise |= (distances <= real_radii[start : start + chunk, None]).any(dim=0)
        recalled.append((distances <= fake_radii).any(dim=1))
    return precise.double().mean().item(), torch.cat(recalled).double().mean().item()


def class_statistics(logits: torch.Tensor) -> dict[str, float]:
    """Classifier score exp(E KL(p(y|x) || p(y))), the predicted-digit shares, their KL to uniform.

    Only the ten digit logits count: each sample is read as the digit it most resembles.
    """
    logits = logits[:, :DIGITS]
    probs = logits.double().softmax(dim=1)
    marginal = probs.mean(dim=0)
    classifier_score = math.exp((probs * (probs.clamp_min(1e-12).log() - marginal.log())).sum(dim=1).mean().item())
    shares = torch.bincount(logits.argmax(dim=1), minlength=DIGITS).double() / len(logits)
    nonzero = shares[shares > 0]
    stats: dict[str, float] = {
        "classifier_score": classifier_score,
        "class_kl": (nonzero * (nonzero * DIGITS).log()).sum().item(),
        "classes_over_5pct": int((shares >= 0.05).sum().item()),
    }
    stats.update({f"class_{digit}": share.item() for digit, share in enumerate(shares)})
    return stats
