"""Summarize a sweep, or several runs: python report.py DIR [DIR ...] [--metric fid] [--param optim.lr] [--out DIR]

Each DIR is a Hydra multirun directory (outputs/multirun/DATE/TIME) or one run's directory. Reads only
the run directories (no W&B server), writes summary.md, summary.csv and summary.png into --out (default:
the first DIR) and prints the table, best job marked; runs that differ by seed also get each setting's
mean and spread over its seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gan.errors import exit_on_user_error
from gan.report import write_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+", metavar="DIR",
                        help="a Hydra multirun directory, e.g. outputs/multirun/DATE/TIME, or a run's directory")
    parser.add_argument("--metric", help="column to rank jobs and plot (default: fid if evaluated, else g_loss)")
    parser.add_argument("--param", help="swept key for the plot's x axis (default: the first swept key other than seed)")
    parser.add_argument("--out", type=Path, help="where summary.md/.csv/.png go (default: the first DIR)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        print(write_summary(args.directories, args.metric, args.param, args.out))


if __name__ == "__main__":
    main()
