"""Throughput of a training run and its progress line: samples/s, step time, padding share, ETA.

Only the time spent in optimizer steps counts (not evaluation or checkpoints); samples/s is over all
processes of a DDP run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger("components.train")


class Throughput:
    """Samples, tokens and training seconds of this process since the run (or its resumption) started."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.steps = 0
        self.samples = 0
        self.tokens = 0
        self.padded_tokens = 0
        self.seconds = 0.0
        self._recent: list[tuple[int, float]] = []  # (step, training seconds so far) for the ETA

    def add_batch(self, rows: int, tokens: Any, padded_tokens: int) -> None:
        """Count a batch; ``tokens`` (the non-padding ones) may be a tensor on the device, read at the end."""
        self.samples += rows
        self.tokens += tokens
        self.padded_tokens += padded_tokens

    def samples_per_second(self) -> float:
        return self.samples * self.world_size / self.seconds if self.seconds else 0.0

    def mean_step(self) -> float:
        return self.seconds / max(1, self.steps)

    def padding_share(self) -> float:
        """Share of the token positions trained on that were padding."""
        return 1 - float(self.tokens) / self.padded_tokens if self.padded_tokens else 0.0

    def log_line(self, step: int, total_steps: int, metrics: dict[str, Any]) -> None:
        """Log the progress line of ``step`` (``metrics``: epoch, loss, learning_rate, grad_norm,
        samples_per_second) with the ETA from the recent steps' pace."""
        self._recent = [*self._recent[-4:], (step, self.seconds)]
        first_step, first_seconds = self._recent[0]
        mean_step = self.mean_step()
        recent_step = (self.seconds - first_seconds) / (step - first_step) if step > first_step else mean_step
        log.info(
            "step %d/%d | epoch %.2f | loss %.4f | lr %.3g | grad %.3g | %.1f samples/s | %.3f s/step | ETA %s",
            step,
            total_steps,
            metrics["epoch"],
            metrics["loss"],
            metrics["learning_rate"],
            metrics["grad_norm"],
            metrics["samples_per_second"],
            mean_step,
            duration((total_steps - step) * recent_step),
        )


def duration(seconds: float) -> str:
    """``1h02m`` or ``3m07s``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )
