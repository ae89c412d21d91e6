"""A short run trains and writes its files; the same seed reproduces; resume continues exactly, conditional runs too."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from PIL import Image

from gan.checkpoint import load_checkpoint
from gan.errors import GanError
from gan.history import read_metrics_csv
from gan.models import build_generator
from gan.run import train
from gan.rundir import read_status
from helpers.mnist_files import make_tiny_mnist
from helpers.runs import EVALUATED, WEIGHTS, assert_same_tensors, assert_same_training_state, last_checkpoint, quick_config, run_quick


def test_short_run_writes_grids_checkpoints_and_metrics(tiny_mnist, tmp_path):
    final = run_quick(tiny_mnist, tmp_path, "epochs=3", "checkpoint_every=2")
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png", "epoch_003.png", "progress.gif"]
    # epoch_NNN.pt at the interval and at the end; last.pt always.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_002.pt", "epoch_003.pt", "last.pt"]
    assert Image.open(tmp_path / "losses.png").size == (900, 350), "the loss plot: two panels, 9 x 3.5 inches at 100 dpi"
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[-1]["step"] == 3 * (256 // 64)
    for row in rows:
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "images_per_s"):
            assert math.isfinite(row[key])
        assert 0 <= row["d_real"] <= 1 and 0 <= row["d_fake"] <= 1
    assert final["epoch"] == 3

    ckpt = last_checkpoint(tmp_path)
    assert (ckpt["epoch"], ckpt["step"]) == (3, 12)
    assert ckpt["fixed_noise"].shape == (16, 100)
    assert ckpt["config"]["optim"]["lr"] == pytest.approx(2e-4)
    assert {*WEIGHTS, "opt_g", "opt_d", "scaler_g", "scaler_d", "rng"} <= ckpt.keys()
    # The EMA generator is its own set of weights, not an alias of G.
    assert not torch.equal(ckpt["generator"]["net.0.weight"], ckpt["generator_ema"]["net.0.weight"])


def test_training_changes_the_weights(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path / "one", "epochs=1")
    torch.manual_seed(0)
    initial = build_generator(quick_config(tiny_mnist).model).state_dict()
    trained = last_checkpoint(tmp_path / "one")["generator"]
    assert not torch.equal(initial["net.0.weight"], trained["net.0.weight"])


@pytest.mark.slow
def test_same_seed_gives_same_weights_and_other_seed_does_not(tiny_mnist, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_quick(tiny_mnist, tmp_path / name, "epochs=1", f"seed={seed}")
    a, b, c = (last_checkpoint(tmp_path / n) for n in "abc")
    for key in WEIGHTS:
        assert_same_tensors(a[key], b[key], key)
    assert not torch.equal(a["generator"]["net.0.weight"], c["generator"]["net.0.weight"])


@pytest.mark.parametrize("extra", [
    (),  # the default recipe
    pytest.param(("model=conditional",), marks=pytest.mark.slow),  # labels through G, D and R1; fake labels from the training RNG
    # Lazy R1: the epoch-1 checkpoint (step 4) falls between penalty steps 3 and 6.
    pytest.param(("train.r1_every=3",), marks=pytest.mark.slow),
    pytest.param(("train.r1_batch=16",), marks=pytest.mark.slow),
    pytest.param(("model.d_dropout=0", "train.d_updates=separate"), marks=pytest.mark.slow),
    # Autocast is slow on CPUs without fp16/bf16 units (~13 s each here).
    pytest.param(("train.precision=fp16",), marks=pytest.mark.slow),  # the grad scalers' state travels in the checkpoint
    pytest.param(("train.precision=bf16",), marks=pytest.mark.slow),
])
def test_resume_continues_exactly(tiny_mnist, tmp_path, extra):
    run_quick(tiny_mnist, tmp_path / "straight", "epochs=2", *extra)
    run_quick(tiny_mnist, tmp_path / "first", "epochs=1", *extra)
    run_quick(tiny_mnist, tmp_path / "resumed", "epochs=2", f"resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}", *extra)
    straight, resumed = last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "resumed")
    assert_same_training_state(straight, resumed)
    for key in ("fixed_noise", "trace"):
        assert_same_tensors(straight[key], resumed[key], key)
    assert (resumed["epoch"], resumed["step"]) == (2, 8)
    # The resumed run's metrics cover the whole history, not just its own epoch.
    assert [row["epoch"] for row in read_metrics_csv(tmp_path / "resumed" / "metrics.csv")] == [1, 2]
    for key in ("epoch", "step", "d_loss", "g_loss", "d_real", "d_fake"):
        assert [r[key] for r in straight["history"]] == [r[key] for r in resumed["history"]]


@pytest.mark.slow
def test_fp16_checkpoint_carries_the_grad_scalers(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=1", "train.precision=fp16")
    ckpt = last_checkpoint(tmp_path)
    for key in ("scaler_g", "scaler_d"):
        # 4 steps, none overflowing at the initial scale 2**16: the scale stays and counts 4 good steps towards growth.
        assert (ckpt[key]["scale"], ckpt[key]["_growth_tracker"]) == (2.0**16, 4)


@pytest.mark.parametrize("extra", [(), pytest.param(("model=conditional",), marks=pytest.mark.slow)])
def test_extending_a_finished_evaluated_run_is_exact(tmp_path, extra):
    """epochs=2 in one go equals epochs=1, then resume=.../last.pt epochs=2, with evaluation on.

    The 1-epoch run ends with a final evaluation that the 2-epoch run does not have at epoch 1; it draws
    random numbers (KID's subsets), which must not leak into the training RNG saved in last.pt.
    """
    root = make_tiny_mnist(tmp_path / "data", n_train=256, n_test=256)
    run_quick(root, tmp_path / "straight", "epochs=2", *EVALUATED, *extra)
    run_quick(root, tmp_path / "first", "epochs=1", *EVALUATED, *extra)
    run_quick(root, tmp_path / "extended", "epochs=2", f"resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}", *EVALUATED, *extra)
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "extended"))


@pytest.mark.slow
def test_resume_with_another_architecture_names_keys_and_overrides(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path / "large", "epochs=1", "model=large")
    with pytest.raises(GanError, match=r"net\.0\.weight.*model\.g_hidden=\[512,1024,2048\] model\.d_hidden=\[2048,1024,512\]"):
        run_quick(tiny_mnist, tmp_path / "base", "epochs=2", f"resume={tmp_path / 'large' / 'checkpoints' / 'last.pt'}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ("train.d_updates=separate",),
        ("model.d_dropout=0", "train.label_smoothing=0"),
        ("model=small", "optim.lr_g=0.001"),
        ("train.precision=bf16",),
        ("grid_ema=false", "train.ema_decay=0.0"),
        ("train.r1_every=16",),
        ("train.r1_every=4", "train.d_updates=separate"),
        ("train.r1_gamma=0", "train.r1_gamma_end=null"),  # R1 off
        ("train.precision=fp16",),
        ("train.compile=true",),  # lazy R1: eager D on R1 steps, compiled D otherwise
        ("train.compile=true", "train.r1_gamma=0", "train.r1_gamma_end=null"),
        ("train.precision=bf16", "train.d_updates=separate"),
        ("model=conditional", "train.d_updates=separate"),
    ],
)
def test_training_options_give_finite_losses(tiny_mnist, tmp_path, overrides):
    final = run_quick(tiny_mnist, tmp_path, "epochs=1", *overrides)
    assert all(math.isfinite(final[key]) for key in ("d_loss", "g_loss"))
    assert last_checkpoint(tmp_path)["step"] == 4


def test_batch_larger_than_the_dataset_is_refused(tiny_mnist, tmp_path):
    with pytest.raises(GanError, match="larger than the 256 training images"):
        run_quick(tiny_mnist, tmp_path, "data.batch_size=1000")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_cuda_is_a_clear_error(tiny_mnist, tmp_path):
    with pytest.raises(GanError, match="device=cuda.*no usable CUDA"):
        train(quick_config(tiny_mnist, "device=cuda"), tmp_path)


def test_subset_trains_on_fewer_images(tmp_path):
    root = make_tiny_mnist(tmp_path / "data", n_train=512)
    run_quick(root, tmp_path / "run", "epochs=1", "data.subset=128")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_r1_penalty_changes_the_discriminator_update(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path / "plain", "epochs=1", "train.r1_gamma=0", "train.r1_gamma_end=null")
    run_quick(tiny_mnist, tmp_path / "r1", "epochs=1", "train.r1_gamma=10", "train.r1_gamma_end=null")
    plain, r1 = (last_checkpoint(tmp_path / name) for name in ("plain", "r1"))
    assert not torch.equal(plain["discriminator"]["net.0.weight"], r1["discriminator"]["net.0.weight"])
    # The penalty pulls D's input gradients down: the first layer ends up with smaller weights.
    assert r1["discriminator"]["net.0.weight"].norm() < plain["discriminator"]["net.0.weight"].norm()


def test_a_conditional_run_draws_one_digit_per_grid_row(tiny_mnist, tmp_path):
    run_quick(tiny_mnist, tmp_path, "epochs=1", "model=conditional", "grid_size=30")
    ckpt = last_checkpoint(tmp_path)
    assert ckpt["config"]["model"]["num_classes"] == 10 and ckpt["fixed_noise"].shape == (30, 100)
    z = ckpt["fixed_noise"].view(10, 3, 100)
    assert all(torch.equal(z[0], row) for row in z), "every row draws its digit from the same three latents"
    assert Image.open(tmp_path / "samples" / "epoch_001.png").size == (3 * 30 + 2, 10 * 30 + 2), "ten rows of three"


def test_resuming_with_a_new_learning_rate_trains_at_that_rate(tiny_mnist, tmp_path):
    """The optimizers' moments come from the checkpoint, their settings from the config (the NaN message advises a lower lr)."""
    run_quick(tiny_mnist, tmp_path, "epochs=1")
    run_quick(tiny_mnist, tmp_path, "epochs=2", "resume=auto", "optim.lr=0.0001", "optim.betas=[0.9,0.99]")
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [(row["lr_g"], row["lr_d"]) for row in rows] == [(2e-4, 2e-4), (1e-4, 1e-4)]
    groups = last_checkpoint(tmp_path)["opt_d"]["param_groups"]
    assert all(group["betas"] == (0.9, 0.99) for group in groups)


def test_a_moving_r1_gamma_is_recorded_each_epoch_and_continues_on_resume(tiny_mnist, tmp_path, caplog):
    moving = ("train.r1_gamma=10", "train.r1_gamma_end=1", "train.r1_decay_epochs=2")
    with caplog.at_level(logging.INFO, logger="gan.trainer"):
        run_quick(tiny_mnist, tmp_path, "epochs=1", *moving)
    assert "R1 gamma moves linearly from 10 to 1 over the first 2 epochs, then stays (train.r1_gamma_end=null keeps 10)" in caplog.text
    run_quick(tiny_mnist, tmp_path, "epochs=3", "resume=auto", *moving)
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [row["r1_gamma"] for row in rows] == pytest.approx([5.5, 1.0, 1.0]), "halfway after one of two epochs, then its end"


@pytest.fixture
def collapsed_scores(monkeypatch):
    """Evaluations that score G-EMA and G as collapsed: two digit classes at >= 5%, recall 0."""
    from gan.evaluator import Evaluator

    real_score = Evaluator.score_generator

    def score(self, *args, **kwargs):
        return {**real_score(self, *args, **kwargs), "recall": 0.0, "classes_over_5pct": 2}

    monkeypatch.setattr(Evaluator, "score_generator", score)


@pytest.mark.parametrize("policy", ["warn", "stop"])
def test_a_collapse_is_said_once_everywhere_and_can_stop_the_run(tiny_mnist, tmp_path, collapsed_scores, caplog, policy):
    with caplog.at_level(logging.WARNING):
        run_quick(tiny_mnist, tmp_path, "epochs=8", *EVALUATED, f"train.on_collapse={policy}")
    # Evaluations from epoch 5 on count: epochs 5 and 6 confirm it.
    assert caplog.text.count("collapsed at epoch 6: G-EMA draws few digits") == 1
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r.get("collapsed_at") for r in rows].count(6.0) == 1 and "collapsed_at" in rows[5]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["reason"].startswith("collapsed at epoch 6: G-EMA draws few digits and none of their variety "
                                       "(epoch 5: 2 digit classes at >= 5%, recall 0.000")
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    if policy == "stop":
        assert (status["status"], status["epoch"], last["epoch"], len(rows)) == ("stopped", 6, 6, 6)
        assert read_status(tmp_path).describe() == "stopped at epoch 6 of 8 (collapsed at epoch 6)"
    else:
        assert (status["status"], last["epoch"], len(rows)) == ("finished", 8, 8)
        assert read_status(tmp_path).describe() == "finished (collapsed at epoch 6)"

