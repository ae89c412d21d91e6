"""Sample-quality metrics: known inputs give known answers; the evaluator's weights are verified."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, make_tiny_mnist, real_mnist_root, run_quick
from gan.data import load_mnist, to_unit_range
from gan.errors import GanError
from gan.evaluator import WEIGHTS, accuracy, load_classifier
from gan.history import read_metrics_csv
from gan.metrics import METRICS, Evaluator, class_statistics, precision_recall


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
def evaluator_and_root(tmp_path_factory):
    root = real_mnist_root() or make_tiny_mnist(tmp_path_factory.mktemp("mnist-eval"), n_train=2048, n_test=1024)
    return Evaluator(root, download=False), root


def test_identical_sets_score_fid_zero_and_full_recall(evaluator_and_root):
    evaluator, _ = evaluator_and_root
    scores = evaluator.score(evaluator.real_images)
    assert set(METRICS) <= scores.keys()
    assert abs(scores["fid"]) < 1e-6
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0


NEEDS_DIGITS = pytest.mark.skipif(real_mnist_root() is None, reason="needs the real MNIST files (DATA_ROOT)")


@NEEDS_DIGITS
def test_noise_has_no_recall_and_a_large_fid(evaluator_and_root):
    evaluator, _ = evaluator_and_root
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores, real = evaluator.score(noise), evaluator.score(evaluator.real_images[:1000])
    assert scores["recall"] < 0.01 and scores["precision"] < 0.01
    assert scores["fid"] > 100 * max(real["fid"], 1.0)
    # KID averages random subsets, so even a subset of the reference gives an estimate scattered
    # around 0; against noise it is orders of magnitude larger.
    assert abs(real["kid"]) < 0.01 * scores["kid"]


@NEEDS_DIGITS
def test_calibration_ranks_floor_collapse_and_ceiling():
    result = subprocess.run([sys.executable, "-m", "gan.calibrate", "--data-root", str(real_mnist_root()), "--n", "2000"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metrics rank the sets correctly: True" in result.stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in result.stdout.splitlines() if line.startswith("| ")}
    assert rows["classes_over_5pct"][1].strip() == "1", "a one-digit set is flagged by class balance"
    assert int(rows["classes_over_5pct"][0]) == 10


@NEEDS_DIGITS
def test_evaluator_accuracy_on_real_test_set():
    test = load_mnist(real_mnist_root(), download=False, train=False)
    assert accuracy(load_classifier(), to_unit_range(test.data), test.targets) >= 0.99


def test_evaluation_during_training_writes_eval_json(tmp_path):
    root = make_tiny_mnist(tmp_path / "data", n_train=256, n_test=256)
    final = run_quick(root, tmp_path / "run", "epochs=2", "eval.enabled=true", "eval.every=1", "eval.n_samples=64", "eval.final_n_samples=200")
    summary = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (summary["epoch"], summary["n_samples"]) == (2, 200)
    for weights in ("ema", "raw"):
        assert set(METRICS) <= summary[weights].keys()
        assert sum(summary[weights][f"class_{d}"] for d in range(10)) == pytest.approx(1.0)
    assert final["fid"] == pytest.approx(summary["ema"]["fid"])
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert all("fid" in row and "raw_fid" in row for row in rows), "evaluated every epoch"


def test_sample_py_prints_metrics(tmp_path):
    root = make_tiny_mnist(tmp_path / "data", n_train=256, n_test=256)
    run_quick(root, tmp_path / "run", "epochs=1")
    result = subprocess.run([sys.executable, "sample.py", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
                             "n=300", "out=null", "evaluate=true", f"data_root={root}", "device=cpu"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert "| fid |" in result.stdout and "| classes_over_5pct |" in result.stdout
