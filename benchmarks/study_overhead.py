"""What the Optuna study costs a trial, apart from training: its storage reads and writes.

Runs a study's storage work as the sweeper and a trial's job do it, on a SQLite file in a temporary folder
(the default storage), without training: the sweeper asks for a trial and later checks it; the job opens
the trial, reports ``--evaluations`` intermediate values (asking the pruner each time) and tells the
study the outcome. Prints the seconds per trial for each part over ``--trials`` trials.

    python -m benchmarks.study_overhead [--trials 20] [--evaluations 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.common import machine
from gan.study import Pruned, fail_silent, open_study, open_trial, search_space, settings_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--evaluations", type=int, default=10, help="intermediate values per trial (50 epochs, every 5)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    node = OmegaConf.create({"objective": "ema.fid", "direction": None, "sampler": "tpe", "pruner": "successive_halving",
                             "storage": None, "study_name": "overhead", "seed": 0, "trial": None})
    settings = settings_from(node, folder)
    parameters, fixed = search_space(["optim.lr=tag(log, interval(0.00005, 0.001))"], lambda key: True)
    started = time.perf_counter()
    study = open_study(settings, parameters, fixed)
    opened = time.perf_counter() - started
    distributions = {p.name: p.distribution for p in parameters}
    parts: dict[str, list[float]] = {"sweeper: ask": [], "job: open the trial": [], "job: reports and pruner": [],
                                     "job: tell": [], "sweeper: check": []}
    for number in range(args.trials):
        t0 = time.perf_counter()
        trial = study.ask(distributions)
        t1 = time.perf_counter()
        job = open_trial(OmegaConf.merge(node, {"storage": settings.storage, "trial": trial.number}))
        t2 = time.perf_counter()
        for step in range(1, args.evaluations + 1):
            value = 100.0 / step + number  # later trials evaluate worse: some are pruned
            job.trial.report(value, step * 5)
            if job.trial.should_prune():
                job.pruned = Pruned(step * 5, value, [], settings.objective)
                break
        t3 = time.perf_counter()
        job.finish({"fid": 10.0 + number})
        t4 = time.perf_counter()
        fail_silent(study, [trial.number])
        t5 = time.perf_counter()
        for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[name].append(seconds)

    print(f"{machine()}; SQLite in {folder}; opening the study {opened:.3f} s")
    total = [sum(values) for values in zip(*parts.values())]
    for name, values in parts.items():
        print(f"{name:26s} median {statistics.median(values):.3f} s, max {max(values):.3f} s")
    print(f"{'a trial in all':26s} median {statistics.median(total):.3f} s, max {max(total):.3f} s "
          f"({args.trials} trials, {args.evaluations} evaluations each)")


if __name__ == "__main__":
    main()
