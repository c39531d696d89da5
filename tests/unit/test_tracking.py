"""MLflow helpers: URI precedence, fast and clear reachability errors, one run per pipeline run, the registry.

The stores are real (embedded SQLite in a temporary directory); the HTTP checks talk to a real local HTTP
server and to a closed port.
"""

from __future__ import annotations

import http.server
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.common import tracking


@pytest.fixture(autouse=True)
def _outside_a_kfp_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tracking.KFP_POD_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        ("http://mlflow:5000", "http://other:5000", "http://mlflow:5000"),
        ("", "http://other:5000", "http://other:5000"),
        ("", None, "sqlite:///{xdg}/bert-kfp/mlflow.db"),
    ],
)
def test_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, explicit, env, expected) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    if env is None:
        monkeypatch.delenv(tracking.ENV_TRACKING_URI, raising=False)
    else:
        monkeypatch.setenv(tracking.ENV_TRACKING_URI, env)
    assert tracking.resolve_tracking_uri(explicit) == expected.format(xdg=tmp_path)


@pytest.mark.parametrize("pod_variable", ["KFP_POD_NAME", "KFP_POD_UID"])
def test_in_a_kfp_pod_the_embedded_store_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pod_variable: str
) -> None:
    """A KFP executor pod's $HOME dies with it: without a URI a step stops instead of logging into it."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv(tracking.ENV_TRACKING_URI, raising=False)
    monkeypatch.setenv(pod_variable, "bert-review-sentiment-x7k2p-system-container-impl-123")
    with pytest.raises(ValueError) as caught:
        tracking.resolve_tracking_uri("")
    message = str(caught.value)
    assert "bert-review-sentiment-x7k2p" in message and "private to this step" in message
    for advice in ("MLFLOW_TRACKING_URI", "--mlflow-tracking-uri", "profile's `mlflow` key", "mlflow_tracking_uri"):
        assert advice in message
    assert not (tmp_path / "bert-kfp").exists()  # nothing created
    assert tracking.resolve_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv(tracking.ENV_TRACKING_URI, "http://from-profile:5000")
    assert tracking.resolve_tracking_uri("") == "http://from-profile:5000"
    shared = f"sqlite:///{tmp_path / 'pvc' / 'mlflow.db'}"  # explicitly chosen: a store on a shared volume
    assert tracking.resolve_tracking_uri(shared) == shared


def test_other_pods_keep_the_embedded_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Kubernetes sets KUBERNETES_SERVICE_HOST in every pod, e.g. a notebook server running kfp.local."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv(tracking.ENV_TRACKING_URI, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KFP_POD_NAME", " ")
    assert tracking.resolve_tracking_uri("") == f"sqlite:///{tmp_path}/bert-kfp/mlflow.db"


def test_closed_port_is_an_error_with_advice() -> None:
    with pytest.raises(ValueError, match=r"unreachable .*MLFLOW_TRACKING_URI.*embedded SQLite"):
        tracking.check_tracking_uri("http://127.0.0.1:9", timeout=2)


def test_in_a_kfp_pod_the_advice_does_not_suggest_the_embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_POD_NAME", "pod-1")
    with pytest.raises(ValueError, match=r"unreachable .*MLFLOW_TRACKING_URI") as caught:
        tracking.check_tracking_uri("http://127.0.0.1:9", timeout=2)
    assert "embedded" not in str(caught.value)


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict]]:
    """A real local HTTP server whose /health status the test sets."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"])
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


@pytest.mark.parametrize(
    ("status", "message"), [(200, None), (401, "MLFLOW_TRACKING_TOKEN"), (503, "answers HTTP 503")]
)
def test_http_health(http_server, status: int, message: str | None) -> None:
    url, state = http_server
    state["status"] = status
    if message is None:
        tracking.check_tracking_uri(url)
    else:
        with pytest.raises(ValueError, match=message):
            tracking.check_tracking_uri(url)


