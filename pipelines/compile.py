"""Compile the pipeline to KFP IR YAML for a cluster."""

from __future__ import annotations

from pathlib import Path

TARGETS = ("kfp",)
PROFILES = ("onprem", "eks", "cpu")


def compile_pipeline(output: str | Path, target: str = "kfp", profile: str = "onprem") -> Path:
    """Write the compiled pipeline to ``output`` and return its path.

    ``profile`` chooses where GPU steps are placed (node selectors, tolerations, accelerators); the steps
    compiled so far (prepare, bias check) run on CPU in every profile.

    Raises:
        ValueError: unknown target or profile.
    """
    from kfp import compiler

    from pipelines.pipeline import review_sentiment_pipeline

    if target not in TARGETS:
        raise ValueError(f"Unknown --target {target!r}; choose one of {', '.join(TARGETS)}.")
    if profile not in PROFILES:
        raise ValueError(f"Unknown --profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(review_sentiment_pipeline, package_path=str(output), pipeline_parameters=None)
    return output
