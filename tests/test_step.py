"""GanStep: speed options stay close to fp32, lazy R1 keeps the regularization, dropout masks are fair.

No timings here: speed is measured by the benchmarks, never by tests.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

from gan.config import ModelConfig
from gan.errors import GanError
from gan.models import Dropout, build_discriminator, build_generator
from gan.step import ema_weight, update_ema
from helpers.runs import REPO, assert_same_training_state, last_checkpoint, quick_config, run_quick
from helpers.steps import make_step


def fixed_batch() -> torch.Tensor:
    return torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1


def losses_after_steps(steps: int, **train_options) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-step [d_loss, g_loss, D(x), D(G(z))] and the change of G's last-layer weights, from a fixed seed and batch."""
    step = make_step(**train_options)
    initial = step.generator.net[-2].weight.detach().clone()
    torch.manual_seed(2)
    stats = [step(fixed_batch(), i) for i in range(steps)]
    return stats, step.generator.net[-2].weight.detach() - initial


@pytest.mark.parametrize(("options", "tolerance", "min_cosine"), [
    pytest.param({"precision": "bf16"}, 0.05, 0.9, marks=pytest.mark.slow),
    pytest.param({"precision": "fp16"}, 0.02, 0.95, marks=pytest.mark.slow),
    pytest.param({"compile": True}, 1e-4, 0.999, marks=pytest.mark.slow),  # compiling takes ~30 s on 2 cores
])
def test_option_stays_close_to_fp32(options, tolerance, min_cosine):
    reference, reference_update = losses_after_steps(3)
    stats, update = losses_after_steps(3, **options)
    for ours, theirs in zip(stats, reference):
        assert torch.isfinite(ours).all()
        assert torch.allclose(ours.float(), theirs, atol=tolerance, rtol=tolerance), (ours, theirs)
    # The weights moved (no skipped steps) and in the direction fp32 moved them.
    assert update.norm() > 0.5 * reference_update.norm()
    assert torch.nn.functional.cosine_similarity(update.flatten(), reference_update.flatten(), dim=0) > min_cosine


def test_ema_follows_its_warm_up_ramp_with_a_float_or_a_device_scalar_weight():
    assert ema_weight(0.999, 0) == pytest.approx(0.9)  # early on: mostly the current weights
    assert ema_weight(0.999, 100_000) == pytest.approx(0.001)  # then the configured decay
    torch.manual_seed(0)
    model, start = build_generator(ModelConfig()), build_generator(ModelConfig())
    averages = [copy.deepcopy(start) for _ in range(2)]
    update_ema(averages[0], model, 0.25)
    update_ema(averages[1], model, torch.tensor(0.25))  # the form a CUDA graph replays
    for float_avg, tensor_avg, current, initial in zip(*(m.parameters() for m in (*averages, model, start))):
        expected = initial + 0.25 * (current - initial)
        assert torch.allclose(float_avg, expected, atol=1e-6) and torch.allclose(tensor_avg, expected, atol=1e-6)


def discriminator_update(step_index: int, **train_options) -> torch.Tensor:
    step = make_step(**train_options)
    before = step.discriminator.net[0].weight.detach().clone()
    torch.manual_seed(2)
    step(fixed_batch(), step_index)
    return step.discriminator.net[0].weight.detach() - before


def test_lazy_r1_applies_the_penalty_on_its_interval_weighted_by_it():
    plain = discriminator_update(0, r1_gamma=0)
    for step_index in (1, 15, 17):
        assert torch.equal(discriminator_update(step_index, r1_gamma=1, r1_every=16), plain), "no penalty between intervals"
    lazy, every = discriminator_update(16, r1_gamma=1, r1_every=16), discriminator_update(0, r1_gamma=16, r1_every=1)
    assert not torch.equal(lazy, plain)
    # gamma=1 every 16 steps weighs the penalty as gamma=16 every step does, on the step it runs.
    assert torch.allclose(lazy, every, atol=1e-7)


