"""The run directory: made writable, and held by one training process at a time.

Two processes writing one run directory (a job relaunched while the old one still runs, a copy-pasted
``hydra.run.dir``) would interleave their checkpoints. The run holds an exclusive ``flock`` on
``<run_dir>/.lock`` for its whole life and writes its pid and host there; the kernel drops the lock
when the process ends in any way, so a lock left by a process that is gone is simply taken over.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from gan.errors import GanError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not guarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def prepare_run_directory(run_dir: Path) -> None:
    """Create the run's folders and check that files can be written there."""
    try:
        for folder in (run_dir / "samples", run_dir / "checkpoints"):
            folder.mkdir(parents=True, exist_ok=True)
        probe = run_dir / "checkpoints" / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise GanError(f"cannot write to the run directory {run_dir} ({err.strerror or err}); "
                       f"pass a writable one with hydra.run.dir=PATH.") from None


@contextlib.contextmanager
def locked_run_directory(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process, or stop at once naming the process that holds it."""
    prepare_run_directory(run_dir)
    if fcntl is None:
        yield
        return
    path = run_dir / LOCK_NAME
    with open(path, "a+") as lock_file:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            raise GanError(
                f"the run directory {run_dir} is in use by {holder}; wait for that run to end (or stop it), "
                f"or pass another hydra.run.dir."
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"train.py pid {os.getpid()} on {socket.gethostname()}\n")
        lock_file.flush()
        try:
            yield
        finally:
            lock_file.seek(0)
            lock_file.truncate()
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
