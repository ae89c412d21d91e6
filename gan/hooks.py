"""What happens after each epoch, in order: the sample grid, the evaluation, the files and the tracker.

A hook is called as ``hook(run, record)`` with :class:`EpochEnd`, the part of the run a hook may read,
and the epoch's record (a dict in ``run.history``), to which it may add columns; it returns a :class:`Stop`
to end the run after this epoch's checkpoint, else None. The loop runs the hooks with the training RNG set
aside, so whatever they draw leaves the training itself unchanged. Add one by appending its class to
``EPOCH_HOOKS`` (docs/architecture.md); a hook that needs arguments (a study's trial) is handed to
:func:`epoch_hooks`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gan.collapse import find_collapse, first_collapse
from gan.columns import METRICS
from gan.config import Config
from gan.evaluator import Evaluator, conditional_labels
from gan.history import plot_losses, write_metrics_csv
from gan.models import Generator
from gan.rundir import RunState, write_json_atomically, write_status
from gan.sampling import generate, noise, save_grid, to_uint8, write_progress_gif
from gan.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stop:
    """A hook's request to end the run after this epoch: the status it leaves (stopped, pruned) and why."""

    status: str
    reason: str


@dataclass
class EpochEnd:
    """The run as the hooks see it after an epoch: what they read, and nothing they could change it by."""

    cfg: Config
    run_dir: Path
    device: torch.device
    epoch: int  # completed epochs
    step: int  # optimization steps so far
    generator: Generator
    generator_ema: Generator
    fixed_noise: torch.Tensor
    fixed_labels: torch.Tensor | None  # conditional models: one digit per grid row
    history: list[dict[str, Any]]  # one record per epoch, this one last
    trace: list[list[float]]  # [step, *STATS] per logging window
    tracker: Tracker

    @property
    def final(self) -> bool:
        return self.epoch == self.cfg.epochs


class SampleGrid:
    """samples/epoch_NNN.png: the same fixed noise every ``sample_every`` epochs, so grids show progress
    (a conditional model's grid has one row per digit); after the last epoch, samples/progress.gif."""

    def __call__(self, run: EpochEnd, record: dict[str, Any]) -> None:
        cfg = run.cfg
        if run.epoch % cfg.sample_every and not run.final:
            return
        generator = run.generator_ema if cfg.grid_ema else run.generator
        images = generate(generator, run.fixed_noise, run.fixed_labels)
        columns = None if run.fixed_labels is None else len(images) // generator.num_classes
        grid = save_grid(images, run.run_dir / "samples" / f"epoch_{run.epoch:03d}.png", nrow=columns)
        run.tracker.log_grid(grid, run.step)
        if run.final:
            gif = run.run_dir / "samples" / "progress.gif"
            write_progress_gif(gif.parent, gif)
            run.tracker.log_progress(gif, run.step)


