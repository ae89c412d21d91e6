"""Summarize a Hydra multirun sweep from its run directories alone (no W&B server needed).

:func:`write_summary` writes summary.md, summary.csv and summary.png into the sweep directory and
returns the table; ``python report.py SWEEP_DIR`` is its command line.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from gan.errors import GanError
from gan.history import read_metrics_csv

# Metrics where larger is better; every other metric (losses, FID, KID, KL) ranks smaller first.
HIGHER_IS_BETTER = {"precision", "recall", "classifier_score", "classes_over_5pct", "d_real"}


def _job_sort_key(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (math.inf, path.name)  # type: ignore[return-value]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job: its overrides, last epoch's metrics, final evaluation and checkpoint."""
    rows = []
    for job_dir in sorted((p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")), key=_job_sort_key):
        overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
        row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(overrides)}
        row.update({o.split("=", 1)[0]: _parse_value(o.split("=", 1)[1]) for o in overrides if "=" in o})
        if (job_dir / "metrics.csv").is_file() and (history := read_metrics_csv(job_dir / "metrics.csv")):
            row.update({k: history[-1][k] for k in ("epoch", "d_loss", "g_loss", "d_real", "d_fake") if k in history[-1]})
        if (job_dir / "eval.json").is_file():
            final = json.loads((job_dir / "eval.json").read_text())
            row.update({k: v for k, v in final.get("ema", final).items() if isinstance(v, (int, float))})
        checkpoint = job_dir / "checkpoints" / "last.pt"
        row["checkpoint"] = str(checkpoint) if checkpoint.is_file() else ""
        if (job_dir / "wandb.json").is_file():  # written by the run's tracker
            row["wandb"] = json.loads((job_dir / "wandb.json").read_text())
        rows.append(row)
    return rows


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for row in rows for o in row["overrides"].split() for k in [o.split("=", 1)[0]])
    return [k for k in keys if len({json.dumps(row.get(k)) for row in rows}) > 1]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(sweep_dir: Path, metric: str | None = None, param: str | None = None) -> str:
    rows = collect(sweep_dir)
    if not rows:
        raise GanError(f"no Hydra jobs (*/.hydra/overrides.yaml) under {sweep_dir}; pass a multirun sweep directory.")
    params = swept_keys(rows)
    metric = metric or next((m for m in ("fid", "g_loss") if any(m in row for row in rows)), None)
    param = param or (params[0] if params else None)
    ranked = [row for row in rows if isinstance(row.get(metric), (int, float))]
    best = (max if metric in HIGHER_IS_BETTER else min)(ranked, key=lambda r: r[metric]) if ranked else None

    metric_columns = [k for k in ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "fid", "kid", "precision", "recall",
                                  "classifier_score", "class_kl", "classes_over_5pct") if any(k in row for row in rows)]
    columns = ["job", *params, *metric_columns, "checkpoint"]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["job", "overrides", *params, *metric_columns, "checkpoint"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(c, "")) for c in columns]
        if row is best:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    if best:
        lines += ["", f"Best by {metric}: job {best['job']} ({best['overrides']}), {metric} = {_fmt(best[metric])}, checkpoint {best['checkpoint']}"]
    lines += wandb_lines(rows)
    table = "\n".join(lines)
    (sweep_dir / "summary.md").write_text(f"# Sweep {sweep_dir}\n\n{table}\n")

    if param and metric and ranked:
        _plot(ranked, param, metric, sweep_dir / "summary.png")
    return table


def wandb_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Where each job is in W&B: the sweep's group, then each run's URL, or the command that uploads it."""
    runs = [(row["job"], row["wandb"]) for row in rows if row.get("wandb")]
    if not runs:
        return []
    groups = sorted({str(run.get("group")) for _, run in runs})
    lines = ["", f"W&B group: {', '.join(groups)}"]
    for job, run in runs:
        where = run.get("url") or (f"offline, upload with `{run['sync_command']}`" if run.get("sync_command") else run.get("mode", ""))
        lines.append(f"- job {job}: {where}")
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
