"""Summarize a sweep, or several runs: python report.py DIR [DIR ...] [--metric fid] [--param optim.lr] [--out DIR]

Each DIR is a Hydra multirun directory (outputs/multirun/DATE/TIME) or one run's directory. Reads only
the run directories (no W&B server), writes summary.md, summary.csv and summary.png into --out (default:
the first DIR) and prints the table, best job marked; runs that differ by seed also get each setting's
mean and spread over its seeds. ``python -m gan.report`` is the same command.
"""

from gan.report import main

if __name__ == "__main__":
    main()
