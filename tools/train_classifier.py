"""Train the MNIST classifier behind the evaluation metrics and write its weights.

    python tools/train_classifier.py --data-root ../shared/data   (seeded, about 5 minutes on 2 CPU cores)

Then record the printed sha256 as WEIGHTS_SHA256 in gan/classifier.py: every load checks it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gan.classifier import WEIGHTS, sha256, train_classifier, weights_bytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder holding MNIST/raw (default: ./data)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    classifier, test_accuracy = train_classifier(args.data_root, args.epochs, args.seed)
    if test_accuracy < 0.99:
        raise SystemExit(f"test accuracy {test_accuracy:.4f} is below 0.99; not writing {args.out}.")
    data = weights_bytes(classifier)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out}: test accuracy {test_accuracy:.4f}, sha256 {sha256(data)}")
    print("record that sha256 as WEIGHTS_SHA256 in gan/classifier.py")


if __name__ == "__main__":
    main()
