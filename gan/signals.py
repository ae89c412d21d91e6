"""Stop requests from outside: Ctrl-C, a scheduler's SIGTERM, and the time-limit/preemption warning.

A signal is only recorded here; the loop finishes the current step, writes ``last.pt`` and raises
:class:`TrainingInterrupted`. SIGUSR2 is what SLURM sends ahead of a time limit or a preemption
(submitit asks for it): if another handler was installed for it before the run (submitit's, which
resubmits the job and exits), :meth:`TrainingInterrupted.forward` hands the signal on to it once the
checkpoint is written and tracking is finished, so the job comes back and continues with ``resume=auto``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from gan.errors import GanError

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name))
FORWARDED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2",) if hasattr(signal, name))


class TrainingInterrupted(GanError):
    """A stop request ended the run after a checkpoint was written."""

    def __init__(self, message: str, signum: int, forward_to: Callable[[int, Any], Any] | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self._forward_to = forward_to

    def forward(self) -> None:
        """Call the handler the signal had before the run (e.g. submitit's requeue, which exits); else return."""
        if self._forward_to is not None:
            log.info("handing %s on to the handler installed before this run", signal.Signals(self.signum).name)
            self._forward_to(self.signum, None)


class StopRequests:
    """Records the stop signal; a second Ctrl-C stops at once (KeyboardInterrupt), except inside
    :meth:`critical` (a checkpoint write), which it ends first.

    A scheduler may send SIGTERM and SIGUSR2 together when it preempts a job: while a stop is pending,
    a SIGUSR2 makes it a stop-and-requeue, and a repeated SIGTERM is ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._in_critical = False
        self._forced = False  # a second Ctrl-C arrived inside a critical block

    def _request(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            if self._in_critical:
                self._forced = True
                return
            raise KeyboardInterrupt
        if self.signum is None or signum in FORWARDED_SIGNALS:
            self.signum = signum
            log.warning("received %s: stopping after this step", signal.Signals(signum).name)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block a second Ctrl-C does not cut in two (the atomic write of a checkpoint): it stops right after."""
        self._in_critical = True
        try:
            yield
        finally:
            self._in_critical = False
        if self._forced:
            raise KeyboardInterrupt

    def interrupted(self, message: str) -> TrainingInterrupted:
        """The exception to raise once the run has stopped for the recorded signal."""
        assert self.signum is not None
        previous = self._previous.get(self.signum)
        forward = previous if self.signum in FORWARDED_SIGNALS and callable(previous) else None
        return TrainingInterrupted(message, self.signum, forward)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        """Handle the stop signals inside the block (main thread only); restore the previous handlers after."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {sig: signal.signal(sig, self._request) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
