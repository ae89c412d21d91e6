"""Time of one evaluation as training runs it: n samples of G-EMA and of G, scored against the MNIST test set.

    python -m benchmarks.evaluation --data-root ../shared/data [--checkpoint PATH] [--n 5000] [--repeats 3]

Reports the one-off cost of building the Evaluator (test-set features, statistics, k-NN radii) and the
median time of scoring both generators; with --checkpoint it scores that run's G-EMA and G (else two
freshly initialized generators, which time the same).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import machine, train_config
from gan.evaluator import Evaluator
from gan.export import load_generator
from gan.models import build_generator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder holding MNIST/raw (default: ./data)")
    parser.add_argument("--checkpoint", help="a train.py checkpoint whose generators to score")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    if args.checkpoint:
        generators = {"ema": load_generator(args.checkpoint, ema=True), "raw": load_generator(args.checkpoint, ema=False)}
    else:
        torch.manual_seed(0)
        model = train_config().model
        generators = {"ema": build_generator(model), "raw": build_generator(model)}

    started = time.perf_counter()
    evaluator = Evaluator(args.data_root, download=False)
    setup = time.perf_counter() - started
    times, scores = [], {}
    for _ in range(args.repeats):
        started = time.perf_counter()
        scores = {name: evaluator.score_generator(generator, args.n, args.seed) for name, generator in generators.items()}
        times.append(time.perf_counter() - started)
    print(f"{machine()}")
    print(f"Evaluator built in {setup:.1f} s; one evaluation of G-EMA and G on {args.n} samples each: "
          f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, {args.repeats} repeats)")
    for name, values in scores.items():
        print(f"  {name}: " + ", ".join(f"{key} {values[key]:.6g}" for key in ("fid", "kid", "precision", "recall", "classifier_score")))


if __name__ == "__main__":
    main()
