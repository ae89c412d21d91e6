"""The CUDA path: every speed option trains, the whole-step CUDA graph matches the eager step, resume is exact.

Skipped where torch sees no CUDA GPU (CI); `bash benchmarks/gpu.sh test` runs them on a GPU machine.
"""

from __future__ import annotations

import math

import pytest
import torch

from gan.step import GanStep
from helpers.runs import EVALUATED, WEIGHTS, assert_same_tensors, assert_same_training_state, config, last_checkpoint, run_quick
from helpers.steps import make_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")


@pytest.mark.parametrize("overrides", [
    (),  # the default recipe, its step as a CUDA graph
    ("model.d_dropout=0.2",),  # dropout masks drawn inside the graph
    ("train.precision=bf16",),
    ("train.precision=tf32",),
    ("train.precision=fp16",),  # grad scalers: eager
    ("train.compile=true",),  # compiled G and D inside the whole-step graph
    ("train.compile=true", "train.precision=bf16"),
    ("train.cuda_graph=false",),
    ("train.cuda_graph=false", "train.compile=true"),  # compile's own CUDA graphs (reduce-overhead)
    ("train.nonfinite=skip",),  # reads the loss on the host: eager
    ("train.r1_every=3",),  # two graphs, with and without the penalty
    ("train.d_updates=separate", "model.d_mbstd_group=4"),  # R1 through minibatch stddev, inside the graph
    ("model=conditional",),  # labels as a static input of the graph, fake labels drawn inside it
    EVALUATED,  # evaluation on the GPU
])
def test_option_trains_on_cuda_with_finite_losses(tiny_mnist, tmp_path, overrides):
    final = run_quick(tiny_mnist, tmp_path, "device=cuda", "epochs=2", *overrides)
    assert math.isfinite(final["d_loss"]) and math.isfinite(final["g_loss"])
    ckpt = last_checkpoint(tmp_path)
    assert ckpt["step"] == 8 and "cuda" in ckpt["rng"]
    assert all(torch.isfinite(t).all() for t in ckpt["generator_ema"].values())
    if EVALUATED == overrides:
        assert (tmp_path / "eval.json").is_file()


def make_cuda_step(*overrides: str, **train_options) -> GanStep:
    """The default recipe's step (its R1 subset) on CUDA, with dropout in D so the graphs draw its masks too."""
    return make_step("model.d_dropout=0.2", *overrides, device=CUDA, **{"r1_batch": config().train.r1_batch, **train_options})


@pytest.mark.parametrize(("r1_every", "overrides"), [(1, ()), (3, ()), (1, ("model=conditional",))])
def test_graphed_step_computes_what_the_eager_step_does(r1_every, overrides):
    batches = torch.rand(10, 64, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(CUDA) * 2 - 1
    labels = (torch.arange(640, device=CUDA) % 10).view(10, 64)
    runs = {}
    for graphed in (False, True):
        step = make_cuda_step(*overrides, cuda_graph=graphed, r1_every=r1_every)
        assert (step.graphed is not None) == graphed
        torch.manual_seed(2)
        stats = torch.stack([step(batch, labels[i] if step.num_classes else None, i) for i, batch in enumerate(batches)])
        runs[graphed] = stats, step
    (eager_stats, eager), (graph_stats, graph) = runs[False], runs[True]
    assert len(graph.graphed.graphs) == (1 if r1_every == 1 else 2)  # steps 3.. replayed graphs
    assert torch.allclose(graph_stats, eager_stats, rtol=1e-5, atol=1e-6), (graph_stats - eager_stats).abs().max()
    for name in WEIGHTS:
        for ours, theirs in zip(getattr(graph, name).parameters(), getattr(eager, name).parameters()):
            assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6), name


def test_tf32_is_the_steps_alone():
    def setting():
        matmul = torch.backends.cuda.matmul
        return getattr(matmul, "fp32_precision", None) or matmul.allow_tf32

    step, before = make_cuda_step(precision="tf32"), setting()
    step(torch.zeros(64, 1, 28, 28, device=CUDA), None, 0)
    assert setting() == before  # evaluation and sampling keep fp32


def test_graphed_steps_advance_the_cuda_generator_as_eager_steps_do():
    states = []
    for graphed in (False, True):
        step = make_cuda_step(cuda_graph=graphed)
        torch.manual_seed(2)
        batch = torch.zeros(64, 1, 28, 28, device=CUDA)
        for i in range(6):
            step(batch, None, i)
        states.append(torch.cuda.get_rng_state())
    assert torch.equal(*states)


@pytest.mark.parametrize("extra", [
    (),  # graphs captured at different steps in the two runs: eager steps 0-2 vs 4-6
    ("train.r1_every=3",),
    ("train.precision=bf16",),
    ("train.precision=tf32",),
    ("train.cuda_graph=false",),
    ("train.precision=fp16",),
    ("model=conditional",),
])
def test_resume_on_cuda_continues_exactly(tiny_mnist, tmp_path, extra):
    common = ("device=cuda", *extra)
    run_quick(tiny_mnist, tmp_path / "straight", "epochs=3", *common)
    run_quick(tiny_mnist, tmp_path / "first", "epochs=1", *common)
    run_quick(tiny_mnist, tmp_path / "resumed", "epochs=3", f"resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}", *common)
    straight, resumed = last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "resumed")
    assert_same_training_state(straight, resumed)
    assert_same_tensors(straight["trace"], resumed["trace"], "trace")


def test_cpu_run_on_a_gpu_machine_leaves_the_cuda_generators_alone(tiny_mnist, tmp_path, monkeypatch):
    """A CPU run's checkpoint holds the CPU generator alone: it must not depend on whether a GPU is visible
    (submitit hides the GPUs from a CPU job, so a requeued job's checkpoint differed from a plain run's)."""
    def touched(*args, **kwargs):
        raise AssertionError("a CPU run touched the CUDA generators")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", touched)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", touched)
    run_quick(tiny_mnist, tmp_path, "device=cpu", "epochs=1")
    assert last_checkpoint(tmp_path)["rng"].keys() == {"torch"}
    run_quick(tiny_mnist, tmp_path, "device=cpu", "epochs=2", "resume=auto")
    assert last_checkpoint(tmp_path)["epoch"] == 2
