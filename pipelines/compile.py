"""Compile the pipeline to KFP IR YAML for a cluster: every step on Kubeflow (target kfp), or tune, train and
deploy on Amazon SageMaker (target sagemaker, for a profile with a ``sagemaker`` section)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipelines.profiles import DEFAULT_FILE, DEFAULT_PROFILE, FeastAccess, Profile, load_profiles
from pipelines.targets import TARGETS
from pipelines.targets import target as choose_target


def cluster_defaults(profile: Profile) -> dict[str, str]:
    """The parameter defaults a cluster differs in from a local run: where the feature store lives, and that a
    model that passes the gate rolls out as a KServe canary (a pod has no laptop to start a server on)."""
    mount = (profile.feast or FeastAccess(pvc="")).mount_path
    defaults = {"feature_store_dir": mount, "feast_config": "cluster", "deploy_backend": "kserve"}
    if profile.serving is not None:  # the InferenceService's ServiceAccount and resources (docs/kserve.md)
        defaults["kserve_service_account"] = profile.serving.service_account
        defaults["kserve_resources"] = profile.serving.resources_json()
    return defaults


def _check_writable(output: Path) -> None:
    """Make ``output``'s directory and try the file, before compiling (a new file is removed again).

    Raises:
        ValueError: naming the file and why it cannot be written.
    """
    existed = output.exists()
    try:
        if output.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("a"):
            pass
    except OSError as err:
        raise ValueError(
            f"Cannot write the compiled pipeline to {str(output)!r} ({err.strerror}); choose another path."
        ) from None
    if not existed:
        output.unlink()


def compile_pipeline(
    output: str | Path,
    target: str = "kfp",
    profile: str = DEFAULT_PROFILE,
    profiles_file: str | Path = DEFAULT_FILE,
) -> Path:
    """Write the compiled pipeline to ``output`` and return its path.

    ``profile`` (from ``profiles_file``) chooses where GPU steps are placed (node selectors, tolerations,
    accelerators) and how feature-store steps reach Feast (PVC, ConfigMap, Secret); for ``target`` sagemaker it
    needs a ``sagemaker`` section (`sagemaker_profile`).

    Raises:
        ValueError: unknown target or profile, a profile without a sagemaker section, or one whose section
            SageMaker would refuse (one line naming the key).
    """
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    if target not in TARGETS:
        raise ValueError(f"Unknown --target {target!r}; choose one of {', '.join(TARGETS)}.")
    profiles = load_profiles(profiles_file)
    if profile not in profiles:
        raise ValueError(f"Unknown --profile {profile!r}; {str(profiles_file)!r} has {', '.join(sorted(profiles))}.")
    output = Path(output)
    _check_writable(output)
    chosen = profiles[profile]
    defaults = cluster_defaults(chosen)
    if target == "sagemaker":
        chosen = sagemaker_profile(chosen, profiles_file)
        defaults.update(sagemaker_defaults(chosen))
    steps = choose_target(target)
    compiler.Compiler().compile(build_pipeline(chosen, steps), package_path=str(output), pipeline_parameters=defaults)
    return output


def local_images(package: str | Path) -> list[str]:
    """The images the compiled pipeline ``package`` names that only this machine has: ``localhost/…``, what
    `components.common.image` names them without ``$BERT_KFP_REGISTRY`` (no cluster can pull them)."""
    import yaml

    found = set()
    for document in yaml.safe_load_all(Path(package).read_text()):
        executors = ((document or {}).get("deploymentSpec") or {}).get("executors") or {}
        for executor in executors.values():
            image = ((executor or {}).get("container") or {}).get("image", "")
            if image.split("/", 1)[0] == "localhost":
                found.add(image)
    return sorted(found)


def local_images_warning(package: str | Path) -> str | None:
    """One line saying that ``package`` names images no cluster can pull, and the fix; None when it does not."""
    from components.common.image import ENV_REGISTRY

    images = local_images(package)
    if not images:
        return None
    return (
        f"warning: {package} names images only this machine has ({images[0]}{', …' if len(images) > 1 else ''}): "
        f"no cluster can pull them. Set {ENV_REGISTRY} to the registry the cluster pulls from, run make images "
        "(it pushes them there) and compile again (docs/containers.md)."
    )


def sagemaker_profile(profile: Profile, profiles_file: str | Path = DEFAULT_FILE) -> Profile:
    """The profile with its ``sagemaker`` images resolved to ECR URIs (an empty one: the image this compile
    pins, `components.common.image`), so the steps' settings name exactly what runs.

    Raises:
        ValueError: No sagemaker section, or an image that is not in ECR (naming the key and the fix).
    """
    settings = profile.sagemaker
    if settings is None:
        raise ValueError(
            f"Profile {profile.name!r} in {str(profiles_file)!r} has no 'sagemaker' section: --target sagemaker needs "
            "one (region, role_arn, s3_prefix, canary, …; see the aws profile in pipelines/profiles.yaml)"
        )
    from components.sagemaker.settings import Images

    try:
        images = Images(train=settings.image("train"), serve=settings.image("serve"))
    except ValueError as err:
        raise ValueError(f"Profile {profile.name!r} in {str(profiles_file)!r}: {err}") from None
    return dataclasses.replace(profile, sagemaker=settings.model_copy(update={"images": images}))


def sagemaker_defaults(profile: Profile) -> dict[str, str]:
    """The pipeline parameter defaults of the sagemaker target: ``deploy_backend`` sagemaker (the deploy step is the
    SageMaker endpoint's, `components.sagemaker.endpoint_step.BACKEND`; the skip-deployment report records it), and
    the profile's ``sagemaker.tuning.spec`` as ``tuning_spec``, as one line of JSON (the pods do not have a file of
    the compiling machine, and kfp's compiled header breaks on a default of several lines).  The spec was checked
    when the profile was read."""
    import json

    import yaml

    assert profile.sagemaker is not None
    defaults = {"deploy_backend": "sagemaker"}
    source = profile.sagemaker.tuning.spec
    if not source.strip():
        return defaults
    path = Path(source).expanduser()
    if "\n" not in source and not source.lstrip().startswith("{") and path.is_file():
        source = path.read_text()
    return {**defaults, "tuning_spec": json.dumps(yaml.safe_load(source), separators=(",", ":"))}
