"""Sample-quality metrics: known inputs give known answers, equal to torchmetrics', from one classifier pass."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gan.classifier import WEIGHTS, accuracy, load_classifier
from gan.columns import METRICS
from gan.data import load_mnist, to_unit_range
from gan.errors import GanError
from gan.evaluator import Evaluator, format_scores
from gan.history import read_metrics_csv
from gan.metrics import class_statistics, precision_recall
from helpers.mnist_files import make_tiny_mnist, real_mnist_root
from helpers.runs import EVALUATED, NEEDS_REAL_MNIST, run_quick, run_script

UNCONDITIONAL_METRICS = set(METRICS) - {"label_accuracy", "intra_fid"}


def test_precision_recall_of_identical_and_disjoint_sets():
    torch.manual_seed(0)
    real = torch.randn(500, 16)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = torch.randn(500, 16) + 100
    assert precision_recall(real, far) == (0.0, 0.0)
    # A generator covering only half of the real modes: precise, but recalls about half.
    modes = torch.cat([torch.randn(250, 16) * 0.1, torch.randn(250, 16) * 0.1 + 10])
    precision, recall = precision_recall(modes, modes[:250] + torch.randn(250, 16) * 0.01)
    assert precision > 0.95 and 0.4 < recall < 0.6


def test_class_statistics_flag_a_collapsed_set_and_pass_a_balanced_one():
    one_digit = torch.full((1000, 10), -10.0)
    one_digit[:, 3] = 10
    collapsed = class_statistics(one_digit)
    assert collapsed["classes_over_5pct"] == 1 and collapsed["class_3"] == 1.0
    assert collapsed["class_kl"] == pytest.approx(math.log(10))
    assert collapsed["classifier_score"] == pytest.approx(1.0, abs=1e-3)

    balanced = torch.full((1000, 10), -10.0)
    balanced[torch.arange(1000), torch.arange(1000) % 10] = 10
    stats = class_statistics(balanced)
    assert stats["classes_over_5pct"] == 10 and stats["class_kl"] == pytest.approx(0.0, abs=1e-9)
    assert stats["classifier_score"] == pytest.approx(10.0, rel=1e-3)


def test_evaluator_weights_are_verified(tmp_path):
    assert load_classifier().num_features == 128
    tampered = tmp_path / "classifier.pt"
    data = bytearray(WEIGHTS.read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(GanError, match="do not match their recorded sha256.*git checkout"):
        load_classifier(path=tampered)
    with pytest.raises(GanError, match="cannot read the evaluator weights"):
        load_classifier(path=tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def tiny_evaluator(tmp_path_factory) -> Evaluator:
    """An evaluator whose 'test set' is 512 random images: fast, and enough to check the arithmetic."""
    return Evaluator(make_tiny_mnist(tmp_path_factory.mktemp("mnist-eval"), n_train=64, n_test=512), download=False)


@pytest.fixture(scope="module")
def real_evaluator() -> Evaluator:
    if real_mnist_root() is None:
        pytest.skip("needs the real MNIST files (DATA_ROOT)")
    return Evaluator(real_mnist_root(), download=False)


def test_identical_sets_score_fid_zero_and_full_recall(tiny_evaluator):
    evaluator = tiny_evaluator
    scores = evaluator.score(evaluator.real_images)
    assert scores.keys() & set(METRICS) == UNCONDITIONAL_METRICS, "no label metrics without requested labels"
    assert abs(scores["fid"]) < 1e-6
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0


class ClassifierFeatures(nn.Module):
    """The classifier as a torchmetrics feature extractor, as the evaluator used it before it computed features once."""

    def __init__(self, evaluator: Evaluator) -> None:
        super().__init__()
        self.classifier, self.num_features = evaluator.classifier, 128

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())


def scores_the_old_way(evaluator: Evaluator, images: torch.Tensor, seed: int) -> dict[str, float]:
    """torchmetrics' FID and KID modules plus separate feature and logit passes, KID's subsets from the global RNG."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    extractor = ClassifierFeatures(evaluator)
    fid = FrechetInceptionDistance(feature=extractor)
    kid = KernelInceptionDistance(feature=extractor, subset_size=min(1000, len(images), len(evaluator.real_images)))
    for metric in (fid, kid):
        for chunk in evaluator.real_images.split(2000):
            metric.update(chunk, real=True)
        for chunk in images.split(2000):
            metric.update(chunk, real=False)
    torch.manual_seed(seed)
    kid_mean, _ = kid.compute()
    with torch.no_grad():
        real_features = torch.cat([evaluator.classifier.features(c) for c in evaluator.real_images.split(2000)])
        fake_features = torch.cat([evaluator.classifier.features(c) for c in images.split(2000)])
        logits = torch.cat([evaluator.classifier(c) for c in images.split(2000)])
    precision, recall = precision_recall(real_features, fake_features)
    return {"fid": fid.compute().item(), "kid": kid_mean.item(), "precision": precision, "recall": recall, **class_statistics(logits)}


@pytest.mark.parametrize("which", ["tiny", pytest.param("real", marks=pytest.mark.slow)])
def test_one_pass_scores_equal_the_torchmetrics_scores(which, request):
    evaluator = request.getfixturevalue(f"{which}_evaluator")
    # A fixed, imperfect sample set: test images with noise added, so no metric sits at its bound.
    generator = torch.Generator().manual_seed(0)
    n = min(1500, len(evaluator.real_images) - 24)
    images = (evaluator.real_images[torch.randperm(len(evaluator.real_images), generator=generator)[:n]]
              + 0.4 * torch.randn(n, 1, 28, 28, generator=generator)).clamp(-1, 1)
    new, old = evaluator.score(images, seed=7), scores_the_old_way(evaluator, images, seed=7)
    assert new.keys() == old.keys()
    for key in new:
        assert new[key] == pytest.approx(old[key], rel=1e-4, abs=1e-9), key


