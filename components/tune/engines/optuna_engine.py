"""The ``optuna`` engine: a `SearchSpec` run as an Optuna study in this process, the study kept in an RDB.

The spec's algorithm becomes an Optuna sampler and pruner, its parameters Optuna distributions, as
`components.tune.engines.optuna_mapping` describes; this module runs the study.  A trial's value is the best
of its evaluations (Katib's default metric strategy for the objective: ``max`` when maximising, ``min`` when
minimising — the training keeps that checkpoint as its model, ``metric_for_best_model``).

The study lives in an RDB (`RDBStorage`: SQLite file, PostgreSQL, MySQL) and is loaded when it exists, so:

- **resume**: a re-run with the same storage and study name runs only what the budget has left (finished
  trials count: COMPLETE, PRUNED and FAIL); no completed trial runs again.  A trial left RUNNING by a
  tuner that died is failed and re-queued with its parameters (`RetryHeartbeatStaleTrialCallback`, its
  evaluations kept): at once when its tuner was a process of this host that no longer lives, otherwise once
  its heartbeat is older than the grace period (another pod).  The re-queued trial trains in the same
  directory, so the training resumes from its last checkpoint.  Samplers that draw at random are seeded
  with the seed plus the number of trials already in the study, so a resumed run does not repeat the
  first run's draws;
- **warm start**: a new study in a storage that holds earlier studies of the same objective starts with
  their best parameters (enqueued, at most ``warm_start_trials``) when those lie in the new search space.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from components.common import trial_metrics
from components.tune import results as R
from components.tune import spec as S
from components.tune.engines import optuna_mapping as M
from components.tune.trials import TrialRun

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna

log = logging.getLogger("components.tune")

#: (trial key, parameters, on_metrics) → how the trial's process ended.  The key (``trial-0003``) names
#: the trial's directory and MLflow child run; a retried trial keeps its original's.
TrialRunner = Callable[[str, dict[str, Any], Callable[[trial_metrics.MetricLine], bool]], TrialRun]


class TrialFailed(Exception):
    """A trial's training failed (non-zero exit, or no metric line)."""


@dataclass(frozen=True)
class OptunaSettings:
    """Where the study lives and how it starts."""

    storage: str
    study_name: str
    seed: int = 42
    warm_start: bool = True
    warm_start_trials: int = 3
    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 2


def _search_signature(spec: S.SearchSpec) -> dict[str, Any]:
    """What must not change between runs of one study (the budget and parallelism may)."""
    whole = spec.to_dict()
    return {k: whole[k] for k in ("objective", "algorithm", "parameters")}


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(owner: Any) -> bool:
    """Whether the tuner that ran a trial may still live (unknown: True)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError, OverflowError):
        return True
    # This process has run no trial yet: a trial "of" its pid was a former process's (a restarted container).
    return int(owner["pid"]) != os.getpid()


def _recover(
    study: optuna.Study, storage: optuna.storages.BaseStorage, retry: Callable[[optuna.Study, Any], None]
) -> list[int]:
    """Fail and re-queue the trials left RUNNING by a tuner of this host that no longer lives; stale ones of
    other hosts too (heartbeat).  ``storage``: the study's, as `run` made it.  Returns their numbers."""
    import copy

    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(trial.user_attrs.get("owner")):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                recovered.append(trial.number)
                retry(study, copy.deepcopy(storage.get_trial(trial_id)))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    return sorted(recovered + sorted(after - before))


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the failed trials that were re-queued (interrupted, not failed by themselves)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    out: set[int] = set()
    for trial in trials:
        out.update(RetryHeartbeatStaleTrialCallback.retry_history(trial))
    return out


def _finished(trials: list[optuna.trial.FrozenTrial]) -> tuple[int, int]:
    """(finished trials that count against the budget, failed ones that count against the failure limit)."""
    from optuna.trial import TrialState

    retried = _retried(trials)
    failed = sum(1 for t in trials if t.state == TrialState.FAIL and t.number not in retried)
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)) + failed
    return done, failed


