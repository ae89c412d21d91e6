"""Faults injected at the loop's own seams: a real signal at a chosen step, non-finite losses."""

from __future__ import annotations

import os
import signal

import pytest

from gan.step import GanStep


def signal_at_step(monkeypatch: pytest.MonkeyPatch, at_step: int, signum: int = signal.SIGTERM) -> None:
    """Deliver a real ``signum`` to this process right after global step ``at_step`` is taken."""
    real_call = GanStep.__call__

    def signalling_call(self: GanStep, real, labels, step: int):
        stats = real_call(self, real, labels, step)
        if step + 1 == at_step:
            os.kill(os.getpid(), signum)
        return stats

    monkeypatch.setattr(GanStep, "__call__", signalling_call)


def nan_losses_from(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make every GAN loss from the ``call``-th one on (1-based, three per joint step) NaN."""
    real_bce = GanStep.bce
    calls = {"n": 0}

    def nan_bce(logits, target):
        calls["n"] += 1
        loss = real_bce(logits, target)
        return loss * float("nan") if calls["n"] >= call else loss

    monkeypatch.setattr(GanStep, "bce", staticmethod(nan_bce))
