"""What a tuning produced, engine-neutral: every trial's record and the study's outcome."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: Trial states, in Katib's words where they differ from Optuna's: COMPLETE = Succeeded, PRUNED = EarlyStopped.
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class TrialRecord:
    """One trial: its parameters, state, objective value (the best of its evaluations; a pruned trial: its
    last) and the objective at each evaluation."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    seconds: float | None = None
    #: Names the trial's directory and its MLflow child run (``trial-0003``); a retried trial keeps its original's.
    key: str = ""
    retry_of: int | None = None
    warm_start_from: str = ""
    error: str = ""

    def row(self) -> dict[str, Any]:
        """A flat row of the trials table (``param.<name>`` columns)."""
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value if self.value is not None and math.isfinite(self.value) else None,
            "evaluations": len(self.intermediate),
            "last_evaluation": max(self.intermediate) if self.intermediate else None,
            "seconds": self.seconds,
            "key": self.key,
            "retry_of": self.retry_of,
            "warm_start_from": self.warm_start_from,
            "error": self.error,
            **{f"param.{k}": v for k, v in self.params.items()},
        }


@dataclass
class StudyResult:
    """The outcome of a tuning: best parameters and value, every trial, and how the study went."""

    engine: str
    study_name: str
    storage: str
    algorithm: str
    metric: str
    direction: str
    trials: list[TrialRecord]
    best_params: dict[str, Any]
    best_value: float | None
    best_trial: int | None
    stop_reason: str
    resumed_trials: int = 0
    retried_trials: list[int] = field(default_factory=list)
    warm_start: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Trials by state; interrupted trials that were retried are counted as ``retried``, not failed."""
        out = {state.lower(): 0 for state in STATES[:3]}
        for trial in self.trials:
            if trial.state == "FAIL" and trial.number in self.retried_trials:
                continue
            key = trial.state.lower()
            out[key] = out.get(key, 0) + 1
        out["retried"] = len(self.retried_trials)
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trial_counts"] = self.counts()
        return out
