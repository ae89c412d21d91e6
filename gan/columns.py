"""The names a run records, in one place: the step's statistics, the evaluator's metrics (how each ranks,
and where it is shown), and the digit classes.

Adding a metric is one entry in ``METRIC_REGISTRY`` here (plus its computation in gan/metrics.py): the
epoch records, W&B's run summary, the model card and report.py's columns follow from it. This module
imports nothing heavy, so report.py reads it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = 10  # MNIST's classes; the classifier has one more, for "not a digit"
STATS = ("d_loss", "g_loss", "d_real", "d_fake")  # what a training step returns, in this order


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool  # report.py ranks jobs by it this way round
    evaluated: bool = True  # computed by the evaluator (False: derived by report.py from the digit shares)
    summary: bool = True  # in W&B's run summary as final/NAME


# In report.py's column order.
METRIC_REGISTRY = (
    Metric("fid", higher_is_better=False),
    Metric("kid", higher_is_better=False),
    Metric("precision", higher_is_better=True),
    Metric("recall", higher_is_better=True),
    Metric("classifier_score", higher_is_better=True, summary=False),
    Metric("class_kl", higher_is_better=False, summary=False),
    Metric("classes_over_5pct", higher_is_better=True),
    Metric("digit_min", higher_is_better=False, evaluated=False, summary=False),
    Metric("digit_max", higher_is_better=False, evaluated=False, summary=False),
    Metric("label_accuracy", higher_is_better=True),  # conditional generators only, as the next two
    Metric("label_accuracy_min", higher_is_better=False, evaluated=False, summary=False),
    Metric("intra_fid", higher_is_better=False),
)
METRICS = tuple(m.name for m in METRIC_REGISTRY if m.evaluated)  # what the evaluator returns (with each digit's share)
SUMMARY_METRICS = tuple(m.name for m in METRIC_REGISTRY if m.summary)
# The step's statistics rank too: D's output on real images higher first, the rest (losses, D(G(z))) lower first.
HIGHER_IS_BETTER = frozenset({m.name for m in METRIC_REGISTRY if m.higher_is_better} | {"d_real"})
REPORT_COLUMNS = ("epoch", *STATS, *(m.name for m in METRIC_REGISTRY))
