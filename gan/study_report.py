"""``python report.py STUDY_FOLDER`` for a sweep of ``hydra/sweeper=optuna``: every trial (its parameters, state,
the epoch a pruned one stopped at, its objective), the best trial and its checkpoint, the epochs the study
trained against what the full grid of its trials would have cost, and summary.png with each trial's
objective over the epochs (the pruned ones stopping where they stopped).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from gan.errors import GanError
from gan.rundir import read_status
from gan.study import STUDY_FILE, TRIAL_FILE


def is_study(directory: Path) -> bool:
    return (directory / STUDY_FILE).is_file()


def _trial_folders(directory: Path) -> dict[int, Path]:
    """Trial number -> the job folder that ran it, from each job's .hydra/trial.json."""
    folders = {}
    for record in directory.glob(f"*/.hydra/{TRIAL_FILE}"):
        try:
            folders[int(json.loads(record.read_text())["trial"])] = record.parent.parent
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return folders


def load(directory: Path) -> tuple[dict[str, Any], Any]:
    """The sweep's study.json and its study, opened from the storage it names."""
    import optuna

    try:
        info = json.loads((directory / STUDY_FILE).read_text())
        study = optuna.load_study(study_name=info["study"], storage=info["storage"])
    except (OSError, ValueError, KeyError) as err:
        raise GanError(f"cannot open the study of {directory} ({err}); is {directory / STUDY_FILE} the file the sweep wrote, "
                       f"and its storage reachable from here?") from None
    return info, study


def study_rows(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One row per trial: number, state, parameters, pruned-at epoch, epochs trained, objective, folder and checkpoint."""
    info, study = load(directory)
    folders = _trial_folders(directory)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        folder = folders.get(trial.number)
        status = read_status(folder) if folder is not None else None
        state = trial.state.name.lower()
        pruned_at = max(trial.intermediate_values) if state == "pruned" and trial.intermediate_values else None
        trained = status.epoch if status is not None and status.epoch is not None else pruned_at
        final = trial.value if state == "complete" else None  # a pruned trial's value is its last evaluation's
        checkpoint = folder / "checkpoints" / "last.pt" if folder is not None else None
        rows.append({
            "trial": trial.number, "state": state, **trial.params, "_params": list(trial.params),
            "pruned_at (value)": f"{pruned_at} ({trial.intermediate_values[pruned_at]:.4g})" if pruned_at is not None else None,
            "epochs_trained": trained, "objective": final, "reason": trial.system_attrs.get("fail_reason", ""),
            "folder": str(folder) if folder else "", "checkpoint": str(checkpoint) if checkpoint and checkpoint.is_file() else "",
            "_curve": {**trial.intermediate_values, **({info["epochs"]: final} if final is not None else {})},
        })
    return info, rows


def write_study_summary(directory: Path, out: Path | None = None) -> str:
    """summary.md, summary.csv and summary.png of the study in ``directory``; returns the table."""
    info, rows = study_rows(directory)
    if not rows:
        raise GanError(f"the study {info['study']} has no trials yet; run the sweep (its command again continues it).")
    params = list(dict.fromkeys(k for row in rows for k in row["_params"]))
    columns = ["trial", "state", *params, "pruned_at (value)", "epochs_trained", "objective", "checkpoint"]
    lines = [f"Study {info['study']} ({info['storage']}): {info['direction']} {info['objective']}, {len(rows)} trials", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    complete = [row for row in rows if row["state"] == "complete"]
    best = (min if info["direction"] == "minimize" else max)(complete, key=lambda r: r["objective"]) if complete else None
    for row in rows:
        cells = ["" if row.get(c) is None else f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        if row is best:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    if best:
        lines += ["", f"Best: trial {best['trial']} ({', '.join(f'{p}={best[p]}' for p in params)}), {info['objective']} = "
                      f"{best['objective']:.4g}, checkpoint {best['checkpoint'] or '(not in this folder)'}"]
    trained = sum(row["epochs_trained"] or 0 for row in rows)
    grid = info["epochs"] * len(rows)
    lines += ["", f"Epochs trained: {trained} of the {grid} that {len(rows)} trials of {info['epochs']} epochs would cost "
                  f"({100 * trained / grid:.0f}%)."]
    failed = [row for row in rows if row["state"] == "fail"]
    lines += [f"- trial {row['trial']} failed: {row['reason']}" for row in failed]
    table = "\n".join(lines)

    out = out or directory
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*columns, "reason", "folder"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        (out / "summary.md").write_text(f"# Study in {directory}\n\n{table}\n")
        _plot_curves(rows, info["objective"], out / "summary.png")
    except OSError as err:
        raise GanError(f"cannot write the summary into {out} ({err.strerror or err}); pass a writable folder with --out DIR.") from None
    return table


def _plot_curves(rows: list[dict[str, Any]], objective: str, path: Path) -> None:
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for row in rows:
        curve = sorted(row["_curve"].items())
        if not curve:
            continue
        epochs, values = zip(*curve)
        style = "x--" if row["state"] == "pruned" else "o-"
        axes.plot(epochs, values, style, label=f"trial {row['trial']} ({row['state']})")
    if all(v > 0 for row in rows for v in row["_curve"].values()):
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel(objective)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
