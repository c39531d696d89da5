"""Compile the pipeline to KFP IR YAML for a cluster."""

from __future__ import annotations

from pathlib import Path

from pipelines.profiles import DEFAULT_FILE, FeastAccess, Profile, load_profiles

TARGETS = ("kfp",)
PROFILES = ("onprem", "eks", "cpu")


def cluster_defaults(profile: Profile) -> dict[str, str]:
    """The parameter defaults a cluster differs in from a local run: where the feature store lives, and that a
    model that passes the gate rolls out as a KServe canary (a pod has no laptop to start a server on)."""
    mount = profile.feast.mount_path if profile.feast else FeastAccess.mount_path
    return {"feature_store_dir": mount, "feast_config": "cluster", "deploy_backend": "kserve"}


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
    chosen = profiles[profile]
    compiler.Compiler().compile(
        build_pipeline(chosen), package_path=str(output), pipeline_parameters=cluster_defaults(chosen)
    )
    return output
