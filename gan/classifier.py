"""The MNIST feature network behind every sample-quality metric, and how it is trained.

Inception weights cannot be downloaded offline, and an ImageNet network is a poor judge of digits
anyway, so the repo ships a small CNN classifier trained on MNIST (the usual practice for MNIST-domain
FID). Its weights are committed with their sha256, which is checked on every load.

It is trained with an 11th class, "not a digit", on synthetic noise (outlier exposure), so that noise
lands in a region of its own instead of next to some digit: without it, uniform noise scored a better FID
than a set of one digit only.

Retrain (seeded, a few minutes on CPU):  python tools/train_classifier.py --data-root ../shared/data
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan.columns import DIGITS
from gan.data import load_mnist, to_unit_range
from gan.errors import GanError

WEIGHTS = Path(__file__).parent / "assets" / "mnist_classifier.pt"
WEIGHTS_SHA256 = "1291840c7539645e8dd8d9c2c0f4211c070fe92a2cfa02b2ac6b7058c5ea00ab"


NOT_A_DIGIT = DIGITS  # index of the outlier class


class MnistClassifier(nn.Module):
    """Images (N, 1, 28, 28) in [-1, 1] -> logits (N, 11): ten digits, then "not a digit".

    ``features`` gives the 128-d penultimate layer that FID, KID, precision and recall use.
    """

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, self.num_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, DIGITS + 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_classifier(device: torch.device | str = "cpu", path: Path = WEIGHTS, expected_sha256: str = WEIGHTS_SHA256) -> MnistClassifier:
    """The committed evaluator, after checking that its weights are exactly the ones its metrics were calibrated with."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise GanError(f"cannot read the evaluator weights {path} ({err.strerror}); restore them with `git checkout {path}`.") from None
    if sha256(data) != expected_sha256:
        raise GanError(
            f"the evaluator weights {path} do not match their recorded sha256 ({sha256(data)[:12]}... instead of "
            f"{expected_sha256[:12]}...); restore them with `git checkout {path}` or retrain with `python tools/train_classifier.py`."
        )
    classifier = MnistClassifier()
    classifier.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return classifier.to(device).eval().requires_grad_(False)


@torch.no_grad()
def accuracy(classifier: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Digit accuracy: the argmax over the ten digit logits."""
    predictions = torch.cat([classifier(chunk)[:, :DIGITS].argmax(1) for chunk in images.split(2000)])
    return (predictions == labels).float().mean().item()


def outlier_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """Images that are not digits: uniform and Gaussian noise, blurred blobs, flat grey levels."""
    kind = torch.randint(4, (n, 1, 1, 1), generator=generator)
    uniform = torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1
    gaussian = (torch.randn(n, 1, 28, 28, generator=generator) * 0.5).clamp(-1, 1)
    blobs = F.interpolate(torch.rand(n, 1, 7, 7, generator=generator) * 2 - 1, size=28, mode="bilinear", align_corners=False)
    flat = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1).expand(n, 1, 28, 28)
    return torch.where(kind == 0, uniform, torch.where(kind == 1, gaussian, torch.where(kind == 2, blobs, flat)))


def train_classifier(data_root: str | Path, epochs: int = 4, seed: int = 0, batch_size: int = 128) -> tuple[MnistClassifier, float]:
    """Train the evaluator on the MNIST training set plus outliers; returns it with its test accuracy."""
    torch.manual_seed(seed)
    outlier_rng = torch.Generator().manual_seed(seed + 1)
    outlier_labels = torch.full((batch_size // 4,), NOT_A_DIGIT)
    train_set, test_set = load_mnist(data_root, download=True, train=True), load_mnist(data_root, download=True, train=False)
    images, labels = to_unit_range(train_set.images), train_set.labels
    classifier = MnistClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    for epoch in range(epochs):
        started = time.perf_counter()
        classifier.train()
        order = torch.randperm(len(images))
        for i in range(len(images) // batch_size):
            batch = order[i * batch_size : (i + 1) * batch_size]
            inputs = torch.cat([images[batch], outlier_images(len(outlier_labels), outlier_rng)])
            loss = F.cross_entropy(classifier(inputs), torch.cat([labels[batch], outlier_labels]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        classifier.eval()
        test_accuracy = accuracy(classifier, to_unit_range(test_set.images), test_set.labels)
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {test_accuracy:.4f} ({time.perf_counter() - started:.0f} s)")
    return classifier, test_accuracy


def weights_bytes(classifier: MnistClassifier) -> bytes:
    buffer = io.BytesIO()
    torch.save(classifier.state_dict(), buffer)
    return buffer.getvalue()
