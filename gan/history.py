"""What a run records on disk besides checkpoints: metrics.csv and losses.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # a bare Figure renders to files without any GUI backend

from gan.columns import STATS
from gan.rundir import replace_atomically

TRACE_COLUMNS = ("step", *STATS)


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    """One row per epoch; columns are every key any epoch recorded, in first-seen order. Written atomically."""
    columns: dict[str, None] = {}
    for record in history:
        columns.update(dict.fromkeys(record))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(history)
    replace_atomically(path, lambda f: f.write(text.getvalue().encode()))


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_losses(trace: list[list[float]], path: Path) -> None:
    """Losses and D's mean outputs against the step, from the rows of ``TRACE_COLUMNS``."""
    figure = Figure(figsize=(9, 3.5))
    loss_axes, d_axes = figure.subplots(1, 2)
    if trace:
        step, d_loss, g_loss, d_real, d_fake = zip(*trace)
        loss_axes.plot(step, d_loss, label="D loss")
        loss_axes.plot(step, g_loss, label="G loss")
        d_axes.plot(step, d_real, label="D(x)")
        d_axes.plot(step, d_fake, label="D(G(z))")
    for axes, title in ((loss_axes, "losses"), (d_axes, "discriminator output")):
        axes.set_xlabel("step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
    d_axes.set_ylim(0, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
