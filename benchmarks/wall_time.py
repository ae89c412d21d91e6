"""Wall time of whole processes, as a user runs them: train.py against the reference loop, side by side.

    python -m benchmarks.wall_time --data-root ../shared/data --epochs 2 [--config "eval.enabled=false"] [--sweep]

Each repeat runs, one after the other, `python benchmarks/reference_loop.py --epochs N` and
`python train.py epochs=N OVERRIDES` for every ``--config`` (default: eval.enabled=false, then the
plain default with its evaluations), each in a fresh run directory; the time is from process start to
exit, so imports, data loading, W&B, evaluation and checkpoints all count. ``--sweep`` adds a 2-job
learning-rate multirun with the basic launcher (jobs one after the other) and with the joblib launcher
(n_jobs=2). Reported: the median over repeats, the spread, and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, machine

SWEEP = ("optim.lr=0.0001,0.0002", "eval.enabled=false")


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="./data", help="folder holding MNIST/raw (default: ./data)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", action="append", default=None, help="train.py overrides of one row (repeatable)")
    parser.add_argument("--sweep", action="store_true", help="also time a 2-job multirun, basic launcher vs joblib n_jobs=2")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    args = parser.parse_args(argv)
    data_root = str(Path(args.data_root).resolve())
    env = {**os.environ, "DATA_ROOT": data_root, "PYTHONWARNINGS": "ignore"}
    scratch = Path(tempfile.mkdtemp(prefix="wall-time-"))

    rows: dict[str, list[str]] = {}
    if not args.no_reference:
        rows["reference loop"] = [sys.executable, "benchmarks/reference_loop.py", "--data-root", data_root, "--epochs", str(args.epochs)]
    for overrides in args.config or ["eval.enabled=false", ""]:
        rows[f"train.py epochs={args.epochs} {overrides}".strip()] = [sys.executable, "train.py", f"epochs={args.epochs}", *overrides.split()]
    if args.sweep:
        # -m first: Hydra's argument parser takes flags before the overrides.
        rows["2-job sweep, basic launcher"] = [sys.executable, "train.py", "-m", f"epochs={args.epochs}", *SWEEP]
        rows["2-job sweep, joblib n_jobs=2"] = [sys.executable, "train.py", "-m", f"epochs={args.epochs}", *SWEEP,
                                                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]

    times: dict[str, list[float]] = {label: [] for label in rows}
    try:
        for repeat in range(args.repeats):  # the rows take turns
            for index, (label, command) in enumerate(rows.items()):
                place = scratch / f"{repeat}-{index}"
                extra = [] if "reference" in label else [f"hydra.run.dir={place}", f"hydra.sweep.dir={place}"]
                times[label].append(timed(command + extra, env))
                print(f"repeat {repeat + 1}: {label}: {times[label][-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # every run's checkpoints: hundreds of MB

    reference = statistics.median(times["reference loop"]) if "reference loop" in times else None
    print(f"{machine()}; whole processes, {args.epochs} epochs each, median of {args.repeats} repeats taking turns")
    print("| process | wall time (median) | min - max | reference / this |")
    print("|---|---|---|---|")
    for label, values in times.items():
        median = statistics.median(values)
        ratio = f"{reference / median:.2f}x" if reference else ""
        print(f"| {label} | {median:.1f} s | {min(values):.1f} - {max(values):.1f} s | {ratio} |")


if __name__ == "__main__":
    main()
