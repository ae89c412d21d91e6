"""GanStep: speed options stay close to fp32, lazy R1 keeps the regularization, R1 is the gradient it claims, labels reach G and D.

No timings here: speed is measured by the benchmarks, never by tests.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import gan.device
from gan.device import cpu_has_native_bf16, resolve_precision
from gan.errors import GanError
from gan.models import build_generator
from gan.step import ema_weight, r1_gamma_at, update_ema
from helpers.runs import assert_same_training_state, config, last_checkpoint, quick_config, run_quick
from helpers.steps import make_step


def fixed_batch() -> torch.Tensor:
    return torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1


def losses_after_steps(steps: int, **train_options) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-step [d_loss, g_loss, D(x), D(G(z))] and the change of G's last-layer weights, from a fixed seed and batch."""
    step = make_step(**train_options)
    initial = step.generator.net[-2].weight.detach().clone()
    torch.manual_seed(2)
    stats = [step(fixed_batch(), None, i) for i in range(steps)]
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


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_on_a_cpu_that_multiplies_bf16_in_hardware(monkeypatch, native):
    monkeypatch.setattr(gan.device, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    for accelerator in ("cuda", "mps"):  # kernel launches, not arithmetic, bound these small models there
        assert resolve_precision("auto", torch.device(accelerator)) == "fp32"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32" and resolve_precision("bf16", torch.device("cuda")) == "bf16"
    step = make_step(precision="auto")
    assert step.precision == ("bf16" if native else "fp32")
    with step.autocast():  # the step's matmuls run in what auto came to
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == (torch.bfloat16 if native else torch.float32)


def test_native_bf16_is_read_from_the_cpu_probes_and_absent_probes_mean_none(monkeypatch):
    for avx512_bf16, amx in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda value=avx512_bf16: value, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda value=amx: value, raising=False)
        assert cpu_has_native_bf16() == (avx512_bf16 or amx)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert not cpu_has_native_bf16()  # a torch without the probes: fp32, never a guess


def test_ema_follows_its_warm_up_ramp_with_a_float_or_a_device_scalar_weight():
    assert ema_weight(0.999, 0) == pytest.approx(0.9)  # early on: mostly the current weights
    assert ema_weight(0.999, 100_000) == pytest.approx(0.001)  # then the configured decay
    torch.manual_seed(0)
    model, start = build_generator(config().model), build_generator(config().model)
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
    step(fixed_batch(), None, step_index)
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