class Evaluation:
    """FID & co. of G-EMA and G every ``eval.every`` epochs and at the end (then also eval.json, and a
    table of classified samples in the tracker)."""

    TABLE_SAMPLES = 100  # per generator

    def __init__(self) -> None:
        self.evaluator: Evaluator | None = None  # built at the first evaluation: it reads the test set

    def __call__(self, run: EpochEnd, record: dict[str, Any]) -> None:
        cfg = run.cfg
        if not cfg.eval.enabled or (run.epoch % cfg.eval.every and not run.final):
            return
        if self.evaluator is None:
            self.evaluator = Evaluator(cfg.data.root, run.device, cfg.data.download)
        n = cfg.eval.final_n_samples if run.final else cfg.eval.n_samples
        started = time.perf_counter()
        results = {name: self.evaluator.score_generator(generator, n, cfg.eval.seed)
                   for name, generator in (("ema", run.generator_ema), ("raw", run.generator))}
        ema, raw = results["ema"], results["raw"]
        accuracy = f", label accuracy {ema['label_accuracy']:.3f} / {raw['label_accuracy']:.3f}" if "label_accuracy" in ema else ""
        log.info("epoch %d evaluation on %d samples (%.1f s): FID %.2f (EMA) / %.2f (G), recall %.3f / %.3f, classes >= 5%%: %d / %d%s",
                 run.epoch, n, time.perf_counter() - started, ema["fid"], raw["fid"], ema["recall"], raw["recall"],
                 ema["classes_over_5pct"], raw["classes_over_5pct"], accuracy)
        record.update({k: v for k, v in ema.items() if k in METRICS})
        record.update({f"raw_{k}": v for k, v in raw.items() if k in METRICS})
        best = min(((r["fid"], int(r["epoch"])) for r in run.history if "fid" in r), default=(ema["fid"], run.epoch))
        run.tracker.log_evaluation(results, run.epoch, run.step, best)
        if run.final:
            write_json_atomically(run.run_dir / "eval.json", {"epoch": run.epoch, "step": run.step, "n_samples": n, **results})
            run.tracker.log_samples(self.classified_samples(run, cfg.eval.seed), run.step)

    def classified_samples(self, run: EpochEnd, seed: int) -> list[tuple[str, Any, str | None, str, float]]:
        """(generator, image, requested digit or None, predicted digit, confidence) for a few samples of each generator."""
        assert self.evaluator is not None
        rows = []
        z = noise(self.TABLE_SAMPLES, run.generator.latent_dim, seed)
        labels = conditional_labels(run.generator, self.TABLE_SAMPLES)
        requested = [None] * self.TABLE_SAMPLES if labels is None else [str(d) for d in labels.tolist()]
        for name, generator in (("ema", run.generator_ema), ("raw", run.generator)):
            images = generate(generator, z, labels)
            digits, confidences = self.evaluator.classify(images)
            rows += [(name, image, asked, digit, confidence)
                     for image, asked, digit, confidence in zip(to_uint8(images), requested, digits, confidences)]
        return rows


class CollapseWatch:
    """After an evaluation: a collapse that does not heal (gan/collapse.py) is said once, in the log, the
    epoch's record (``collapsed_at``, so metrics.csv) and the tracker; RunFiles puts it in status.json."""

    def __call__(self, run: EpochEnd, record: dict[str, Any]) -> Stop | None:
        if "recall" not in record or first_collapse(run.history[:-1]) is not None:
            return None
        collapse = find_collapse(run.history)
        if collapse is None:
            return None
        record["collapsed_at"] = collapse.epoch
        stop = run.cfg.train.on_collapse == "stop"
        log.warning("%s (%s)", collapse.describe(), "train.on_collapse=stop ends the run here" if stop else "train.on_collapse=stop would end it")
        run.tracker.log({"collapsed_at": collapse.epoch}, run.step)
        return Stop("stopped", collapse.describe()) if stop else None


class RunFiles:
    """metrics.csv and status.json every epoch; losses.png after the first epoch, every ``checkpoint_every``
    and the last (matplotlib is slow next to the other files); the epoch's scalars in the
    tracker, whose dashboard has the live curves."""

    def __call__(self, run: EpochEnd, record: dict[str, Any]) -> None:
        write_metrics_csv(run.history, run.run_dir / "metrics.csv")
        collapse = first_collapse(run.history)
        write_status(run.run_dir, RunState("running", run.epoch, run.cfg.epochs, collapse.describe() if collapse else None))
        if run.epoch == 1 or run.final or run.epoch % run.cfg.checkpoint_every == 0:
            plot_losses(run.trace, run.run_dir / "losses.png")
        run.tracker.log({"epoch": run.epoch, "epoch_time_s": record["epoch_time_s"]}, run.step)


EPOCH_HOOKS = (SampleGrid, Evaluation, CollapseWatch, RunFiles)


def epoch_hooks(*extra: Any) -> list[Any]:
    """The hooks of ``EPOCH_HOOKS``, with ``extra`` ones (instances) after the evaluation and before RunFiles writes the epoch."""
    hooks = [hook() for hook in EPOCH_HOOKS]
    return hooks[:-1] + list(extra) + hooks[-1:]
