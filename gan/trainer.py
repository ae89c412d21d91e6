"""The training loop: epochs of GanStep on the preloaded data -> per-epoch hooks -> checkpoint.

A checkpoint holds everything the loop's future depends on (weights, optimizer and grad-scaler state,
RNG states, the shuffled order and position inside an interrupted epoch), and the hooks run with the
RNG state set aside, so a resumed or extended run ends with exactly the weights of an uninterrupted one.
Building a run around the loop (the lock, the checkpoint it resumes, the tracker, its status) is
gan/run.py's work.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gan.checkpoint import epoch_checkpoint_name, load_weights, prune_epoch_checkpoints, save_checkpoint
from gan.columns import STATS
from gan.config import Config
from gan.data import training_data
from gan.device import resolve_device
from gan.errors import GanError
from gan.hooks import EpochEnd, Stop, epoch_hooks
from gan.models import build_discriminator, build_generator
from gan.sampling import grid_inputs
from gan.signals import StopRequests
from gan.step import GanStep, r1_gamma_at
from gan.tracking import NoTracker, Tracker

log = logging.getLogger(__name__)


@dataclass
class EpochProgress:
    """Where the current epoch stands; saved in a checkpoint written mid-epoch."""

    order: torch.Tensor  # the epoch's shuffled image indices
    next_batch: int
    total: torch.Tensor  # running sums of STATS over the epoch
    window: torch.Tensor  # running sums of STATS since the last log line
    window_steps: int
    counted_steps: int  # steps in ``total`` (skipped non-finite steps are left out)
    seconds: float


@contextlib.contextmanager
def rng_set_aside(device: torch.device) -> Iterator[None]:
    """Run a block without moving the training RNG: what it draws (e.g. KID's subsets) is forgotten after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        yield


class Trainer:
    """Builds the models, data and step of a config (and the checkpoint it resumes), and runs the loop."""

    def __init__(self, cfg: Config, run_dir: Path, checkpoint: dict[str, Any] | None = None, extra_hooks: tuple[Any, ...] = ()) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.checkpoint_dir = run_dir / "checkpoints"
        self.device = resolve_device(cfg.device.name)
        torch.manual_seed(cfg.seed)
        self.images, self.labels = training_data(cfg.data, self.device)
        self.batch_size = cfg.data.batch_size
        self.steps_per_epoch = len(self.images) // self.batch_size  # full batches only
        self.generator = build_generator(cfg.model).to(self.device)
        self.discriminator = build_discriminator(cfg.model).to(self.device)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.conditional = self.generator.num_classes > 0
        if self.conditional and int(self.labels.max()) >= self.generator.num_classes:
            raise GanError(f"the training labels go up to {int(self.labels.max())}, beyond model.num_classes={self.generator.num_classes}; "
                           f"set model.num_classes to at least {int(self.labels.max()) + 1}.")
        self.gan_step = GanStep(self.generator, self.discriminator, self.generator_ema, cfg.optim, cfg.train,
                                self.batch_size, self.device, self.steps_per_epoch)
        self.fixed_noise, self.fixed_labels = grid_inputs(cfg.grid_size, self.generator, seed=cfg.seed)
        self.hooks = epoch_hooks(*extra_hooks)
        self.tracker: Tracker = NoTracker()
        self.stop_requests = StopRequests()

        self.epoch = 0  # completed epochs
        self.step = 0  # optimization steps taken, over all epochs: the x axis of every log
        self.history: list[dict[str, float]] = []  # one record per epoch
        self.trace: list[list[float]] = []  # [step, *STATS] per logging window
        self.progress: EpochProgress | None = None
        self.tracker_run_id: str | None = None
        self.stopped: Stop | None = None  # a hook ended the run early (a collapse, a pruned trial)
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            log.info("resumed after epoch %d, step %d", self.epoch, self.step)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, tracker: Tracker | None = None) -> dict[str, float]:
        """Train until ``cfg.epochs``, reporting to ``tracker``; returns the last epoch's record."""
        self.tracker = tracker or NoTracker()
        self.tracker_run_id = self.tracker.run_id or self.tracker_run_id
        log.info("training on %s in %s: %d images, %d steps per epoch, epochs %d..%d", self.device, self.gan_step.precision,
                 len(self.images), self.steps_per_epoch, self.epoch + 1, self.cfg.epochs)
        train = self.cfg.train
        if train.r1_gamma_end is not None:  # one override (train.r1_gamma=0) does not turn a schedule off: say it
            log.info("R1 gamma moves linearly from %g to %g over the first %d epochs, then stays (train.r1_gamma_end=null keeps %g)",
                     train.r1_gamma, train.r1_gamma_end, train.r1_decay_epochs, train.r1_gamma)
        with self.stop_requests.installed():
            while self.epoch < self.cfg.epochs:
                # 1. The epoch's steps (continuing mid-epoch after a resume).
                seconds = self.train_epoch()
                # 2. Its record: mean losses, speed, learning rates.
                record = self.close_epoch(seconds)
                # 3. Hooks: sample grid, evaluation, metrics.csv and plots, tracking.
                with rng_set_aside(self.device):
                    view = self.epoch_end()
                    stops = [stop for hook in self.hooks if (stop := hook(view, record)) is not None]
                # 4. The checkpoint, last: it is the promise that everything above happened.
                self.save()
                if stops:
                    self.stopped = stops[0]
                    log.warning("%s after epoch %d (the hook said why above); its checkpoints are kept", self.stopped.status, self.epoch)
                    break
        return self.history[-1] if self.history else {}

    def train_epoch(self) -> float:
        """Run the epoch's remaining steps; returns the seconds it took in all."""
        if self.progress is None:
            zeros = torch.zeros(len(STATS), device=self.device)
            self.progress = EpochProgress(torch.randperm(len(self.images), device=self.device), 0, zeros, zeros.clone(), 0, 0, 0.0)
        progress = self.progress
        started = time.perf_counter() - progress.seconds
        skip_nonfinite = self.cfg.train.nonfinite == "skip"
        bar = tqdm(range(progress.next_batch, self.steps_per_epoch), initial=progress.next_batch, total=self.steps_per_epoch,
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", disable=None, leave=False, dynamic_ncols=True)
        for i in bar:
            batch = progress.order[i * self.batch_size : (i + 1) * self.batch_size]
            stats = self.gan_step(self.images[batch], self.labels[batch] if self.conditional else None, self.step)
            self.step += 1
            progress.next_batch = i + 1
            if skip_nonfinite and not torch.isfinite(stats).all():  # under skip, GanStep has synced already
                log.warning("step %d: non-finite loss, update skipped", self.step)
            else:
                progress.window += stats
                progress.window_steps += 1
            if progress.window_steps == self.cfg.train.log_every or i == self.steps_per_epoch - 1:
                self.flush_window(progress, bar, (i + 1) * self.batch_size / (time.perf_counter() - started))
            if self.stop_requests.signum is not None:
                progress.seconds = time.perf_counter() - started
                self.stop()
        bar.close()
        return time.perf_counter() - started

    def flush_window(self, progress: EpochProgress, bar: tqdm, images_per_s: float) -> None:
        """Report the steps since the last report: the loop's one host sync per ``log_every`` steps."""
        if progress.window_steps == 0:
            return
        means = (progress.window / progress.window_steps).tolist()
        if not all(math.isfinite(m) for m in means):
            raise GanError(
                f"losses became non-finite by step {self.step} ({', '.join(f'{k}={v:.3g}' for k, v in zip(STATS, means))}); "
                f"the last good checkpoint, {self.checkpoint_dir / 'last.pt'}, is kept: resume from it with a lower "
                f"optim.lr, or set train.nonfinite=skip to skip such steps."
            )
        progress.total += progress.window
        progress.counted_steps += progress.window_steps
        progress.window.zero_()
        progress.window_steps = 0
        self.trace.append([self.step, *means])
        bar.set_postfix(d_loss=f"{means[0]:.3f}", g_loss=f"{means[1]:.3f}", img_s=f"{images_per_s:.0f}")
        self.tracker.log({**dict(zip(STATS, means)), "images_per_s": images_per_s}, self.step)

    def close_epoch(self, seconds: float) -> dict[str, float]:
        """Count the epoch as done and append its record to the history."""
        progress, self.progress = self.progress, None
        assert progress is not None
        self.epoch += 1
        means = (progress.total / max(progress.counted_steps, 1)).tolist()
        record = {"epoch": self.epoch, "step": self.step, **dict(zip(STATS, means)),
                  "images_per_s": self.steps_per_epoch * self.batch_size / seconds, "epoch_time_s": seconds,
                  "lr_g": self.gan_step.opt_g.param_groups[0]["lr"], "lr_d": self.gan_step.opt_d.param_groups[0]["lr"],
                  "r1_gamma": r1_gamma_at(self.cfg.train, self.step, self.steps_per_epoch)}  # where a moving gamma stands
        self.history.append(record)
        log.info("epoch %d/%d  d_loss %.3f  g_loss %.3f  D(x) %.3f  D(G(z)) %.3f  %.0f img/s  %.1f s",
                 self.epoch, self.cfg.epochs, *means, record["images_per_s"], seconds)
        return record

    def epoch_end(self) -> EpochEnd:
        return EpochEnd(self.cfg, self.run_dir, self.device, self.epoch, self.step, self.generator, self.generator_ema,
                        self.fixed_noise, self.fixed_labels, self.history, self.trace, self.tracker)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step,
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            **self.gan_step.state_dict(),  # opt_g, opt_d, scaler_g, scaler_d
            "rng": _rng_state(self.device), "fixed_noise": self.fixed_noise,
            "config": asdict(self.cfg), "history": self.history, "trace": torch.tensor(self.trace),
            "progress": None if self.progress is None else asdict(self.progress),
            "tracker_run_id": self.tracker_run_id,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.check_mid_epoch_data(ckpt)
        for module, key in ((self.generator, "generator"), (self.discriminator, "discriminator"), (self.generator_ema, "generator_ema")):
            load_weights(module, ckpt[key], ckpt, self.cfg.model, key.replace("_", " "))
        self.gan_step.load_state_dict(ckpt)
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.history, self.trace = ckpt["history"], ckpt["trace"].tolist()
        self.fixed_noise = ckpt["fixed_noise"]
        progress = ckpt.get("progress")
        self.progress = None if progress is None else EpochProgress(**{
            k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in progress.items()})
        self.tracker_run_id = ckpt.get("tracker_run_id")
        _set_rng_state(ckpt["rng"], self.device)

    def check_mid_epoch_data(self, ckpt: dict[str, Any]) -> None:
        """A checkpoint taken mid-epoch goes on with its epoch's shuffled order: only over the same images in batches of the same size."""
        progress = ckpt.get("progress")
        if progress is None:
            return
        data = ckpt.get("config", {}).get("data", {})
        images, batch_size = len(progress["order"]), data.get("batch_size", self.batch_size)
        if images != len(self.images) or batch_size != self.batch_size:
            subset = data.get("subset")
            raise GanError(
                f"the checkpoint stopped in the middle of epoch {ckpt['epoch'] + 1} (batch {progress['next_batch']}) of a run on "
                f"{images} images in batches of {batch_size}, and this run has {len(self.images)} in batches of {self.batch_size}; "
                f"resume it with data.subset={'null' if subset is None else subset} data.batch_size={batch_size}, "
                f"or resume from a checkpoint taken at the end of an epoch (checkpoints/epoch_NNN.pt).")

    def save(self) -> Path:
        """Write last.pt; at the end of every ``checkpoint_every`` epochs and of the run, also a kept epoch_NNN.pt."""
        last = self.checkpoint_dir / "last.pt"
        kept = self.progress is None and (self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs)
        copies = (self.checkpoint_dir / epoch_checkpoint_name(self.epoch),) if kept else ()
        with self.stop_requests.critical():
            save_checkpoint(self.state_dict(), last, copies=copies)
        if kept:
            self.tracker.log_checkpoint(copies[0], self.epoch)
            if self.cfg.keep_last is not None:
                prune_epoch_checkpoints(self.checkpoint_dir, self.cfg.keep_last)
        return last

    def stop(self) -> None:
        """Checkpoint mid-epoch and end the run for the stop request that arrived."""
        path = self.save()
        assert self.progress is not None and self.stop_requests.signum is not None
        name = signal.Signals(self.stop_requests.signum).name
        raise self.stop_requests.interrupted(
            f"stopped by {name} at step {self.step} (epoch {self.epoch + 1}, batch {self.progress.next_batch}/{self.steps_per_epoch}); "
            f"saved {path}: continue with resume={path} (or resume=auto in the same run directory)."
        )


def _rng_state(device: torch.device) -> dict[str, Any]:
    # The CUDA generators only when the run trains on CUDA: a CPU run on a GPU machine must not start a CUDA
    # context, and its checkpoint must not depend on whether a GPU happens to be visible (a SLURM job may see none).
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])
