"""A `SearchSpec` in Optuna's terms — sampler, pruner, distributions — for the ``optuna`` engine.

The engine (`components.tune.engines.optuna_engine`) runs the study; this module says what it is made of.
Algorithm → Optuna (`SAMPLERS`, `sampler`, `pruner`):

=======================  ===============================================================
``random``               ``RandomSampler``
``grid``                 ``GridSampler`` over every parameter's values (a double needs a step)
``tpe``                  ``TPESampler(multivariate=False)`` (independent TPE, as Katib's hyperopt; Optuna 5's
                         default is multivariate for one objective)
``multivariate-tpe``     ``TPESampler(multivariate=True)``
``bayesianoptimization`` ``GPSampler`` (Gaussian process, log-EI)
``hyperband``            ``RandomSampler`` + ``HyperbandPruner`` (Hyperband: random configurations,
                         successive halving over evaluations; ``eta`` → ``reduction_factor``)
``cmaes``                ``CmaEsSampler`` (needs the ``cmaes`` package)
``sobol``                ``QMCSampler(qmc_type="sobol")``
``medianstop``           ``MedianPruner(n_startup_trials=min_trials_required, n_warmup_steps=start_step)``
=======================  ===============================================================

A trial's step is its evaluation count (`components.common.trial_metrics`), so ``start_step`` counts
evaluations here as it does on Katib.  The parameters become Optuna distributions (`distributions`) that a
trial draws from (`suggest`).  `check` says whether this process can build the spec's sampler.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from components.tune import spec as S

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna


#: Algorithm → (Optuna sampler class name, keyword arguments besides the seed): what `sampler` builds.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("RandomSampler", {}),
    "grid": ("GridSampler", {}),
    "tpe": ("TPESampler", {"multivariate": False}),  # Optuna 5's default (None) is multivariate
    "multivariate-tpe": ("TPESampler", {"multivariate": True}),
    "bayesianoptimization": ("GPSampler", {}),
    "hyperband": ("RandomSampler", {}),
    "cmaes": ("CmaEsSampler", {}),
    "sobol": ("QMCSampler", {"qmc_type": "sobol"}),
}
#: Algorithm settings → the sampler's (or Hyperband pruner's) keyword.
_SETTING_KEYWORDS = {"n_startup_trials": "n_startup_trials", "n_ei_candidates": "n_ei_candidates", "sigma": "sigma0"}
#: Samplers whose draws restart with the seed: a resumed study offsets it (grid and Sobol keep their place).
OFFSET_SEED = frozenset({"random", "tpe", "multivariate-tpe", "bayesianoptimization", "hyperband", "cmaes"})


def check(spec: S.SearchSpec) -> None:
    """What the ``optuna`` engine needs beyond the spec's own checks.

    Raises:
        SpecError: ``cmaes`` without the ``cmaes`` package.
    """
    import importlib.util

    if spec.algorithm == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise S.SpecError(
            "tuning spec: algorithm.algorithmName: cmaes needs the `cmaes` package, which is not installed "
            "(add it to the project's dependencies) — or choose another algorithm"
        )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Without Optuna's experimental-feature warnings (heartbeats, the retry callback, QMC and GP samplers)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def sampler(spec: S.SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of the spec's algorithm (see `SAMPLERS`), seeded."""
    import optuna

    name, kwargs = SAMPLERS[spec.algorithm]
    kwargs = dict(kwargs)
    for setting, value in spec.algorithm_settings.items():
        if setting in _SETTING_KEYWORDS:
            kwargs[_SETTING_KEYWORDS[setting]] = float(value) if setting == "sigma" else int(float(value))
    cls = getattr(optuna.samplers, name)
    with quiet():
        if spec.algorithm == "grid":
            return cls(spec.grid_space(), seed=seed)
        return cls(seed=seed, **kwargs)


def pruner(spec: S.SearchSpec) -> optuna.pruners.BasePruner:
    """``hyperband`` → `HyperbandPruner`; ``medianstop`` → `MedianPruner`; otherwise none."""
    import optuna

    if spec.algorithm == "hyperband":
        settings = spec.algorithm_settings
        max_resource: int | str = int(float(settings["r_l"])) if "r_l" in settings else "auto"
        eta = int(float(settings.get("eta", 3)))
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource, reduction_factor=eta)
    if spec.early_stopping is not None:
        early = spec.early_stopping
        return optuna.pruners.MedianPruner(n_startup_trials=early.min_trials_required, n_warmup_steps=early.start_step)
    return optuna.pruners.NopPruner()


def distributions(spec: S.SearchSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each parameter's Optuna distribution (a grid search: categorical over the grid's values)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in spec.parameters:
        if spec.algorithm == "grid":
            out[p.name] = CategoricalDistribution(p.grid() or [])
        elif p.choices:
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            out[p.name] = IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log, step=int(p.step or 1))
        else:
            out[p.name] = FloatDistribution(float(p.low or 0), float(p.high or 0), log=p.log, step=p.step)
    return out


def suggest(trial: optuna.Trial, spec: S.SearchSpec, dists: dict[str, Any]) -> dict[str, Any]:
    """The trial's parameters, each drawn from its distribution in ``dists`` (`distributions`)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    params: dict[str, Any] = {}
    for p in spec.parameters:
        d = dists[p.name]
        if isinstance(d, CategoricalDistribution):
            params[p.name] = trial.suggest_categorical(p.name, d.choices)
        elif isinstance(d, IntDistribution):
            params[p.name] = trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
        else:
            params[p.name] = trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)
    return params
