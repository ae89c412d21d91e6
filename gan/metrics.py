"""Sample-quality metrics in the evaluator's feature space, against the 10k MNIST test images.

FID and KID come from torchmetrics with our MNIST network as the feature extractor. Precision and
recall follow Kynkaanniemi et al. (2019): a sample counts as precise when it falls inside the k-NN ball
of some real image, a real image as recalled when it falls inside the k-NN ball of some sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan.data import load_mnist, to_unit_range
from gan.errors import GanError
from gan.evaluator import DIGITS, FeatureExtractor, load_classifier
from gan.models import Generator
from gan.sampling import generate, noise

METRICS = ("fid", "kid", "precision", "recall", "classifier_score", "class_kl", "classes_over_5pct")


def _knn_radii(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each feature vector to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)])


def _coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    """Share of ``queries`` lying inside at least one k-NN ball of ``support``."""
    inside = [(torch.cdist(part, support) <= radii).any(dim=1) for part in queries.split(chunk)]
    return torch.cat(inside).float().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    real, fake = real.double(), fake.double()
    return _coverage(fake, real, _knn_radii(real, k)), _coverage(real, fake, _knn_radii(fake, k))


def class_statistics(logits: torch.Tensor) -> dict[str, float]:
    """Classifier score exp(E KL(p(y|x) || p(y))), the predicted-digit shares, their KL to uniform.

    Only the ten digit logits count: each sample is read as the digit it most resembles.
    """
    logits = logits[:, :DIGITS]
    probs = logits.double().softmax(dim=1)
    marginal = probs.mean(dim=0)
    classifier_score = math.exp((probs * (probs.clamp_min(1e-12).log() - marginal.log())).sum(dim=1).mean().item())
    shares = torch.bincount(logits.argmax(dim=1), minlength=10).double() / len(logits)
    nonzero = shares[shares > 0]
    stats = {
        "classifier_score": classifier_score,
        "class_kl": (nonzero * (nonzero * 10).log()).sum().item(),
        "classes_over_5pct": int((shares >= 0.05).sum().item()),
    }
    stats.update({f"class_{digit}": share.item() for digit, share in enumerate(shares)})
    return stats


class Evaluator:
    """Scores sets of generated digits against the MNIST test set; reference statistics are computed once."""

    def __init__(self, data_root: str | Path, device: torch.device | str = "cpu", download: bool = True) -> None:
        self.device = torch.device(device)
        self.classifier = load_classifier(self.device)
        extractor = FeatureExtractor(self.classifier)
        self.real_images = to_unit_range(load_mnist(data_root, download, train=False).data).to(self.device)
        self.real_features = self.features(self.real_images)
        self.fid = FrechetInceptionDistance(feature=extractor, reset_real_features=False).to(self.device)
        self.kid = KernelInceptionDistance(feature=extractor, reset_real_features=False, subset_size=1000).to(self.device)
        for chunk in self.real_images.split(2000):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.classifier.features(chunk.to(self.device)) for chunk in images.split(2000)])

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.classifier(chunk.to(self.device)) for chunk in images.split(2000)])

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> dict[str, float]:
        """Every metric of METRICS (plus each class's share) for images (N, 1, 28, 28) in [-1, 1]."""
        if len(images) < 2:
            raise GanError(f"evaluation needs at least 2 samples, got {len(images)}; use n=10000 for numbers comparable to the README's.")
        images = images.to(self.device).float()
        self.fid.reset()
        self.kid.reset()
        self.kid.subset_size = min(1000, len(images), len(self.real_images))
        for chunk in images.split(2000):
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
        kid_mean, _ = self.kid.compute()
        precision, recall = precision_recall(self.real_features, self.features(images))
        return {"fid": self.fid.compute().item(), "kid": kid_mean.item(), "precision": precision, "recall": recall,
                **class_statistics(self.logits(images))}

    def score_generator(self, generator: Generator, n: int, seed: int = 0) -> dict[str, float]:
        """Score ``n`` samples drawn with their own seeded noise, leaving the training RNG untouched."""
        return self.score(generate(generator, noise(n, generator.latent_dim, seed)))


def format_scores(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: one column per scored sample set, one row per metric and per class share."""
    names = list(results)
    keys = [*METRICS, *(f"class_{digit}" for digit in range(10))]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        cells = [results[name][key] for name in names]
        lines.append(f"| {key} | " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)
