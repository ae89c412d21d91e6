"""Scoring generated digits against the 10k MNIST test images, in the feature space of the repo's classifier.

One pass of the classifier gives each image's 128-d features and its class logits; every metric is
derived from those. What depends on the test images alone (their features, Gaussian statistics and
k-NN radii) is computed once, when the Evaluator is built.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gan.classifier import load_classifier
from gan.data import load_mnist, to_unit_range
from gan.errors import GanError
from gan.metrics import class_statistics, frechet_distance, gaussian_stats, kernel_inception_distance, knn_radii, precision_recall
from gan.models import Generator
from gan.sampling import generate, noise

METRICS = ("fid", "kid", "precision", "recall", "classifier_score", "class_kl", "classes_over_5pct")
NEIGHBOURS = 3  # k of the k-NN precision and recall
CHUNK = 2000  # images per classifier pass


class Evaluator:
    """Scores sets of images (N, 1, 28, 28) in [-1, 1] against the MNIST test set."""

    def __init__(self, data_root: str | Path, device: torch.device | str = "cpu", download: bool = True) -> None:
        self.device = torch.device(device)
        self.classifier = load_classifier(self.device)
        self.real_images = to_unit_range(load_mnist(data_root, download, train=False).images).to(self.device)
        self.real_features, _ = self.features_and_logits(self.real_images)
        self.real_stats = gaussian_stats(self.real_features)
        self.real_radii = knn_radii(self.real_features.double(), NEIGHBOURS)

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's penultimate features (N, 128) and its logits (N, 11), from one pass."""
        features, logits = [], []
        for chunk in images.split(CHUNK):
            chunk_features = self.classifier.features(chunk.to(self.device).float())
            features.append(chunk_features)
            logits.append(self.classifier.head(chunk_features))
        return torch.cat(features), torch.cat(logits)

    def score(self, images: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """Every metric of METRICS plus each digit's share; ``seed`` draws KID's random subsets."""
        if len(images) < 2:
            raise GanError(f"evaluation needs at least 2 samples, got {len(images)}; use n=10000 for numbers comparable to the README's.")
        features, logits = self.features_and_logits(images)
        precision, recall = precision_recall(self.real_features, features, NEIGHBOURS, self.real_radii)
        return {
            "fid": frechet_distance(self.real_stats, gaussian_stats(features)),
            "kid": kernel_inception_distance(self.real_features, features, torch.Generator().manual_seed(seed)),
            "precision": precision,
            "recall": recall,
            **class_statistics(logits),
        }

    def classify(self, images: torch.Tensor) -> tuple[list[str], list[float]]:
        """Each image's predicted class ("0".."9", or "none": not a digit) and the classifier's confidence in it."""
        _, logits = self.features_and_logits(images)
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        return [str(c) if c < 10 else "none" for c in predicted.tolist()], confidence.tolist()

    def score_generator(self, generator: Generator, n: int, seed: int = 0) -> dict[str, float]:
        """Score ``n`` samples drawn from their own seeded noise, leaving the training RNG untouched."""
        return self.score(generate(generator, noise(n, generator.latent_dim, seed)), seed)


def format_scores(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: one column per scored sample set, one row per metric and per class share."""
    names = list(results)
    keys = [*METRICS, *(f"class_{digit}" for digit in range(10))]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        cells = [results[name][key] for name in names]
        lines.append(f"| {key} | " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)
