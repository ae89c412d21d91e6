"""Time one training-time evaluation with whichever version of gan/ is importable, to compare versions.

    python benchmarks/evaluation_versions.py CHECKPOINT --data-root ../shared/data [--n 5000] [--repeats 3]
    PYTHONPATH=/path/to/older/checkout python benchmarks/evaluation_versions.py CHECKPOINT --data-root ...

Scores the checkpoint's G-EMA and G on n samples each (noise seed 1234), as training does every
``eval.every`` epochs, and prints one JSON line: the version's Evaluator class, the time to build it,
each repeat's time and the scores. It only needs ``gan.models.Generator`` and an ``Evaluator`` with
``score_generator``, so it runs against this repo's earlier commits too (there ``gan.metrics.Evaluator``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gan.models import Generator

try:  # this version: gan/evaluator.py holds the Evaluator
    from gan.evaluator import Evaluator

    EVALUATOR = "gan.evaluator.Evaluator"
except ImportError:  # before the structure round: gan/metrics.py held it
    from gan.metrics import Evaluator  # type: ignore[no-redef]

    EVALUATOR = "gan.metrics.Evaluator"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default="./data")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model = state["config"]["model"]
    generators = {}
    for key in ("generator_ema", "generator"):
        generator = Generator(model["latent_dim"], list(model["g_hidden"]))
        generator.load_state_dict(state[key])
        generators[key] = generator.eval()
    started = time.perf_counter()
    evaluator = Evaluator(args.data_root, "cpu", False)
    build = time.perf_counter() - started
    times, scores = [], {}
    for _ in range(args.repeats):
        started = time.perf_counter()
        scores = {key: evaluator.score_generator(generator, args.n, 1234) for key, generator in generators.items()}
        times.append(time.perf_counter() - started)
    print(json.dumps({"evaluator": EVALUATOR, "build_s": build, "times_s": times, "median_s": statistics.median(times), "scores": scores}))


if __name__ == "__main__":
    main()
