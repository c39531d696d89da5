"""Pre-training bias check (SageMaker Clarify metrics)."""