def _warm_start(
    study: optuna.Study, storage: optuna.storages.BaseStorage, spec: S.SearchSpec, settings: OptunaSettings
) -> list[str]:
    """Enqueue the best parameters of earlier studies (in ``storage``, the study's) of the same objective that
    fit this search space."""
    import optuna

    if not settings.warm_start or spec.algorithm == "grid" or study.trials:
        return []
    signature = _search_signature(spec)
    candidates = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        best = summary.best_trial
        theirs = summary.user_attrs.get("search") or {}
        if summary.study_name == study.study_name or best is None:
            continue
        if theirs.get("objective") != signature["objective"]:
            continue
        params = best.params
        if set(params) != {p.name for p in spec.parameters}:
            continue
        if all(p.contains(params[p.name]) for p in spec.parameters):
            candidates.append((best.value, f"{summary.study_name}#{best.number}", params))
    candidates.sort(key=lambda c: c[0], reverse=spec.objective.maximize)
    chosen, seen = [], []
    for _, origin, params in candidates:
        if params in seen or len(chosen) >= settings.warm_start_trials:
            continue
        seen.append(params)
        study.enqueue_trial(params, user_attrs={"warm_start_from": origin})
        chosen.append(origin)
    return chosen


def _open_storage(settings: OptunaSettings) -> optuna.storages.RDBStorage:
    """The study's RDB storage; `run` keeps this reference (Optuna's `Study` does not expose its storage)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    if settings.storage.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    with M.quiet():
        return optuna.storages.RDBStorage(
            settings.storage,
            engine_kwargs=kwargs,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                max_retry=settings.max_retry, inherit_intermediate_values=True
            ),
        )


def redact(url: str) -> str:
    """The storage URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _best(values: list[float], maximize: bool) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


