"""Summarize Hydra runs from their run directories alone (no W&B server needed).

:func:`write_summary` takes a multirun sweep directory, or several sweep and single-run directories
(e.g. one seed run next to a sweep over the other seeds), writes summary.md, summary.csv and
summary.png into the output directory and returns the table. Each job is marked finished, stopped at
epoch E of N, or failed (with the reason), and only finished jobs are ranked and averaged unless asked
(``--all``); a job whose files are damaged is reported as such and the others are summarized. When runs
differ by ``seed``, a second table gives each setting's mean and spread over its seeds. ``python
report.py DIR [DIR ...]`` (or ``python -m gan.report DIR [DIR ...]``) is its command line.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, NoReturn

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from gan.columns import DIGITS, HIGHER_IS_BETTER, REPORT_COLUMNS
from gan.errors import GanError, exit_on_user_error
from gan.history import read_metrics_csv
from gan.rundir import RunState, latest_launch_record, read_status
from gan.study_report import is_study, write_study_summary


def _job_sort_key(path: Path) -> tuple[float, str]:
    return (int(path.name), "") if path.name.isdigit() else (math.inf, path.name)


def job_dirs(directory: Path) -> list[Path]:
    """The run itself when ``directory`` is one Hydra run, else its jobs in numeric order."""
    if (directory / ".hydra" / "overrides.yaml").is_file():
        return [directory]
    return sorted((p.parent.parent for p in directory.glob("*/.hydra/overrides.yaml")), key=_job_sort_key)


def _hydra_record(record: Path) -> Any:
    """A launch record's hydra.yaml (its config choices and naming rules), or None when it has none."""
    hydra_file = record / "hydra.yaml"
    return OmegaConf.load(hydra_file) if hydra_file.is_file() else None


def _override_key(override: str) -> str:
    """``+train.r1_gamma=0.3`` -> ``train.r1_gamma``."""
    return override.split("=", 1)[0].lstrip("+~")