@pytest.mark.slow
def test_noise_has_no_recall_and_a_large_fid(real_evaluator):
    evaluator = real_evaluator
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores, real = evaluator.score(noise), evaluator.score(evaluator.real_images[:1000])
    assert scores["recall"] < 0.01 and scores["precision"] < 0.01
    assert scores["fid"] > 100 * max(real["fid"], 1.0)
    # KID averages random subsets, so even a subset of the reference gives an estimate scattered
    # around 0; against noise it is orders of magnitude larger.
    assert abs(real["kid"]) < 0.01 * scores["kid"]


@pytest.mark.slow
@NEEDS_REAL_MNIST
def test_calibration_ranks_floor_collapse_and_ceiling():
    result = run_script("tools/calibrate_metrics.py", "--data-root", str(real_mnist_root()), "--n", "2000", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metrics rank the sets correctly: True" in result.stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in result.stdout.splitlines() if line.startswith("| ")}
    assert rows["classes_over_5pct"][1].strip() == "1", "a one-digit set is flagged by class balance"
    assert int(rows["classes_over_5pct"][0]) == 10


@pytest.mark.slow
@NEEDS_REAL_MNIST
def test_evaluator_accuracy_on_real_test_set():
    test = load_mnist(real_mnist_root(), download=False, train=False)
    assert accuracy(load_classifier(), to_unit_range(test.images), test.labels) >= 0.99


def test_label_metrics_compare_each_digit_with_its_own_test_images(tiny_evaluator):
    evaluator = tiny_evaluator
    images, labels = evaluator.real_images, evaluator.real_labels
    scores = evaluator.score(images, labels=labels)
    predicted = evaluator.features_and_logits(images)[1][:, :10].argmax(1)
    assert scores["label_accuracy"] == pytest.approx((predicted == labels).double().mean().item())
    for digit in range(10):
        chosen = labels == digit
        assert scores[f"label_accuracy_{digit}"] == pytest.approx((predicted[chosen] == digit).double().mean().item())
        assert abs(scores[f"intra_fid_{digit}"]) < 1e-4, "a digit's own test images are at distance 0 (to rounding)"
    assert abs(scores["intra_fid"]) < 1e-4
    shuffled = evaluator.score(images, labels=labels.roll(1))
    assert shuffled["intra_fid"] > 1.0, "the same images asked for as other digits are far from those digits' images"
    assert "| label_accuracy |" in format_scores({"ema": scores}) and "| intra_fid_9 |" in format_scores({"ema": scores})


@pytest.mark.slow
def test_label_accuracy_of_the_real_test_set_is_the_classifiers_accuracy(real_evaluator):
    evaluator = real_evaluator
    truthful = evaluator.score(evaluator.real_images, labels=evaluator.real_labels)
    assert truthful["label_accuracy"] >= 0.99 and min(truthful[f"label_accuracy_{d}"] for d in range(10)) >= 0.97
    assert truthful["intra_fid"] < 1e-4
    mislabelled = evaluator.score(evaluator.real_images, labels=(evaluator.real_labels + 1) % 10)
    assert mislabelled["label_accuracy"] < 0.02 and mislabelled["intra_fid"] > 100


def test_evaluation_during_training_writes_eval_json(tmp_path):
    root = make_tiny_mnist(tmp_path / "data", n_train=256, n_test=256)
    final = run_quick(root, tmp_path / "run", "epochs=2", *EVALUATED[:3], "eval.final_n_samples=200")
    summary = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (summary["epoch"], summary["n_samples"]) == (2, 200)
    for weights in ("ema", "raw"):
        assert summary[weights].keys() & set(METRICS) == UNCONDITIONAL_METRICS
        assert sum(summary[weights][f"class_{d}"] for d in range(10)) == pytest.approx(1.0)
    assert final["fid"] == pytest.approx(summary["ema"]["fid"])
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert all("fid" in row and "raw_fid" in row for row in rows), "evaluated every epoch"


@pytest.mark.slow
def test_sample_py_prints_metrics(tmp_path):
    root = make_tiny_mnist(tmp_path / "data", n_train=256, n_test=256)
    run_quick(root, tmp_path / "run", "epochs=1")
    result = run_script("sample.py", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}", "n=300", "out=null",
                        "evaluate=true", f"data_root={root}", "device=cpu")
    assert result.returncode == 0, result.stderr
    assert "| fid |" in result.stdout and "| classes_over_5pct |" in result.stdout


def test_a_conditional_run_is_scored_by_label_accuracy_and_intra_class_fid(tmp_path):
    root = make_tiny_mnist(tmp_path / "data", n_train=256, n_test=256)
    final = run_quick(root, tmp_path / "run", "epochs=1", "model=conditional", *EVALUATED)
    summary = json.loads((tmp_path / "run" / "eval.json").read_text())
    for weights in ("ema", "raw"):
        assert summary[weights].keys() & set(METRICS) == set(METRICS)
        assert 0 <= summary[weights]["label_accuracy"] <= 1
        digits = [summary[weights][f"intra_fid_{d}"] for d in range(10)]
        assert summary[weights]["intra_fid"] == pytest.approx(sum(digits) / 10)
    assert final["label_accuracy"] == pytest.approx(summary["ema"]["label_accuracy"])
    assert "label_accuracy" in read_metrics_csv(tmp_path / "run" / "metrics.csv")[-1]