def test_r1_batch_at_or_over_the_batch_is_the_whole_batch():
    plain, whole = discriminator_update(0, r1_gamma=0), discriminator_update(0, r1_gamma=1)
    on_subset = discriminator_update(0, r1_gamma=1, r1_batch=16)
    assert not torch.equal(on_subset, plain) and not torch.equal(on_subset, whole)
    assert torch.equal(discriminator_update(0, r1_gamma=1, r1_batch=64), whole), "r1_batch = the batch is the whole-batch penalty"
    assert torch.equal(discriminator_update(0, r1_gamma=1, r1_batch=256), whole), "r1_batch over the batch is the whole batch"


@pytest.mark.parametrize(("r1_batch", "model_options"), [
    (None, {}),
    (16, {}),
    (16, {"d_pack": 2}),
    (16, {"d_mbstd_group": 4}),  # minibatch stddev: the penalty by autograd's double backward
])
def test_r1_step_takes_the_gradient_of_loss_plus_penalty(r1_batch, model_options):
    # What the step computes (the input gradient written out, from a forward of the R1 images) must be the
    # gradient of the joint loss plus gamma/2 E||grad_x D(x)||^2 on the first r1_batch real images, as
    # autograd's double backward takes it.
    step = make_step(model_options=model_options, r1_gamma=2.0, r1_batch=r1_batch)
    before = copy.deepcopy(step.discriminator)
    real, fake = fixed_batch(), torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    step.discriminator_step(real, fake, with_r1=True)

    subset = real[: r1_batch or 64].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(before(subset).sum(), subset, create_graph=True)
    real_logits, fake_logits = before(torch.cat([real, fake])).chunk(2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss = bce(real_logits, torch.full_like(real_logits, 0.9)) + bce(fake_logits, torch.zeros_like(fake_logits))
    expected = torch.autograd.grad(loss + 0.5 * 2.0 * grad.pow(2).flatten(1).sum(1).mean(), list(before.parameters()))
    for ours, theirs in zip((p.grad for p in step.discriminator.parameters()), expected):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("pack", [1, 2])
def test_discriminator_input_gradient_is_autograds_with_the_same_dropout_masks(pack):
    discriminator = build_discriminator(ModelConfig(d_dropout=0.3, d_pack=pack))
    images = torch.randn(16, 1, 28, 28)
    torch.manual_seed(5)
    with torch.no_grad():
        slopes = discriminator.slopes(images)
    ours = discriminator.input_gradient(slopes)
    torch.manual_seed(5)  # the same masks
    leaf = images.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(discriminator(leaf).sum(), leaf, create_graph=True)
    torch.testing.assert_close(ours, theirs.reshape(16 // pack, -1))
    # The penalty's gradient in the weights: through the weight matrices only (the slopes are piecewise constant).
    params = list(discriminator.parameters())
    ours_by_weight = torch.autograd.grad(ours.pow(2).sum(), params, allow_unused=True)
    theirs_by_weight = torch.autograd.grad(theirs.pow(2).sum(), params, allow_unused=True)
    for a, b, param in zip(ours_by_weight, theirs_by_weight, params):
        torch.testing.assert_close(torch.zeros_like(param) if a is None else a, torch.zeros_like(param) if b is None else b)
    assert ours_by_weight[0].abs().sum() > 0


@pytest.mark.parametrize("r1_batch", [16, None])
def test_r1_runs_under_a_flop_counter(r1_batch):
    """The throughput benchmark counts FLOPs with module hooks, which refuse a leaf tensor as D's input."""
    from torch.utils.flop_counter import FlopCounterMode

    step = make_step(r1_gamma=1.0, r1_batch=r1_batch)
    with FlopCounterMode(display=False) as counter:
        stats = step(fixed_batch(), 0)
    assert torch.isfinite(stats).all() and counter.get_total_flops() > 0


def test_step_state_round_trips_the_fp16_grad_scalers():
    step = make_step(precision="fp16")
    torch.manual_seed(2)
    for i in range(3):
        step(fixed_batch(), i)
    state = step.state_dict()
    fresh = make_step(precision="fp16")
    fresh.load_state_dict(state)
    assert fresh.scaler_g.state_dict() == step.scaler_g.state_dict() == state["scaler_g"]
    assert fresh.scaler_d.state_dict() == state["scaler_d"] and state["scaler_d"]["_growth_tracker"] > 0
    # A checkpoint without scalers (older, or from an fp32 run) leaves them fresh.
    older = make_step(precision="fp16")
    older.load_state_dict({"opt_g": state["opt_g"], "opt_d": state["opt_d"]})
    assert older.scaler_g.state_dict()["_growth_tracker"] == 0


def test_dropout_keeps_the_asked_share_independently_and_rescales():
    torch.manual_seed(0)
    dropout = Dropout(0.3)
    out = dropout(torch.ones(2000, 1000))
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.002
    assert torch.allclose(out[kept], torch.tensor(1 / 0.7), rtol=1e-4), "inverted dropout: kept values scaled by 1/(1-p)"
    assert abs(out.mean().item() - 1.0) < 0.005, "the expectation is unchanged"
    # Each of the four 16-bit slices of a random word is used: no position is biased or tied to its neighbour.
    by_slot = kept.view(-1, 4).float().mean(0)
    assert torch.all((by_slot - 0.7).abs() < 0.003), by_slot
    neighbours = torch.corrcoef(torch.stack([kept.view(-1)[:-1].float(), kept.view(-1)[1:].float()]))[0, 1]
    assert abs(neighbours.item()) < 0.005
    assert torch.equal(dropout.eval()(torch.ones(3, 3)), torch.ones(3, 3))


def test_dropout_gradient_passes_only_through_kept_units():
    x = torch.randn(64, 128, requires_grad=True)
    out = Dropout(0.5)(x)
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float() * 2.0)


@pytest.mark.parametrize("overrides", [
    pytest.param(("train.precision=fp16",), marks=pytest.mark.slow),
    pytest.param(("train.compile=true",), marks=pytest.mark.slow),  # lazy R1: eager D on R1 steps, compiled D otherwise
    pytest.param(("train.compile=true", "train.r1_gamma=0"), marks=pytest.mark.slow),
    pytest.param(("train.precision=bf16", "train.d_updates=separate"), marks=pytest.mark.slow),
])
def test_option_trains_a_run_with_finite_losses(tiny_mnist, tmp_path, overrides):
    final = run_quick(tiny_mnist, tmp_path, "epochs=1", *overrides)
    assert math.isfinite(final["d_loss"]) and math.isfinite(final["g_loss"])
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_packed_discriminator_judges_consecutive_images_together():
    torch.manual_seed(0)
    packed = build_discriminator(ModelConfig(d_pack=2, d_dropout=0.0))
    images = torch.randn(8, 1, 28, 28)
    assert packed(images).shape == (4,)
    # Output i depends on images 2i and 2i+1 only.
    changed = images.clone()
    changed[3] += 1
    before, after = packed(images), packed(changed)
    assert torch.equal(before[[0, 2, 3]], after[[0, 2, 3]]) and not torch.equal(before[1], after[1])


def test_minibatch_std_lets_d_see_the_variety_of_its_group():
    torch.manual_seed(0)
    discriminator = build_discriminator(ModelConfig(d_mbstd_group=4, d_dropout=0.0))
    images = torch.randn(8, 1, 28, 28)
    # Groups of 4 are samples 0-3 and 4-7: making sample 2 a copy of sample 0 leaves the other group, and
    # so its logits, as they were.
    changed = images.clone()
    changed[2] = changed[0]
    before, after = discriminator(images), discriminator(changed)
    assert not torch.equal(before[1], after[1]), "an untouched sample's logit depends on its group's variety"
    assert torch.equal(before[4:], after[4:])
    # A group of identical samples has zero spread: the gradient must stay finite there.
    same = images[:1].expand(8, -1, -1, -1).clone().requires_grad_(True)
    discriminator(same).sum().backward()
    assert torch.isfinite(same.grad).all() and all(torch.isfinite(p.grad).all() for p in discriminator.parameters())


@pytest.mark.parametrize("model", [ModelConfig(d_mbstd_group=4), ModelConfig(d_pack=2), ModelConfig(d_pack=2, d_mbstd_group=4)])
def test_d_judges_real_images_apart_from_the_fake_ones_in_the_same_forward(model):
    # The D step runs one forward over real images followed by fake ones: no pack and no minibatch-std
    # group may mix them, or D could not tell a batch of real images by its variety.
    torch.manual_seed(0)
    discriminator = build_discriminator(dataclasses.replace(model, d_dropout=0.0))
    with torch.no_grad():
        discriminator.net[-1].weight.fill_(1.0)  # so the group's spread, one input of the last layer, counts
    real, fake = torch.randn(16, 1, 28, 28), 0.1 * torch.randn(16, 1, 28, 28)  # fakes that vary less
    judged = 16 // model.d_pack
    real_logits, fake_logits = discriminator(torch.cat([real, fake])).split(judged)
    torch.testing.assert_close(real_logits, discriminator(real))
    torch.testing.assert_close(fake_logits, discriminator(fake))


@pytest.mark.parametrize("overrides", [
    pytest.param(("model.d_pack=2",), marks=pytest.mark.slow),
    pytest.param(("model.d_mbstd_group=4",), marks=pytest.mark.slow),
    pytest.param(("model.d_pack=2", "model.d_mbstd_group=4"), marks=pytest.mark.slow),
])
def test_discriminator_option_trains_and_resumes_exactly(tiny_mnist, tmp_path, overrides):
    straight = run_quick(tiny_mnist, tmp_path / "straight", "epochs=2", *overrides)
    assert math.isfinite(straight["d_loss"]) and math.isfinite(straight["g_loss"])
    run_quick(tiny_mnist, tmp_path / "split", "epochs=1", *overrides)
    run_quick(tiny_mnist, tmp_path / "split", "epochs=2", "resume=auto", *overrides)
    assert_same_training_state(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "split"))


def test_batch_must_split_into_packs_and_groups(tiny_mnist):
    with pytest.raises(GanError, match=r"multiple of model.d_pack \(3\)"):
        quick_config(tiny_mnist, "model.d_pack=3")
    with pytest.raises(GanError, match=r"multiple of model.d_mbstd_group \(5\)"):
        quick_config(tiny_mnist, "model.d_mbstd_group=5")
    with pytest.raises(GanError, match=r"train.r1_batch \(12\) must be a multiple of model.d_pack x model.d_mbstd_group \(8\)"):
        quick_config(tiny_mnist, "model.d_pack=2", "model.d_mbstd_group=4", "train.r1_batch=12")


PAGE_FAULTS_PER_STEP = """
import copy, resource, sys, torch
from gan.config import ModelConfig, OptimConfig, TrainConfig
from gan.device import keep_freed_memory
from gan.models import build_discriminator, build_generator
from gan.step import GanStep
if sys.argv[1] == "kept":
    assert keep_freed_memory()
torch.manual_seed(0)
g, d = build_generator(ModelConfig()), build_discriminator(ModelConfig())
step = GanStep(g, d, copy.deepcopy(g), OptimConfig(), TrainConfig(), 64, torch.device("cpu"))
real = torch.rand(64, 1, 28, 28) * 2 - 1
faults = []
for i in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(real, i)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[10:])[10])  # the median step once the heap has grown to its working size
"""


@pytest.mark.slow  # two fresh Python processes importing torch: ~14 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and getrusage's page faults")
def test_a_cpu_step_reuses_freed_memory_instead_of_faulting_in_new_pages():
    def faults_per_step(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", PAGE_FAULTS_PER_STEP, mode], capture_output=True, text=True,
                             check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return float(out.stdout.split()[-1])

    default = faults_per_step("default")
    if default < 100:
        pytest.skip(f"this malloc already reuses freed memory ({default:.0f} page faults a step)")
    assert faults_per_step("kept") < default / 100
