"""Engines that run a `components.tune.spec.SearchSpec`; each is one module and the spec knows none of them.

- `optuna_engine`: the trials run one after another (or ``parallelTrialCount`` at a time) in the tune
  step's pod, the study lives in an RDB (SQLite by default), pruning with Optuna's pruners;
  `optuna_mapping` holds what the spec becomes in Optuna (sampler, pruner, distributions).
- `katib`: Katib's names for the spec's algorithm, early stopping and metrics collector; `katib_experiment`
  renders and runs the ``kubeflow.org/v1beta1`` Experiment, `katib_trial` its trial template (a Job, or a
  Kubeflow Trainer TrainJob on a multi-node profile), `katib_engine` runs it for the tune step when the
  profile's ``tuning.engine`` is ``katib``.

A third engine (Kubeflow Trainer's coming optimisation job) is a module beside these that reads the same
spec, runs the training CLI as its trial and reads the same metric lines (`components.common.trial_metrics`).
"""
