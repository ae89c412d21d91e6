"""Mode collapse that does not heal, read off the evaluations of G-EMA during training.

A collapsed generator draws a handful of digit classes and none of the test set's variety: its recall is
near 0 and few digits reach 5% of its samples. A healthy run can look like that in its first epochs too
(G starts from one grey blob and D wins the first rounds), so one bad evaluation is not enough: the run
is called collapsed when the signature holds at two evaluations in a row, the first of them no earlier
than ``EARLIEST_EPOCH``. docs/results.md has the curves the thresholds come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RECALL_BELOW = 0.01  # G-EMA's recall on the evaluation's samples
CLASSES_AT_MOST = 5  # digit classes holding at least 5% of the samples
EARLIEST_EPOCH = 5  # healthy runs can show the signature before this epoch


@dataclass
class Collapse:
    epoch: int  # the evaluation that confirmed it
    seen: str  # what the evaluations showed, in words

    def describe(self) -> str:
        return f"collapsed at epoch {self.epoch}: {self.seen}"


def has_signature(record: dict[str, Any]) -> bool:
    """Whether one evaluated epoch's record looks collapsed."""
    return record["recall"] < RECALL_BELOW and record["classes_over_5pct"] <= CLASSES_AT_MOST


def first_collapse(history: list[dict[str, Any]]) -> Collapse | None:
    """The first collapse over the run's history (after a resume too, where no hook remembers it)."""
    for end in range(1, len(history) + 1):
        if "collapsed_at" in history[end - 1]:
            return find_collapse(history[:end])
    return None


def find_collapse(history: list[dict[str, Any]]) -> Collapse | None:
    """The collapse the two latest evaluations of ``history`` show, or None."""
    evaluated = [r for r in history if "recall" in r and "classes_over_5pct" in r]
    if len(evaluated) < 2:
        return None
    earlier, latest = evaluated[-2:]
    if earlier["epoch"] < EARLIEST_EPOCH or not (has_signature(earlier) and has_signature(latest)):
        return None
    seen = "; ".join(f"epoch {int(r['epoch'])}: {int(r['classes_over_5pct'])} digit classes at >= 5%, recall {r['recall']:.3f}, "
                     f"FID {r['fid']:.0f}, D(G(z)) {r['d_fake']:.3f}" for r in (earlier, latest))
    return Collapse(int(latest["epoch"]), f"G-EMA draws few digits and none of their variety ({seen})")
