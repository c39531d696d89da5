"""The model to serve by default: the MLflow registry's champion (the version deploy promoted), downloaded."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from components.common import tracking


def champion_dir(uri: str, registered_model: str, destination: Path) -> tuple[Path, str]:
    """Download the files of ``registered_model``'s version behind alias ``champion`` into ``destination``;
    (the classifier's folder as train saved it, a one-line description of the version).  A version evaluate
    logged as an MLflow model is turned back into that folder (`tracking.download_classifier`).

    Raises:
        ValueError: The store cannot be used, or it has no champion (with what to do instead).
    """
    resolved = tracking.resolve_tracking_uri(uri)
    no_champion = (
        f"No champion to serve: the MLflow registry at {resolved} has no version of {registered_model!r} with alias "
        f"{tracking.CHAMPION!r} (a pipeline run's deploy step sets it). Serve a model directory instead: "
        "--model-dir DIR (make serve MODEL_DIR=DIR), e.g. the `model` directory a run's train step wrote."
    )
    if resolved.startswith("sqlite:///") and not Path(unquote(resolved[len("sqlite:///") :])).is_file():
        raise ValueError(no_champion)  # (and no empty database is created by looking)
    tracking.check_tracking_uri(resolved)
    version = tracking.get_alias(resolved, registered_model, tracking.CHAMPION)
    if version is None:
        raise ValueError(no_champion)
    try:
        path = tracking.download_classifier(resolved, version.source, destination)
    except Exception as error:  # mlflow raises MlflowException, OSError...
        reason = " ".join(str(error).split())[:300].rstrip(".")
        raise ValueError(
            f"Cannot download the champion ({registered_model} version {version.version}, {version.source}): {reason}."
        ) from error
    return path, f"{registered_model} version {version.version} (alias {tracking.CHAMPION}, {version.source})"