@pytest.mark.parametrize(("r1_batch", "overrides"), [
    (None, ()),
    (16, ()),
    (16, ("model.d_pack=2",)),
    (16, ("model.d_mbstd_group=4",)),  # minibatch stddev: its gradient term written out too
    (16, ("model=conditional",)),  # R1 at the real images' labels
])
def test_r1_step_takes_the_gradient_of_loss_plus_penalty(r1_batch, overrides):
    # What the step computes (D's input gradient written out, from a forward of the R1 images) must be the
    # gradient of the joint loss plus gamma/2 E||grad_x D(x)||^2 on the first r1_batch real images, as
    # autograd's double backward takes it.
    step = make_step(*overrides, r1_gamma=2.0, r1_batch=r1_batch)
    before = copy.deepcopy(step.discriminator)
    real, fake = fixed_batch(), torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    labels, fake_labels = (torch.arange(64) % 10, torch.arange(64) % 7) if step.num_classes else (None, None)
    step.discriminator_step(real, labels, fake, fake_labels, with_r1=True)

    subset = real[: r1_batch or 64].clone().requires_grad_(True)
    subset_labels = None if labels is None else labels[: r1_batch or 64]
    (grad,) = torch.autograd.grad(before(subset, subset_labels).sum(), subset, create_graph=True)
    both = None if labels is None else torch.cat([labels, fake_labels])
    real_logits, fake_logits = before(torch.cat([real, fake]), both).chunk(2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss = bce(real_logits, torch.full_like(real_logits, 0.9)) + bce(fake_logits, torch.zeros_like(fake_logits))
    expected = torch.autograd.grad(loss + 0.5 * 2.0 * grad.pow(2).flatten(1).sum(1).mean(), list(before.parameters()))
    for ours, theirs in zip((p.grad for p in step.discriminator.parameters()), expected):
        torch.testing.assert_close(ours, theirs)


def test_a_conditional_step_draws_fake_labels_uniformly_and_judges_real_images_by_their_labels():
    step = make_step("model=conditional", r1_gamma=1.0, r1_batch=16)
    seen = {"fake": [], "r1": []}
    g_forward, input_gradient = step.g_forward, step.discriminator.input_gradient

    def recording_g(z, labels):
        seen["fake"].append(labels)
        return g_forward(z, labels)

    def recording_input_gradient(images, labels):
        seen["r1"].append(labels)
        return input_gradient(images, labels)

    step.g_forward, step.discriminator.input_gradient = recording_g, recording_input_gradient
    real_labels = torch.arange(64) % 10
    torch.manual_seed(2)
    for i in range(40):
        step(fixed_batch(), real_labels, i)
    shares = torch.bincount(torch.cat(seen["fake"]), minlength=10) / (40 * 64)
    assert shares.min() > 0.08 and shares.max() < 0.12, shares
    assert all(torch.equal(labels, real_labels[:16]) for labels in seen["r1"]), "R1 sees the first real images' own labels"

    def d_update(labels: torch.Tensor) -> torch.Tensor:
        fresh = make_step("model=conditional", r1_gamma=0.0)
        before = fresh.discriminator.net[0].weight.detach().clone()
        torch.manual_seed(2)
        fresh(fixed_batch(), labels, 0)
        return fresh.discriminator.net[0].weight.detach() - before

    assert not torch.equal(d_update(real_labels), d_update(real_labels.roll(1))), "the real labels reach D"


def test_r1_costs_what_its_formula_says_under_a_flop_counter():
    """The throughput benchmark counts FLOPs with module hooks, which refuse a leaf tensor as D's input.

    The R1 term is D's forward on the penalized images (F = 2 x images x the sum of in x out over D's
    layers), their input gradient (about F), and the penalty's backward through both (about 2F each, less
    the input gradient of the images themselves): between 4F and 6F, and proportional to the images."""
    from torch.utils.flop_counter import FlopCounterMode

    def step_flops(**options) -> int:
        step = make_step(**options)
        with FlopCounterMode(display=False) as counter:
            assert torch.isfinite(step(fixed_batch(), None, 0)).all()
        return counter.get_total_flops()

    without_r1 = step_flops(r1_gamma=0.0)
    r1 = {n: step_flops(r1_gamma=1.0, r1_batch=n) - without_r1 for n in (16, 64)}
    model = make_step().discriminator.net
    weights = sum(layer.in_features * layer.out_features for layer in model.modules() if isinstance(layer, torch.nn.Linear))
    forward = 2 * 16 * weights
    assert 4 * forward <= r1[16] <= 6 * forward, (r1[16], forward)
    assert r1[64] == 4 * r1[16]


@pytest.mark.slow  # fp16 autocast is slow on CPUs without fp16 units
def test_step_state_round_trips_the_fp16_grad_scalers():
    step = make_step(precision="fp16")
    torch.manual_seed(2)
    for i in range(3):
        step(fixed_batch(), None, i)
    state = step.state_dict()
    fresh = make_step(precision="fp16")
    fresh.load_state_dict(state)
    assert fresh.scaler_g.state_dict() == step.scaler_g.state_dict() == state["scaler_g"]
    assert fresh.scaler_d.state_dict() == state["scaler_d"] and state["scaler_d"]["_growth_tracker"] > 0
    # A checkpoint without scalers (older, or from an fp32 run) leaves them fresh.
    older = make_step(precision="fp16")
    older.load_state_dict({"opt_g": state["opt_g"], "opt_d": state["opt_d"]})
    assert older.scaler_g.state_dict()["_growth_tracker"] == 0


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
    with pytest.raises(GanError, match=r"\(50\) must be a multiple of model.d_mbstd_group \(4\); .* or model.d_mbstd_group=0 to turn"):
        quick_config(tiny_mnist, "data.batch_size=50")  # the default's groups of 4
    assert quick_config(tiny_mnist, "data.batch_size=50", "model.d_mbstd_group=0").data.batch_size == 50
    with pytest.raises(GanError, match=r"train.r1_batch \(12\) must be a multiple of model.d_pack x model.d_mbstd_group \(8\)"):
        quick_config(tiny_mnist, "model.d_pack=2", "model.d_mbstd_group=4", "train.r1_batch=12")


def test_r1_gamma_moves_linearly_to_its_end_over_the_decay_epochs_then_stays():
    steady = make_step(r1_gamma=10.0)
    moving = make_step(r1_gamma=10.0, r1_gamma_end=1.0, r1_decay_epochs=2)  # 10 steps an epoch (helpers.steps)
    assert [r1_gamma_at(steady.cfg, s, 10) for s in (0, 10, 1000)] == [10.0, 10.0, 10.0], "no end: gamma stays"
    assert [r1_gamma_at(moving.cfg, s, 10) for s in (0, 5, 10, 20, 1000)] == pytest.approx([10.0, 7.75, 5.5, 1.0, 1.0])
    # The step weighs the penalty with the gamma of its step: at step 10 the moving schedule is gamma 5.5.
    assert torch.allclose(discriminator_update(10, r1_gamma=10.0, r1_gamma_end=1.0, r1_decay_epochs=2),
                          discriminator_update(10, r1_gamma=5.5), atol=1e-7)
    assert torch.equal(discriminator_update(20, r1_gamma=0.0, r1_gamma_end=0.0, r1_decay_epochs=1),
                       discriminator_update(20, r1_gamma=0.0)), "a schedule at 0 is no penalty"


def test_a_schedule_that_rises_from_zero_starts_the_penalty_when_gamma_leaves_zero():
    rising = make_step(r1_gamma=0.0, r1_gamma_end=4.0, r1_decay_epochs=1)
    assert not rising.r1_due(0) and rising.r1_due(1)
    assert torch.allclose(discriminator_update(5, r1_gamma=0.0, r1_gamma_end=4.0, r1_decay_epochs=1),
                          discriminator_update(5, r1_gamma=2.0), atol=1e-7)