def run(spec: S.SearchSpec, run_trial: TrialRunner, settings: OptunaSettings) -> R.StudyResult:
    """Run (or resume) the study until the spec's budget is spent, its goal reached, or too many trials failed.

    Raises:
        ValueError: The storage holds a study of this name with another search (objective, algorithm,
            parameters) or direction.
        RuntimeError: More than ``maxFailedTrialCount`` trials failed (the last one's log tail in the message).
    """
    import time

    import optuna
    from optuna.trial import TrialState

    M.check(spec)
    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _open_storage(settings)
    direction = spec.objective.direction
    with M.quiet():
        existed = settings.study_name in optuna.get_all_study_names(storage)
        study = optuna.create_study(
            storage=storage, study_name=settings.study_name, direction=direction, load_if_exists=True
        )
        signature = _search_signature(spec)
        if existed:
            theirs = study.user_attrs.get("search")
            if (theirs is not None and theirs != signature) or study.direction.name.lower() != direction:
                raise ValueError(
                    f"Study {settings.study_name!r} in {redact(settings.storage)} was made for another search "
                    "(objective, algorithm or parameters differ); use another study name or storage to start afresh."
                )
        else:
            study.set_user_attr("search", signature)
        retry = storage.get_heartbeat_stale_trial_callback()
        assert retry is not None
        recovered = _recover(study, storage, retry)
        for number in recovered:
            log.warning("Trial %d was left running by an interrupted tuning: failed, and queued again.", number)
        warm = _warm_start(study, storage, spec, settings)
        existing = len(study.get_trials(deepcopy=False))
        seed = spec.seed(settings.seed) + (existing if spec.algorithm in M.OFFSET_SEED else 0)
        study.sampler = M.sampler(spec, seed)
        study.pruner = M.pruner(spec)
        done, _ = _finished(study.get_trials(deepcopy=False))
        left = spec.max_trial_count - done
        if existed:
            log.info("Study %s resumed: %d of %d trials done.", settings.study_name, done, spec.max_trial_count)
        stop = {"reason": "budget" if left > 0 else "budget (already spent)"}
        dists = M.distributions(spec)
        maximize = spec.objective.maximize

        def objective(trial: optuna.Trial) -> float:
            params = M.suggest(trial, spec, dists)
            key = trial.user_attrs.get("trial_key") or f"trial-{trial.number:04d}"
            trial.set_user_attr("trial_key", key)
            trial.set_user_attr("owner", _owner())
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            values = list(frozen.intermediate_values.values())  # inherited from an interrupted attempt

            def on_metrics(line: trial_metrics.MetricLine) -> bool:
                value = line.metrics.get(spec.objective.metric)
                if value is None:
                    return False
                values.append(value)
                if line.evaluation not in frozen.intermediate_values:
                    trial.report(value, line.evaluation)
                return trial.should_prune()

            outcome = run_trial(key, params, on_metrics)
            trial.set_user_attr("seconds", round(outcome.seconds, 2))
            if outcome.pruned:
                raise optuna.TrialPruned(f"pruned at evaluation {outcome.evaluations[-1].evaluation}")
            best = _best(values, maximize)
            if outcome.returncode != 0 or best is None:
                why = f"exit code {outcome.returncode}" if outcome.returncode else "no objective value reported"
                trial.set_user_attr("error", f"{why}: {outcome.error()}"[-4000:])
                raise TrialFailed(f"trial {trial.number} ({key}) failed: {why}; log: {outcome.log_path}")
            return best

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if trial.state == TrialState.COMPLETE and spec.objective.reached(trial.value):
                stop["reason"] = "goal"
                study.stop()
            _, failed = _finished(study.get_trials(deepcopy=False))
            if failed > spec.max_failed_trial_count:
                stop["reason"] = "failed"
                study.stop()

        if left > 0:
            study.optimize(
                objective,
                n_trials=left,
                n_jobs=max(1, min(spec.parallel_trial_count, left)),
                catch=(TrialFailed,),
                callbacks=[after_trial],
                gc_after_trial=False,
            )
        trials = study.get_trials(deepcopy=False)
        result = _result(study, spec, settings, trials, stop["reason"], recovered, warm, time.monotonic() - started)
    if stop["reason"] == "failed":
        last = next((t for t in reversed(result.trials) if t.state == "FAIL" and t.error), None)
        raise RuntimeError(
            f"{result.counts()['fail']} trials failed, more than maxFailedTrialCount "
            f"({spec.max_failed_trial_count}); the last: {last.error if last else '?'}"
        )
    return result


def _result(
    study: optuna.Study,
    spec: S.SearchSpec,
    settings: OptunaSettings,
    trials: list[optuna.trial.FrozenTrial],
    reason: str,
    recovered: list[int],
    warm: list[str],
    seconds: float,
) -> R.StudyResult:
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    records = []
    for t in trials:
        origin = RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        records.append(
            R.TrialRecord(
                number=t.number,
                state=t.state.name,
                params=dict(t.params),
                value=t.value if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
                intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
                seconds=t.user_attrs.get("seconds"),
                key=str(t.user_attrs.get("trial_key", "")),
                retry_of=origin,
                warm_start_from=str(t.user_attrs.get("warm_start_from", "")),
                error=str(t.user_attrs.get("error", "")),
            )
        )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        best = max(complete, key=lambda t: t.value) if spec.objective.maximize else min(complete, key=lambda t: t.value)
    return R.StudyResult(
        engine="optuna",
        study_name=settings.study_name,
        storage=redact(settings.storage),
        algorithm=spec.algorithm,
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        trials=records,
        best_params=dict(best.params) if best else {},
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        stop_reason=reason if best else f"{reason}; no trial completed",
        resumed_trials=len(recovered),
        retried_trials=sorted(_retried(trials)),
        warm_start=warm,
        seconds=round(seconds, 2),
    )
