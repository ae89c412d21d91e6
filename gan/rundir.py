"""The run directory: held by one training process at a time, written atomically, and saying what state it is in.

Two processes writing one run directory (a job relaunched while the old one still runs, a copy-pasted
``hydra.run.dir``) would interleave their checkpoints. A run holds an exclusive ``flock`` on
``<run_dir>/.lock`` for its whole life and writes its pid and host there; the kernel drops the lock when
the process ends in any way, so a lock left by a process that is gone is simply taken over.

``status.json`` says whether the run is running, finished, stopped (at which epoch of how many) or
failed (and why); ``.hydra/`` holds the record of the launch that created the run, and
``.hydra/launches/NNN/`` that of each later launch (a resume, an extension), so no launch rewrites the
record of an earlier one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gan.errors import GanError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not guarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
STATUS_NAME = "status.json"
RECORD_DIR = ".hydra"
_held: set[Path] = set()  # run directories this process holds


def _writable_error(run_dir: Path, err: OSError) -> GanError:
    return GanError(f"cannot write to the run directory {run_dir} ({err.strerror or err}); pass a writable one with hydra.run.dir=PATH.")


def prepare_run_directory(run_dir: Path) -> None:
    """Create the run's folders and check that files can be written there (under the lock, when one is taken)."""
    try:
        for folder in (run_dir / "samples", run_dir / "checkpoints"):
            folder.mkdir(parents=True, exist_ok=True)
        probe = run_dir / "checkpoints" / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise _writable_error(run_dir, err) from None


@contextlib.contextmanager
def locked_run_directory(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process (a no-op where it already does), or stop at once naming the holder.

    The lock is taken before anything is written into the run directory.
    """
    key = run_dir.resolve()
    if key in _held:
        yield
        return
    if fcntl is None:
        prepare_run_directory(run_dir)
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(run_dir / LOCK_NAME, "a+")
    except OSError as err:
        raise _writable_error(run_dir, err) from None
    with lock_file:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            raise GanError(
                f"the run directory {run_dir} is in use by {holder}; wait for that run to end (or stop it), "
                f"or pass another hydra.run.dir."
            ) from None
        prepare_run_directory(run_dir)
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"train.py pid {os.getpid()} on {socket.gethostname()}\n")
        lock_file.flush()
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            lock_file.seek(0)
            lock_file.truncate()
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def is_locked(run_dir: Path) -> bool:
    """Whether another process holds ``run_dir`` now (a training run in progress)."""
    path = run_dir / LOCK_NAME
    if fcntl is None or not path.is_file() or run_dir.resolve() in _held:
        return False
    with open(path) as lock_file:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        return False


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file, fsync and rename: a crash leaves the old file or the new one, never half of one.

    Raises OSError (the temporary file removed) when the write fails.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every platform lets a directory be opened
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomically(path: Path, data: Any) -> None:
    replace_atomically(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


# -- status.json ---------------------------------------------------------------------------------
@dataclass
class RunState:
    status: str  # running | finished | stopped | pruned (a study's pruner ended it) | failed | unknown
    epoch: int | None = None  # completed epochs
    epochs: int | None = None  # the epochs the run was asked for
    reason: str | None = None

    def describe(self) -> str:
        collapsed = f" ({self.reason.split(':')[0]})" if self.reason and self.reason.startswith("collapsed at epoch") else ""
        if self.status == "stopped" and self.epoch is not None and self.epochs is not None:
            return f"stopped at epoch {self.epoch} of {self.epochs}{collapsed}"
        if self.status == "finished":
            return f"finished{collapsed}"
        if self.status == "pruned" and self.epoch is not None and self.epochs is not None:
            return f"pruned at epoch {self.epoch} of {self.epochs}"
        if self.status == "failed" and self.reason:
            return f"failed: {self.reason}"
        return self.status


def write_status(run_dir: Path, state: RunState) -> None:
    write_json_atomically(run_dir / STATUS_NAME, {
        "status": state.status, "epoch": state.epoch, "epochs": state.epochs, "reason": state.reason,
        "updated": datetime.datetime.now().isoformat(timespec="seconds"),
    })


def read_status(run_dir: Path) -> RunState | None:
    """The run's status.json (a run that says "running" while nothing holds its lock ended without a word: stopped), or None."""
    path = run_dir / STATUS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        state = RunState(str(data["status"]), data.get("epoch"), data.get("epochs"), data.get("reason"))
    except (OSError, ValueError, KeyError, TypeError):
        return RunState("unknown", reason=f"{path} is damaged")
    if state.status == "running" and not is_locked(run_dir):
        state.status = "stopped"
    return state


def existing_run(run_dir: Path) -> str | None:
    """What ``run_dir`` already holds of a run (checkpoints or metrics), in words; None when it holds none
    (a new folder, or one whose launch was refused or interrupted before its first epoch)."""
    checkpoints = run_dir / "checkpoints"
    if not (checkpoints.is_dir() and any(checkpoints.glob("*.pt"))) and not (run_dir / "metrics.csv").is_file():
        return None
    state = read_status(run_dir)
    return f"a run that {'is ' if state and state.status == 'running' else ''}{state.describe()}" if state else "a run"


# -- the launch record ---------------------------------------------------------------------------
def record_refusal(run_dir: Path, record: dict[str, str] | None, state: RunState) -> None:
    """A launch that did not train: a new run's folder says why (its record and status.json); an existing run's stay as they were."""
    if read_status(run_dir) is not None or existing_run(run_dir) is not None:
        return
    if record is not None:
        write_launch_record(run_dir, record)
    write_status(run_dir, state)


def has_record(run_dir: Path) -> bool:
    return (run_dir / RECORD_DIR / "config.yaml").is_file()


def latest_launch_record(run_dir: Path) -> Path:
    """The record of the run's latest launch, what it trains to now: its newest ``.hydra/launches/NNN/``, else ``.hydra/``."""
    record = run_dir / RECORD_DIR
    later = [p for p in (record / "launches").glob("[0-9][0-9][0-9]") if (p / "config.yaml").is_file()]
    return max(later, key=lambda p: int(p.name)) if later else record


def write_launch_record(run_dir: Path, files: dict[str, str]) -> Path:
    """Write this launch's record (file name -> YAML text): ``.hydra/`` for the run's first, ``.hydra/launches/NNN/`` after."""
    record = run_dir / RECORD_DIR
    if has_record(run_dir):
        launches = record / "launches"
        number = 2 + sum(1 for p in launches.glob("[0-9][0-9][0-9]") if p.is_dir()) if launches.is_dir() else 2
        record = launches / f"{number:03d}"
    record.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        replace_atomically(record / name, lambda f, text=text: f.write(text.encode()))
    return record
