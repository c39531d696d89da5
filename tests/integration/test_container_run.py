"""`python -m pipelines run --runner container`: the sample pipeline with every step in its own container (the
images `make images` built, through the runtime `make container-runtime` started), against the same run with
the subprocess runner: every deterministic figure of summary.json is equal."""

import json
from pathlib import Path

import pytest

from components.common import image
from pipelines import container_runner
from pipelines.__main__ import main

# slow: about 7 minutes (two full runs); .ci/run runs the slow tests after the default suite.
pytestmark = [pytest.mark.integration, pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def runtime() -> None:
    """Skip (with the reason) unless the runtime answers and the images the pipeline names exist."""
    try:
        container_runner.check_runtime()
    except ValueError as err:
        pytest.skip(f"no container run here: {err}")


def _run(tmp_path: Path, name: str, *extra: str) -> dict:
    output = tmp_path / name
    options = ["--max-rows", "240", "--epochs", "1", "--min-accuracy", "0"]
    store = f"sqlite:///{tmp_path}/{name}-mlflow.db"  # a registry of the run's own
    assert main(["run", "--output", str(output), *options, "--mlflow-tracking-uri", store, *extra]) == 0
    return json.loads((output / "summary.json").read_text())


def _deterministic(summary: dict) -> dict:
    """What a run on the same data must reproduce exactly, whatever runs the steps."""
    data = {k: v for k, v in summary["data"].items() if k != "source"}  # the input's path differs
    store = summary["feature_store"]
    return {
        "data": data,
        "bias": {k: summary["bias"][k] for k in ("facet", "positive_label", "rows", "facet_rows", "metrics")},
        # All but when it ran and where the tokenizer's files lie (the image's site-packages, or this venv's).
        "features": {k: v for k, v in summary["features"].items() if k not in ("event_timestamp", "tokenizer")},
        "tokenizer": {k: v for k, v in summary["features"]["tokenizer"].items() if k != "name_or_path"},
        "feature_store": {k: store[k] for k in ("feature_view", "rows_written")},
    }


def test_container_run_equals_the_subprocess_run(runtime: None, tmp_path: Path) -> None:
    contained = _run(tmp_path, "container", "--runner", "container")
    local = _run(tmp_path, "subprocess")
    assert contained["status"] == local["status"] == "succeeded"
    assert _deterministic(contained) == _deterministic(local)
    assert contained["data"]["data_sha256"] == local["data"]["data_sha256"] != ""  # the data hash
    # The container run's feature store is the profile's volume (mounted at its path in the containers) ...
    assert contained["parameters"]["feature_store_dir"] == local["parameters"]["feature_store_dir"].replace(
        "subprocess", "container"
    )
    assert (tmp_path / "container" / "feature_store" / "data" / "registry.db").is_file()
    # ... and train and evaluate logged into the run's MLflow server, which is gone after the run.
    assert contained["evaluation"]["rows"] == contained["features"]["rows_per_split"]["test"]
    assert (tmp_path / "container-mlflow.db").is_file()
    log = (tmp_path / "container" / "logs" / "run.log").read_text()
    for reference in image.images().values():  # each step ran in the image the compiled pipeline names
        assert f"Found image '{reference}'" in log
