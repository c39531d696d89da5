"""The training CLI's metric lines: what a tuning trial reports, for the Optuna engine and Katib alike.

At every evaluation on the validation split the training prints one line on **stdout** (its progress lines
go to stderr)::

    2026-11-30T10:46:18.102345Z trial-metrics evaluation=3 step=60 validation-accuracy=0.631250 \
validation-f1_macro=0.598812 validation-loss=0.912345

- It starts with an RFC 3339 time: Katib's StdOut metrics collector takes a line's first word as the
  observation's timestamp when it parses as one (otherwise it warns and uses the zero time).
- ``evaluation`` counts the evaluations of the run so far (1, 2, …; a resumed run continues the count):
  the *step* a tuner reports intermediate values at, so that ``start_step`` of Katib's ``medianstop`` and
  ``n_warmup_steps`` of Optuna's pruners mean the same thing (evaluations, not optimizer steps).
  ``step`` is the optimizer step, for people.
- `KATIB_FILTER` is the StdOut collector's ``metricsFormat``: exactly two groups (name, value), as Katib
  requires; it matches only the metric names in `METRIC_NAMES`, not ``evaluation=`` or ``step=``.

`format_line` writes the line, `parse_line` reads it back (None for any other line).  This module is the
one place both sides agree on; it imports nothing from the steps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

#: The word after the timestamp that marks a metric line.
MARKER = "trial-metrics"
#: What the training's validation reports are called in a metric line (and in a tuning objective).
PREFIX = "validation-"
#: The validation metrics the training emits (`components.train.callbacks.scores` and the loss), by line name.
METRIC_NAMES: tuple[str, ...] = ("validation-accuracy", "validation-f1_macro", "validation-loss")
#: Whether a larger value is better, by line name.
GREATER_IS_BETTER: dict[str, bool] = {
    "validation-accuracy": True,
    "validation-f1_macro": True,
    "validation-loss": False,
}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
#: Katib's StdOut collector filter (RE2 syntax, which Python's `re` shares here): groups name and value.
KATIB_FILTER = r"(" + PREFIX + r"(?:accuracy|f1_macro|loss))=(" + _NUMBER + r")"

_FILTER = re.compile(KATIB_FILTER)
_COUNTERS = re.compile(r"\b(evaluation|step)=(\d+)\b")


@dataclass(frozen=True)
class MetricLine:
    """One parsed metric line: the evaluation count, the optimizer step and the metrics by line name."""

    evaluation: int
    step: int
    metrics: dict[str, float]


def metric_name(name: str) -> str:
    """The line name of a training metric: ``accuracy`` → ``validation-accuracy``."""
    return PREFIX + name


def format_line(evaluation: int, step: int, metrics: Mapping[str, float], now: datetime | None = None) -> str:
    """The metric line of one evaluation (``metrics``: the training's names, ``accuracy``, ``f1_macro``,
    ``loss``; others are left out)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    values = " ".join(
        f"{metric_name(k)}={float(v):.6f}" for k, v in metrics.items() if metric_name(k) in GREATER_IS_BETTER
    )
    return f"{stamp} {MARKER} evaluation={evaluation} step={step} {values}"


def parse_line(line: str) -> MetricLine | None:
    """The metrics of a metric line; None for any other line (progress, warnings, a line cut short)."""
    words = line.split(" ", 2)
    if len(words) < 3 or words[1] != MARKER:
        return None
    counters = dict(_COUNTERS.findall(words[2]))
    metrics = {name: float(value) for name, value in _FILTER.findall(words[2])}
    if "evaluation" not in counters or not metrics:
        return None
    return MetricLine(int(counters["evaluation"]), int(counters.get("step", 0)), metrics)
