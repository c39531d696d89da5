"""Deploy a model that passed evaluate's gate: MLflow challenger → local model server or KServe canary."""