def test_sqlite_checks(tmp_path: Path) -> None:
    tracking.check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "mlflow.db").exists()  # nothing written
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="not a readable SQLite database"):
        tracking.check_tracking_uri(f"sqlite:///{junk}")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(ValueError, match="Cannot create the directory"):
        tracking.check_tracking_uri(f"sqlite:///{blocked / 'sub' / 'mlflow.db'}")
    with sqlite3.connect(tmp_path / "ok.db") as db:
        db.execute("create table t (x)")
    tracking.check_tracking_uri(f"sqlite:///{tmp_path / 'ok.db'}")


def test_steps_of_one_pipeline_run_share_one_mlflow_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = tracking.PipelineRun(uri, "exp", "pipe-1", tracking.lineage_tags("pipe-1", "abc", "fv"))
    train.log_params({"learning_rate": 5e-5}, prefix="train.")
    train.log_metrics({"loss": 0.9, "nan": float("nan")}, step=10, prefix="train/")
    train.end()
    evaluate = tracking.PipelineRun(uri, "exp", "pipe-1")
    evaluate.log_metrics({"accuracy": 0.7}, prefix="eval/")
    trial = tracking.PipelineRun(uri, "exp", "pipe-1", child="trial-0")
    trial.log_metrics({"loss": 1.0}, prefix="train/")
    other = tracking.PipelineRun(uri, "exp", "pipe-2")
    assert evaluate.run_id == train.run_id != other.run_id
    assert trial.run_id != train.run_id
    run = train.client.get_run(train.run_id)
    assert run.data.metrics == {"train/loss": 0.9, "eval/accuracy": 0.7}
    assert run.data.params == {"train.learning_rate": "5e-05"}
    assert {"pipeline_run_id": "pipe-1", "data_hash": "abc", "feature_view": "fv"}.items() <= run.data.tags.items()
    assert run.data.tags["code_version"]
    assert train.client.get_run(trial.run_id).data.tags["mlflow.parentRunId"] == train.run_id


def test_registry_aliases(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tracking.PipelineRun(uri, "exp", "pipe-1")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    source = run.log_artifacts(model, "model")
    assert source.startswith((tmp_path / "mlartifacts").as_uri())
    assert tracking.get_alias(uri, "clf", "champion") is None
    v1 = tracking.register_version(uri, "clf", source, run.run_id, {"test_accuracy": 0.7})
    assert tracking.get_alias(uri, "clf", "champion") is None  # the model exists, the alias not yet
    v2 = tracking.register_version(uri, "clf", source, run.run_id, {"test_accuracy": 0.8})
    assert (v1.version, v2.version) == ("1", "2")
    assert tracking.get_alias(uri, "clf", "challenger").version == "2"
    tracking.promote(uri, "clf", "1")
    champion = tracking.get_alias(uri, "clf", "champion")
    assert champion.version == "1" and champion.tags["test_accuracy"] == "0.7"
    local = tracking.download(uri, champion.source, tmp_path / "fetched")
    assert (local / "config.json").read_text() == "{}"


@pytest.mark.parametrize("uri", ["sqlite:////proc/mlflow.db", "sqlite:////proc/sys/mlflow.db", "/proc"])
def test_a_store_where_no_file_can_be_made_is_refused_though_os_access_says_yes(uri: str) -> None:
    """/proc takes no new file, even from root; `os.access` says it is writable (as it does for root on a
    read-only mount), so only a real write tells."""
    with pytest.raises(ValueError, match=r"cannot be written|takes no new file"):
        tracking.check_tracking_uri(uri)
    assert not Path("/proc/mlflow.db").exists()


def test_the_write_check_leaves_an_existing_database_and_its_directory_as_they_were(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("create table t (x)")
    before = (tmp_path / "mlflow.db").read_bytes(), (tmp_path / "mlflow.db").stat().st_mtime_ns
    tracking.check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert ((tmp_path / "mlflow.db").read_bytes(), (tmp_path / "mlflow.db").stat().st_mtime_ns) == before
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]
