"""The whole training step as CUDA graphs: captured once, replayed every step.

At small batches the MLP step is many small kernels (both losses, both backward passes, both Adam
updates, the EMA); launched one by one from Python they keep a large GPU mostly idle, replayed as a graph
it stays busy (docs/gpu.md). A step's inputs enter through static tensors (the real batch, its labels,
the EMA's weight), and its random numbers (noise, fake labels, dropout masks) come from the CUDA
generator, which every replay advances exactly as the eager kernels would: a checkpoint's RNG state, and
so resume, is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Eager steps before the first capture, on a side stream as CUDA graphs require: they create the
# optimizers' state and let cuBLAS and the allocator set themselves up.
WARMUP_STEPS = 3


class GraphedStep:
    """Runs ``run(with_r1, *inputs)`` eagerly for the first steps, then from a captured graph per value of ``with_r1``."""

    def __init__(self, run: Callable[..., torch.Tensor]) -> None:
        self.run = run
        self.graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[bool, torch.Tensor] = {}  # each graph's output, overwritten by its next replay
        self.inputs: list[torch.Tensor] = []  # the static inputs every graph reads
        self.eager_steps = 0

    def __call__(self, with_r1: bool, *inputs: torch.Tensor) -> torch.Tensor:
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                stats = self.run(with_r1, *inputs)
            torch.cuda.current_stream().wait_stream(side)
            return stats
        if not self.inputs:
            self.inputs = [torch.empty_like(x) for x in inputs]
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        if with_r1 not in self.graphs:
            self.capture(with_r1)  # records the step without running it: the replay below runs it
        self.graphs[with_r1].replay()
        return self.outputs[with_r1].clone()

    def capture(self, with_r1: bool) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs[with_r1] = self.run(with_r1, *self.inputs)
        self.graphs[with_r1] = graph
