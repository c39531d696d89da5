"""The project's Feast feature repository (definitions + feature_store.yaml variants).

It is a plain Feast repository: `feast -c feature_repo plan` / `apply` work on it directly (Feast's CLI
skips `__init__.py`).  The pipeline's `feast_ingest` step applies the same definitions with the store's
data under the run's directory; see `components.common.features`.
"""
