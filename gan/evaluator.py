"""Scoring generated digits against the 10k MNIST test images, in the feature space of the repo's classifier.

One pass of the classifier gives each image's 128-d features and its class logits; every metric is
derived from those. What depends on the test images alone (their features, Gaussian statistics and
k-NN radii, and each digit's Gaussian statistics) is computed once, when the Evaluator is built.

Samples drawn for requested digits (a conditional generator) also get the label accuracy (the share
classified as the digit asked for, overall and per digit) and the intra-class FID (each digit's samples
against that digit's test images; its mean over digits, and each digit's).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gan.classifier import load_classifier
from gan.columns import DIGITS, METRICS
from gan.data import load_mnist, to_unit_range
from gan.errors import GanError
from gan.metrics import class_statistics, frechet_distance, gaussian_stats, kernel_inception_distance, knn_radii, precision_recall
from gan.models import Generator
from gan.sampling import generate, noise, sample_labels

NEIGHBOURS = 3  # k of the k-NN precision and recall
CHUNK = 2000  # images per classifier pass


class Evaluator:
    """Scores sets of images (N, 1, 28, 28) in [-1, 1] against the MNIST test set."""

    def __init__(self, data_root: str | Path, device: torch.device | str = "cpu", download: bool = True) -> None:
        self.device = torch.device(device)
        self.classifier = load_classifier(self.device)
        test_set = load_mnist(data_root, download, train=False)
        self.real_images = to_unit_range(test_set.images).to(self.device)
        self.real_features, _ = self.features_and_logits(self.real_images)
        self.real_stats = gaussian_stats(self.real_features)
        self.real_radii = knn_radii(self.real_features.double(), NEIGHBOURS)
        self.real_labels = labels = test_set.labels.to(self.device)
        self.real_stats_by_digit = {digit: gaussian_stats(self.real_features[labels == digit])
                                    for digit in range(DIGITS) if int((labels == digit).sum()) > 1}

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's penultimate features (N, 128) and its logits (N, 11), from one pass."""
        features, logits = [], []
        for chunk in images.split(CHUNK):
            chunk_features = self.classifier.features(chunk.to(self.device).float())
            features.append(chunk_features)
            logits.append(self.classifier.head(chunk_features))
        return torch.cat(features), torch.cat(logits)

    def score(self, images: torch.Tensor, seed: int = 0, labels: torch.Tensor | None = None) -> dict[str, float]:
        """Every metric of METRICS plus each digit's share; ``seed`` draws KID's random subsets; ``labels``
        (the digits the samples were drawn for) add the label accuracy and intra-class FID."""
        if len(images) < 2:
            raise GanError(f"evaluation needs at least 2 samples, got {len(images)}; use n=10000 for numbers comparable to docs/results.md.")
        features, logits = self.features_and_logits(images)
        precision, recall = precision_recall(self.real_features, features, NEIGHBOURS, self.real_radii)
        scores = {
            "fid": frechet_distance(self.real_stats, gaussian_stats(features)),
            "kid": kernel_inception_distance(self.real_features, features, torch.Generator().manual_seed(seed)),
            "precision": precision,
            "recall": recall,
            **class_statistics(logits),
        }
        if labels is not None:
            scores.update(self.conditional_scores(features, logits, labels.to(self.device)))
        return scores

    def conditional_scores(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Label accuracy and intra-class FID, overall and for each digit that has samples (and test images) to compare."""
        correct = logits[:, :DIGITS].argmax(dim=1) == labels
        scores = {"label_accuracy": correct.double().mean().item()}
        intra = {}
        for digit in range(DIGITS):
            chosen = labels == digit
            if int(chosen.sum()) > 1 and digit in self.real_stats_by_digit:
                scores[f"label_accuracy_{digit}"] = correct[chosen].double().mean().item()
                intra[digit] = frechet_distance(self.real_stats_by_digit[digit], gaussian_stats(features[chosen]))
        if intra:
            scores["intra_fid"] = sum(intra.values()) / len(intra)
            scores.update({f"intra_fid_{digit}": value for digit, value in intra.items()})
        return scores

    def classify(self, images: torch.Tensor) -> tuple[list[str], list[float]]:
        """Each image's predicted class ("0".."9", or "none": not a digit) and the classifier's confidence in it."""
        _, logits = self.features_and_logits(images)
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        return [str(c) if c < 10 else "none" for c in predicted.tolist()], confidence.tolist()

    def score_generator(self, generator: Generator, n: int, seed: int = 0) -> dict[str, float]:
        """Score ``n`` samples drawn from their own seeded noise (every digit in equal shares, for a conditional
        generator), leaving the training RNG untouched."""
        labels = conditional_labels(generator, n)
        return self.score(generate(generator, noise(n, generator.latent_dim, seed), labels), seed, labels)


def conditional_labels(generator: Generator, n: int) -> torch.Tensor | None:
    """The labels an evaluation draws ``n`` samples with: every class in equal shares, or None (unconditional)."""
    return sample_labels(generator, n) if generator.num_classes else None


def format_scores(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: one column per scored sample set, one row per metric and per class share."""
    names = list(results)
    keys = [key for key in (*METRICS, *(f"class_{digit}" for digit in range(DIGITS)),
                            *(f"{kind}_{digit}" for kind in ("label_accuracy", "intra_fid") for digit in range(DIGITS)))
            if all(key in results[name] for name in names)]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        cells = [results[name][key] for name in names]
        lines.append(f"| {key} | " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)
