"""Compile the pipeline to KFP IR YAML for a cluster."""

from __future__ import annotations

from pathlib import Path

from pipelines.profiles import DEFAULT_FILE, load_profiles

TARGETS = ("kfp",)
PROFILES = ("onprem", "eks", "cpu")


def compile_pipeline(
    output: str | Path, target: str = "kfp", profile: str = "onprem", profiles_file: str | Path = DEFAULT_FILE
) -> Path:
    """Write the compiled pipeline to ``output`` and return its path.

    ``profile`` (from ``profiles_file``) chooses where GPU steps are placed (node selectors, tolerations,
    accelerators) and how feature-store steps reach Feast (PVC, ConfigMap, Secret).

    Raises:
        ValueError: unknown target or profile.
    """
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    if target not in TARGETS:
        raise ValueError(f"Unknown --target {target!r}; choose one of {', '.join(TARGETS)}.")
    profiles = load_profiles(profiles_file)
    if profile not in profiles:
        raise ValueError(f"Unknown --profile {profile!r}; {str(profiles_file)!r} has {', '.join(sorted(profiles))}.")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profiles[profile]), package_path=str(output))
    return output
