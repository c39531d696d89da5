"""Small helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls of ``fn`` and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def result(name: str, value: float, baseline: float, unit: str, **details: Any) -> dict[str, Any]:
    """The one JSON object a benchmark prints; ``ratio`` is value / baseline (higher is better)."""
    return {
        "name": name,
        "value": round(value, 3),
        "baseline": round(baseline, 3),
        "ratio": round(value / baseline, 2) if baseline else None,
        "unit": unit,
        **details,
    }


def label_scores(labels: Any, reference: Any, truth: Any) -> dict[str, float]:
    """Share of ``labels`` equal to ``reference`` (PyTorch fp32's) and their accuracy against ``truth``."""
    import numpy as np

    labels = np.asarray(labels)
    return {
        "equal_to_pytorch": round(float((labels == np.asarray(reference)).mean()), 4),
        "accuracy": round(float((labels == np.asarray(truth)).mean()), 4),
    }
