"""The whole training step as CUDA graphs: captured once, replayed every step.

At batch 128 the MLP step is many small kernels (both losses, both backward passes, both Adam updates,
the EMA); launched one by one from Python they kept an H200 busy 11-14% of the step's time, replayed as
a graph 92% (1117 against 144 steps/s, README: GPU). A step's inputs enter through static tensors (the
real batch, the EMA's weight), and its random numbers (noise, dropout masks) come from the CUDA
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
    """Runs ``run(real, with_r1)`` eagerly for the first steps, then from a captured graph per value of ``with_r1``."""

    def __init__(self, run: Callable[[torch.Tensor, bool], torch.Tensor]) -> None:
        self.run = run
        self.graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[bool, torch.Tensor] = {}  # each graph's output, overwritten by its next replay
        self.real: torch.Tensor | None = None  # the static input every graph reads
        self.eager_steps = 0

    def __call__(self, real: torch.Tensor, with_r1: bool) -> torch.Tensor:
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                stats = self.run(real, with_r1)
            torch.cuda.current_stream().wait_stream(side)
            return stats
        if self.real is None:
            self.real = torch.empty_like(real)
        self.real.copy_(real)
        if with_r1 not in self.graphs:
            self.capture(with_r1)  # records the step without running it: the replay below runs it
        self.graphs[with_r1].replay()
        return self.outputs[with_r1].clone()

    def capture(self, with_r1: bool) -> None:
        assert self.real is not None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs[with_r1] = self.run(self.real, with_r1)
        self.graphs[with_r1] = graph
