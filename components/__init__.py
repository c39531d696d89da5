"""Pipeline steps: one package per step, each with a pure ``core`` and a thin KFP ``component``."""
