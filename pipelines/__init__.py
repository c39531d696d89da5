"""The pipeline definition and its entry points."""
