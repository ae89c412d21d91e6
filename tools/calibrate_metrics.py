"""Check that the metrics rank known sample sets correctly, and print the calibration table of docs/evaluation.md.

    python tools/calibrate_metrics.py --data-root ../shared/data [--n 10000]

Real training images against the test set (the floor), one digit only (a collapse), uniform noise (the ceiling).
"""

from __future__ import annotations

import argparse

import torch

from gan.data import load_mnist, to_unit_range
from gan.evaluator import Evaluator, format_scores


def calibration_sets(data_root: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    train = load_mnist(data_root, download=False, train=True)
    images = to_unit_range(train.images)
    ones = images[train.labels == 1]
    return {
        "real train (floor)": images[torch.randperm(len(images), generator=generator)[:n]],
        "one digit (collapse)": ones[torch.randint(len(ones), (n,), generator=generator)],
        "uniform noise (ceiling)": torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder holding MNIST/raw (default: ./data)")
    parser.add_argument("--n", type=int, default=10000, help="images per set")
    args = parser.parse_args(argv)
    evaluator = Evaluator(args.data_root, download=False)
    results = {name: evaluator.score(images) for name, images in calibration_sets(args.data_root, args.n).items()}
    print(format_scores(results))
    floor, collapse, noise = results.values()
    ranked = floor["fid"] < collapse["fid"] < noise["fid"] and floor["recall"] > collapse["recall"] > noise["recall"] - 1e-9
    print(f"\nmetrics rank the sets correctly: {ranked}")
    if not ranked:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