def _run_values(record: Path, hydra: Any, keys: list[str], overrides: list[str]) -> dict[str, Any]:
    """The values ``keys`` had in the launch ``record``: a config group's choice (e.g. model: small), else the composed value."""
    config_file = record / "config.yaml"
    choices = OmegaConf.select(hydra, "hydra.runtime.choices", default={}) if hydra is not None else {}
    config = OmegaConf.load(config_file) if config_file.is_file() else None
    given = {_override_key(o): _parse_value(o.partition("=")[2]) for o in overrides}
    values = {}
    for key in keys:
        if key in choices:
            values[key] = choices[key]
        elif config is not None:
            value = OmegaConf.select(config, key, default=None)
            values[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        else:
            values[key] = given.get(key)
    return values


# `+sweep=seeds` sets only the sweeper's values, so seed 3 launched alone later is the same setting as the sweep's seeds.
LAUNCH_ONLY_KEYS = {"sweep"}


def _ignored_keys(hydra: Any) -> set[str]:
    """Keys that change no result: the run's own exclude list for its W&B name (resume, data.root, wandb.*, ...)
    and the launch-only presets."""
    keys = OmegaConf.select(hydra, "hydra.job.config.override_dirname.exclude_keys", default=None) if hydra is not None else None
    return LAUNCH_ONLY_KEYS | ({str(k) for k in keys} if keys is not None else set())


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_job_file(job_dir: Path, name: str, read: Any, damaged: list[str]) -> Any:
    """``read(path)`` of one of the job's files, or None (the file's name added to ``damaged`` when it cannot be read)."""
    path = job_dir / name
    if not path.is_file():
        return None
    try:
        return read(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        damaged.append(name)
        return None


def _state(job_dir: Path, config: Any, epoch: Any) -> RunState:
    """The job's status.json, or for a run from before it was written: finished when it reached its epochs."""
    state = read_status(job_dir)
    if state is not None:
        return state
    epochs = OmegaConf.select(config, "epochs", default=None) if config is not None else None
    if epoch is None or epochs is None:
        return RunState("unknown")
    return RunState("finished" if int(epoch) >= int(epochs) else "stopped", int(epoch), int(epochs))


def collect(directories: list[Path]) -> list[dict[str, Any]]:
    """One row per run: its overrides, status, last epoch's metrics, final evaluation and checkpoint."""
    rows = []
    for directory in directories:
        for job_dir in job_dirs(directory):
            # A run extended or resumed with other values (epochs=100) is described by its latest launch.
            record = latest_launch_record(job_dir)
            hydra = _hydra_record(record)
            ignored = _ignored_keys(hydra)  # left out, as they are from the run's W&B name
            overrides = [str(o) for o in OmegaConf.load(record / "overrides.yaml") if _override_key(str(o)) not in ignored]
            # A job's number alone would be ambiguous among several directories: name its sweep too.
            single = len(directories) == 1 or (job_dir == directory and not job_dir.name.isdigit())
            name = job_dir.name if single else f"{job_dir.parent.name}/{job_dir.name}"
            row: dict[str, Any] = {"job": name, "overrides": " ".join(overrides), "_record": record, "_hydra": hydra}
            damaged: list[str] = []
            history = _read_job_file(job_dir, "metrics.csv", read_metrics_csv, damaged)
            if history:
                row.update({k: history[-1][k] for k in ("epoch", "d_loss", "g_loss", "d_real", "d_fake") if k in history[-1]})
            final = _read_job_file(job_dir, "eval.json", lambda path: json.loads(path.read_text()).get("ema"), damaged)
            if isinstance(final, dict):
                row.update({k: v for k, v in final.items() if isinstance(v, (int, float))})
                for column, prefix in (("digit", "class_"), ("label_accuracy", "label_accuracy_")):
                    values = [row[f"{prefix}{d}"] for d in range(DIGITS) if f"{prefix}{d}" in row]
                    if values and column == "digit":
                        row["digit_min"], row["digit_max"] = min(values), max(values)
                    elif values:
                        row["label_accuracy_min"] = min(values)
            checkpoint = job_dir / "checkpoints" / "last.pt"
            row["checkpoint"] = str(checkpoint) if checkpoint.is_file() else ""
            wandb = _read_job_file(job_dir, "wandb.json", lambda path: json.loads(path.read_text()), damaged)  # written by the run's tracker
            if isinstance(wandb, dict):
                row["wandb"] = wandb
            config = _read_job_file(job_dir, str(record.relative_to(job_dir) / "config.yaml"), OmegaConf.load, damaged)
            state = _state(job_dir, config, row.get("epoch"))
            row["status"] = state.describe() + (f" (damaged: {', '.join(damaged)})" if damaged else "")
            row["_finished"] = state.status == "finished" and not damaged
            rows.append(row)
    # Every key any run overrides, valued from each run's composed config: a run that left it alone shows its default.
    keys = overridden_keys(rows)
    for row in rows:
        record, hydra = row.pop("_record"), row.pop("_hydra")
        row.update(_run_values(record, hydra, keys, row["overrides"].split()))
    return rows


def overridden_keys(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(_override_key(o) for row in rows for o in row["overrides"].split()))


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Overridden keys whose values differ between runs."""
    return [k for k in overridden_keys(rows) if len({json.dumps(row.get(k)) for row in rows}) > 1]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def seed_table(rows: list[dict[str, Any]], params: list[str]) -> list[str]:
    """Each setting's mean and spread over its seeds: the numbers a claim about a recipe should rest on."""
    if "seed" not in params:
        return []
    settings = [p for p in params if p != "seed"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if isinstance(row.get("fid"), (int, float)):
            groups.setdefault(json.dumps([row.get(p) for p in settings]), []).append(row)
    if not groups:
        return []
    conditional = [m for m in ("label_accuracy", "intra_fid") if any(m in row for row in rows)]
    metrics = ["fid", "recall", "precision", *conditional]
    lines = ["", "Over seeds (mean ± standard deviation; digit range over all seeds; collapsed: fewer than 10 digits at >= 5%):", "",
             "| " + " | ".join([*settings, "seeds", *metrics, "digit range", "collapsed"]) + " |",
             "|" + "---|" * (len(settings) + len(metrics) + 3)]
    for group in groups.values():
        digit_range = (f"{100 * min(r['digit_min'] for r in group):.1f}-{100 * max(r['digit_max'] for r in group):.1f}%"
                       if all("digit_min" in r for r in group) else "")
        collapsed = sum(1 for r in group if r.get("classes_over_5pct", 10) < 10)
        seeds = ",".join(_fmt(r.get("seed")) for r in group)
        cells = [*(_fmt(group[0].get(p)) for p in settings), seeds, *(_mean_and_spread(group, m) for m in metrics), digit_range, str(collapsed)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mean_and_spread(rows: list[dict[str, Any]], metric: str) -> str:
    values = [row[metric] for row in rows if isinstance(row.get(metric), (int, float))]
    if not values:
        return ""
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2g}"


def write_summary(directories: Path | list[Path], metric: str | None = None, param: str | None = None,
                  out: Path | None = None, include_unfinished: bool = False) -> str:
    """Write summary.md/.csv/.png of the runs into ``out`` (default: the first directory) and return the table.

    Jobs are ranked by ``metric`` (default: fid when evaluated, else g_loss) and plotted against ``param``;
    only finished jobs are ranked and averaged over seeds, unless ``include_unfinished``. The folder of an
    Optuna study (hydra/sweeper=optuna) gets its trials' summary instead (gan/study_report.py).
    """
    directories = [directories] if isinstance(directories, Path) else list(directories)
    for directory in directories:
        if not directory.is_dir():
            raise GanError(f"{directory} {'is not a folder' if directory.exists() else 'does not exist'}; "
                           f"pass a multirun sweep directory (outputs/multirun/DATE/TIME) or run directories.")
    if len(directories) == 1 and is_study(directories[0]):  # a sweep of hydra/sweeper=optuna: its trials
        return write_study_summary(directories[0], out)
    rows = collect(directories)
    if not rows:
        raise GanError(f"no Hydra jobs (*/.hydra/overrides.yaml) under {', '.join(map(str, directories))}; "
                       "pass a multirun sweep directory or run directories.")
    params = swept_keys(rows)
    metric_columns = [k for k in REPORT_COLUMNS if any(k in row for row in rows)]
    if metric is not None and metric not in metric_columns:
        known = ", ".join(metric_columns) or "(none: no run has metrics yet)"
        raise GanError(f"--metric {metric} is not a column of these runs; use one of {known}.")
    if param is not None and param not in overridden_keys(rows):
        known = ", ".join(overridden_keys(rows)) or "(none: the runs set no keys)"
        raise GanError(f"--param {param} is not a key these runs set; use one of {known}.")
    metric = metric or next((m for m in ("fid", "g_loss") if any(m in row for row in rows)), None)
    param = param or next((p for p in params if p != "seed"), params[0] if params else None)
    finished = [row.pop("_finished") for row in rows]
    considered = [row for row, done in zip(rows, finished) if done or include_unfinished]
    ranked = [row for row in considered if isinstance(row.get(metric), (int, float))]
    best = (max if metric in HIGHER_IS_BETTER else min)(ranked, key=lambda r: r[metric]) if ranked else None

    columns = ["job", "status", *params, *metric_columns, "checkpoint"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(c, "")) for c in columns]
        if row is best:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    if best:
        lines += ["", f"Best by {metric}: job {best['job']} ({best['overrides']}), {metric} = {_fmt(best[metric])}, checkpoint {best['checkpoint']}"]
    if len(considered) < len(rows):
        lines += ["", f"Ranked and averaged: the {len(considered)} finished job(s) of {len(rows)} (--all includes the others)."]
    lines += seed_table(considered, params)
    lines += wandb_lines(rows)
    table = "\n".join(lines)

    out = out or directories[0]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "summary.csv", "w", newline="") as f:
            fields = ["job", "status", "overrides", *params, *metric_columns, "checkpoint"]
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        (out / "summary.md").write_text(f"# Runs in {', '.join(map(str, directories))}\n\n{table}\n")
        if param and metric and ranked:
            _plot(ranked, param, metric, out / "summary.png")
    except OSError as err:
        raise GanError(f"cannot write the summary into {out} ({err.strerror or err}); pass a writable folder with --out DIR.") from None
    return table


def wandb_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Where each job is in W&B: the sweep's group, then each run's URL, or the command that uploads it."""
    runs = [(row["job"], row["wandb"]) for row in rows if row.get("wandb")]
    if not runs:
        return []
    groups = {run.get("group") for _, run in runs}
    shared = len(groups) == 1  # one sweep, or single runs only; otherwise each job names its own group
    lines = ["", f"W&B group: {next(iter(groups)) or 'none (single runs)'}" if shared else "W&B groups: each job's, below"]
    for job, run in runs:
        where = run.get("url") or (f"offline, upload with `{run['sync_command']}`" if run.get("sync_command") else run.get("mode", ""))
        group = "" if shared else f" (group {run.get('group') or 'none'})"
        lines.append(f"- job {job}{group}: {where}")
    return lines


def _plot(rows: list[dict[str, Any]], param: str, metric: str, path: Path) -> None:
    points = sorted((row[param], row[metric]) for row in rows if isinstance(row.get(param), (int, float)))
    if not points:
        return
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    xs, ys = zip(*points)
    axes.plot(xs, ys, "o-")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        axes.set_xscale("log")
    axes.set_xlabel(param)
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _one_line_usage_error(message: str) -> NoReturn:
    """argparse's usage error as one line, like every other error of the repo's scripts."""
    print(f"error: {message}; see `python report.py --help`.", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Summarize a sweep, or several runs, from their run directories: summary.md, summary.csv, summary.png.")
    parser.add_argument("directories", type=Path, nargs="+", metavar="DIR",
                        help="a Hydra multirun directory, e.g. outputs/multirun/DATE/TIME, or a run's directory")
    parser.add_argument("--metric", help="column to rank jobs and plot (default: fid if evaluated, else g_loss)")
    parser.add_argument("--param", help="swept key for the plot's x axis (default: the first swept key other than seed)")
    parser.add_argument("--out", type=Path, help="where summary.md/.csv/.png go (default: the first DIR)")
    parser.add_argument("--all", action="store_true", help="rank and average unfinished (stopped, failed) jobs too")
    parser.error = _one_line_usage_error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    with exit_on_user_error():
        print(write_summary(args.directories, args.metric, args.param, args.out, include_unfinished=args.all))


if __name__ == "__main__":
    main()
