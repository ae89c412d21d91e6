"""Summarize a learning-rate (or any) sweep: python report.py outputs/multirun/DATE/TIME [--metric fid] [--param optim.lr]

Reads only the run directories (no W&B server), writes summary.md, summary.csv and summary.png into the
sweep directory and prints the table, best job first marked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gan.errors import exit_on_user_error
from gan.report import write_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory, e.g. outputs/multirun/DATE/TIME")
    parser.add_argument("--metric", help="column to rank jobs and plot (default: fid if evaluated, else g_loss)")
    parser.add_argument("--param", help="swept key for the plot's x axis (default: the first swept key)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        print(write_summary(args.sweep_dir, args.metric, args.param))


if __name__ == "__main__":
    main()
