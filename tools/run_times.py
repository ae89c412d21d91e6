"""Where a run's time went, from its train.log: python tools/run_times.py RUN_OR_SWEEP_DIR [...]

For each run: wall time from its first to its last log line (a job's own time; the process start-up
before its first line is not in it), the epochs' step time (median and range), and the evaluations' time.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
from pathlib import Path

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
EPOCH = re.compile(r"epoch (\d+)/(\d+) .* ([\d.]+) s$")
EVALUATION = re.compile(r"evaluation on (\d+) samples \(([\d.]+) s\)")


def run_times(log: Path) -> str:
    stamps, epochs, evaluations = [], [], []
    for line in log.read_text().splitlines():
        if match := STAMP.match(line):
            stamps.append(datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
        if match := EPOCH.search(line):
            epochs.append(float(match.group(3)))
        if match := EVALUATION.search(line):
            evaluations.append(float(match.group(2)))
    if not stamps or not epochs:
        return f"{log.parent}: no epochs logged"
    wall = (stamps[-1] - stamps[0]).total_seconds()
    return (f"{log.parent}: {wall / 60:.1f} min from first to last log line; {len(epochs)} epochs of steps {sum(epochs):.0f} s "
            f"(median {statistics.median(epochs):.1f} s, {min(epochs):.1f}-{max(epochs):.1f} s); "
            f"{len(evaluations)} evaluations {sum(evaluations):.0f} s; the rest {wall - sum(epochs) - sum(evaluations):.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+")
    for directory in parser.parse_args().directories:
        for log in sorted(directory.glob("train.log")) or sorted(directory.glob("*/train.log")):
            print(run_times(log))


if __name__ == "__main__":
    main()
