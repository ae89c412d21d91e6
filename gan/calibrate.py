"""Check that the metrics rank known sample sets correctly, and print the table for the README.

    python -m gan.calibrate --data-root ../shared/data [--n 10000]

real train images vs the test set (the floor), one digit only (collapse), uniform noise (the ceiling).
"""

from __future__ import annotations

import argparse

import torch

from gan.data import load_mnist, to_unit_range
from gan.metrics import Evaluator, format_scores


def calibration_sets(data_root: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    train = load_mnist(data_root, download=False, train=True)
    images = to_unit_range(train.data)
    ones = images[train.targets == 1]
    return {
        "real train (floor)": images[torch.randperm(len(images), generator=generator)[:n]],
        "one digit (collapse)": ones[torch.randint(len(ones), (n,), generator=generator)],
        "uniform noise (ceiling)": torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data")
    parser.add_argument("--n", type=int, default=10000)
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
