"""SageMaker's training contract on the train image's own entry point (`images/train`: ``python -m
components.sagemaker.train_entry``), in a simulated ``/opt/ml`` under a temporary directory.

No container runtime is installed here (no docker, no podman), so the image itself cannot run: the tests start
the same program the image runs as ``train`` (`images/train`, with the venv's python first on the PATH, as in the
image) in a process, its root from ``$SAGEMAKER_BASE_DIR`` (the variable SageMaker's training toolkit reads).

The simulated ``/opt/ml`` is built as SageMaker builds it for the training job request our train step sends
(`components.sagemaker.requests.training_job_request`): the hyperparameters of that request; the channels from a
real Feast export (synthetic reviews through the real featurize and feast_ingest cores), written by the real
channel writer (`components.sagemaker.channels.upload_channels`) to a real S3-compatible server (moto on
loopback) and copied back per channel into ``input/data/<channel>/`` as File mode does; inputdataconfig.json
from the request's InputDataConfig.  No mock is involved: AWS itself is not called.

The tests that train in a process (a run with the bundled MiniLM, SIGTERM and resumption, two processes under
torchrun) take a minute or more each on a small CPU and are marked ``slow`` (``make test-all`` or ``-m slow``);
the checks of the files, the bad hyperparameter's failure file, SIGTERM in `core.train` and its passing on to
torchrun run by default.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.common import schema, trial_metrics
from components.sagemaker import channels, requests
from components.sagemaker import train_entry as entry
from components.sagemaker.core import training_option_names
from components.sagemaker.settings import parse
from tests.sagemaker.conftest import REGION, settings_body

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "images" / "train"
SERVE = ROOT / "images" / "serve"
RUN = "contract-run-1"
BUCKET = "bert-test-bucket"
SEQ = 32
#: What the train step sends (`components.sagemaker.train.train_on_sagemaker`'s parameters), by name.
STEP_VALUES: dict[str, Any] = {
    "feature_store": "/mnt/feast",
    "feast_config": "cluster",
    "base_model": "",
    "num_train_epochs": 1,
    "learning_rate": 5e-05,
    "per_device_train_batch_size": 8,
    "max_seq_length": SEQ,
    "seed": 7,
    "health_policy": "report",
    "pipeline_run_id": RUN,
    "data_hash": "abc123",
}
#: A tiny budget, as tuning's best parameters reach the step (its ``hyperparameters``: training options by name).
BUDGET: dict[str, Any] = {"max_steps": 2, "eval_steps": 1, "logging_steps": 1, "use_cpu": True}
#: Keys SageMaker adds to a tuning trial's hyperparameters (and its SDK to an estimator's).
RESERVED = {"_tuning_objective_metric": "validation-accuracy", "sagemaker_program": "train"}


def request_hyperparameters(overrides: Mapping[str, Any]) -> dict[str, str]:
    """HyperParameters of the training job request the train step builds for these training options."""
    settings = parse(settings_body())
    hyper = requests.hyperparameters({**STEP_VALUES, **overrides}, training_option_names())
    name = requests.job_name("train", RUN)
    return requests.training_job_request(settings, name, settings.image("train"), hyper, RUN)["HyperParameters"]


@dataclass(frozen=True)
class Export:
    """The channels as SageMaker copies them (``input/data``), inputdataconfig.json, and the store's root."""

    data: Path
    input_data_config: dict[str, Any]
    store_root: Path


@pytest.fixture(scope="module")
def export(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Feast → S3 (moto) with the real channel writer → ``input/data/<channel>/<key under the prefix>``."""
    import boto3

    from tests.stores import synthetic_feature_store

    root = tmp_path_factory.mktemp("contract-export")
    store = synthetic_feature_store(root, rows=60, seed=5)
    s3 = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION).client(
        "s3", endpoint_url=moto_server
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    settings = parse(settings_body())
    uris = requests.channel_uris(settings, RUN)
    channels.upload_channels(s3, channels.read_splits(str(store), "local"), uris)
    request = requests.training_job_request(settings, "x", settings.image("train"), {}, RUN)
    data = root / "data"
    config = {}
    for channel in request["InputDataConfig"]:  # File mode: the prefix's objects under input/data/<channel>/
        name, uri = channel["ChannelName"], channel["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = channels.split_uri(uri)
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            target = data / name / item["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        config[name] = {
            "ContentType": channel["ContentType"],
            "TrainingInputMode": channel["InputMode"],
            "S3DistributionType": channel["DataSource"]["S3DataSource"]["S3DataDistributionType"],
            "RecordWrapperType": "None",
        }
    return Export(data, config, root)


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Channels of the same layout and columns, without Feast (for the tests that train nothing)."""
    from components.common import features as F
    from tests import testing

    root = tmp_path_factory.mktemp("contract-small")
    texts, labels, facets = testing.synthetic_reviews(12, seed=1)
    rows = testing.features(texts, labels, SEQ, facets=facets)
    config = {}
    for name, part in (("train", rows.iloc[:9]), ("validation", rows.iloc[9:])):
        (root / "data" / name).mkdir(parents=True)
        part.assign(**{F.SPLIT: name}).to_parquet(root / "data" / name / f"{name}.parquet", index=False)
        config[name] = {"ContentType": requests.PARQUET, "TrainingInputMode": "File"}
    return Export(root / "data", config, root)


def opt_ml(
    root: Path, export: Export, hyperparameters: Mapping[str, str], hosts: tuple[str, ...] = ("algo-1",)
) -> Path:
    """A simulated /opt/ml as SageMaker leaves it before ``train`` starts."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters)))
    (config / "inputdataconfig.json").write_text(json.dumps(export.input_data_config))
    resources = {"current_host": hosts[0], "hosts": list(hosts), "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resources))
    shutil.copytree(export.data, root / "input" / "data")
    for name in ("model", "checkpoints", "output/data"):
        (root / name).mkdir(parents=True)
    return root


def environment(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        entry.ROOT_ENV: str(root),
    }


@dataclass
class Finished:
    code: int
    lines: list[str]
    seconds: float


def run_train(root: Path, timeout: float = 600) -> Finished:
    """`images/train` as SageMaker runs it (no arguments), stdout and stderr as one log (CloudWatch's)."""
    started = time.monotonic()
    done = subprocess.run(
        [str(TRAIN)], env=environment(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    return Finished(done.returncode, done.stdout.splitlines(), time.monotonic() - started)


class Running:
    """`images/train` (or ``command``) in a process whose log lines are collected as they come."""

    def __init__(self, root: Path, command: list[str] | None = None) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command or [str(TRAIN)], env=environment(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None:
                self._reader.join(5)
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"no line matching {pattern!r}; log:\n" + "\n".join(self.lines[-40:]))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 120) -> tuple[int, float]:
        """SIGTERM (as StopTrainingJob sends it); the exit code and the seconds until the process ended."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        self._reader.join(10)
        return code, time.monotonic() - sent


# --- a training job that completes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(export: Export, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Finished]:
    """The train step's request hyperparameters (the bundled MiniLM, 2 steps on CPU) and SageMaker's own keys."""
    root = opt_ml(tmp_path_factory.mktemp("opt-ml") / "ml", export, {**request_hyperparameters(BUDGET), **RESERVED})
    finished = run_train(root)
    assert finished.code == 0, "\n".join(finished.lines[-60:])
    return root, finished


@pytest.mark.slow
def test_the_model_lands_in_opt_ml_model_as_the_train_step_writes_it(trained: tuple[Path, Finished]) -> None:
    from components.common import modeling
    from components.train import core
    from serving.classifier import SentimentClassifier

    root, finished = trained
    model = root / "model"
    assert not (root / "output" / "failure").exists()
    # The train step's layout: what `core.export_model` writes for the same model, and the training outcome.
    reference = root.parent / "reference"
    core.export_model(modeling.load_classifier(str(model)), modeling.load_tokenizer(str(model)), reference)
    assert {p.name for p in model.iterdir()} == {p.name for p in reference.iterdir()} | {schema.TRAINING_OUTCOME_FILE}
    assert json.loads((model / "label_map.json").read_text()) == json.loads((reference / "label_map.json").read_text())
    classifier = SentimentClassifier.load(model)  # the serve image's loader
    assert len(classifier.classify(["lovely dress", "awful fabric"])) == 2
    report = json.loads((root / "output" / "data" / "training_report.json").read_text())
    assert report["global_step"] == 2 and report["train_rows"] == 48 and report["validation_rows"] == 6
    assert report["parameters"]["learning_rate"] == 5e-05 and report["parameters"]["max_seq_length"] == SEQ
    assert "mlflow" not in report  # the container logs no MLflow run
    checkpoints = sorted((root / "checkpoints" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and all((c / "trainer_state.json").is_file() for c in checkpoints)
    print(f"train contract run: {finished.seconds:.1f} s")


@pytest.mark.slow
def test_sagemakers_own_hyperparameters_are_ignored_with_one_line(trained: tuple[Path, Finished]) -> None:
    _, finished = trained
    said = [line for line in finished.lines if "hyperparameters ignored" in line]
    assert len(said) == 1 and said[0].endswith("_tuning_objective_metric, sagemaker_program")


@pytest.mark.slow
def test_every_metric_line_matches_the_metric_definitions(trained: tuple[Path, Finished]) -> None:
    """The request's MetricDefinitions applied as SageMaker applies them: ``re.search`` on each log line, the
    first group as a float."""
    _, finished = trained
    definitions = requests.metric_definitions()
    found: dict[str, list[float]] = {d["Name"]: [] for d in definitions}
    for line in finished.lines:
        for d in definitions:
            if (match := re.search(d["Regex"], line)) is not None:
                found[d["Name"]].append(float(match.group(1)))
    metric_lines = [m for m in map(trial_metrics.parse_line, finished.lines) if m is not None]
    progress_lines = [line for line in finished.lines if re.search(r"\bstep \d+/\d+ \| epoch ", line)]
    assert len(metric_lines) == 2 and len(progress_lines) == 2  # eval_steps 1, logging_steps 1, 2 steps
    for name in trial_metrics.METRIC_NAMES:
        assert found[name] == pytest.approx([m.metrics[name] for m in metric_lines], abs=1e-6)
    for name in ("train-epoch", "train-loss", "train-learning-rate", "train-samples-per-second"):
        assert len(found[name]) == len(progress_lines), name
    assert found["train-epoch"] == sorted(found["train-epoch"]) and all(v > 0 for v in found["train-loss"])


@pytest.mark.slow
def test_serve_answers_ping_and_invocations_as_evaluate_does_on_the_trained_model(
    trained: tuple[Path, Finished], export: Export, tmp_path: Path
) -> None:
    """The serve image's `serve` (images/serve) on the /opt/ml/model the training job wrote (what SageMaker
    unpacks from its model.tar.gz), against evaluate's core on the same model and the store's test split."""
    import pandas as pd

    from components.common import features as F
    from components.deploy.smoke import compare, smoke_set
    from components.evaluate import core as evaluate
    from serving.testing import ServerProcess, request

    root, _ = trained
    test_rows = F.get_training_features(F.open_store(str(export.store_root / "fs"), "local"))["test"]
    reviews = pd.read_parquet(export.store_root / "reviews.parquet")
    evaluate.run(test_rows, root / "model", tmp_path / "e.json", tmp_path / "e.html", 0.0, None,
                 predictions_path=tmp_path / "p.parquet")  # fmt: skip
    smoke = smoke_set(tmp_path / "p.parquet", export.store_root / "reviews.parquet", 6)
    assert len(smoke) == len(test_rows) == 6 and set(reviews[schema.REVIEW_ID]) >= {r.review_id for r in smoke}
    env = {**environment(root), "SERVING_MAX_SEQ_LENGTH": str(SEQ)}
    server = ServerProcess(root / "model", tmp_path / "server.log", program=[str(SERVE)], env=env)
    try:
        server.wait()
        assert request(f"{server.url}/ping").status == 200
        headers = {"X-Amzn-SageMaker-Custom-Attributes": "trace=1", "X-Amzn-SageMaker-Inference-Id": "contract"}
        answer = request(f"{server.url}/invocations", {"instances": [r.text for r in smoke]}, headers=headers)
    finally:
        server.stop()
    assert answer.status == 200, answer.body
    result = compare(smoke, answer.json()["predictions"])
    assert result.ok, result.describe()
    assert result.matched + result.ties == len(smoke)


# --- bad input, SIGTERM ------------------------------------------------------------------------------------


def test_a_bad_hyperparameter_writes_the_failure_file_and_exits_non_zero(small_export: Export, tmp_path: Path) -> None:
    """`images/train` in a process: exit 2, the one-line reason naming the hyperparameter first in
    output/failure (SageMaker's FailureReason) and in the log; nothing trained or written."""
    root = opt_ml(tmp_path / "ml", small_export, {**request_hyperparameters(BUDGET), "learning_rate": "abc"})
    finished = run_train(root, timeout=300)
    assert finished.code == entry.EXIT_BAD_INPUT
    reason = "error: hyperparameter learning_rate must be a number, got 'abc'"
    assert (root / "output" / "failure").read_text().splitlines() == [reason]
    assert reason in finished.lines
    assert not any((root / "model").iterdir()) and not any((root / "checkpoints").iterdir())


def test_a_hyperparameter_out_of_bounds_is_the_failure_reason(
    small_export: Export, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The entry point's main in this process (the process path is the test above): learning_rate "5"."""
    import logging

    root = opt_ml(tmp_path / "ml", small_export, {**request_hyperparameters(BUDGET), "learning_rate": "5"})
    logger = logging.getLogger("components")
    handlers = list(logger.handlers)
    try:
        assert entry.main(["--root", str(root)]) == entry.EXIT_BAD_INPUT
    finally:  # (main's log handler writes to this test's captured stderr, which closes with the test)
        logger.handlers[:] = handlers
    first = (root / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("error: hyperparameter learning_rate must be at most 0.01, got 5.0. Fine-tuning BERT")
    assert len(first) <= entry.FAILURE_REASON_CHARS
    assert capsys.readouterr().err.startswith(first)


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_that_a_restarted_container_resumes_from(export: Export, tmp_path: Path) -> None:
    """SIGTERM (StopTrainingJob, a spot interruption) mid-training: a checkpoint in /opt/ml/checkpoints, exit 143
    well within SageMaker's 120 s, no model and no failure; the container started again on the same
    /opt/ml/checkpoints (as SageMaker restores it after an interruption) resumes at the next step."""
    from tests import testing

    base = testing.tiny_model(tmp_path / "tiny")
    long_run = {
        "base_model": str(base),
        "max_steps": 1000,
        "logging_steps": 1,
        "save_steps": 0,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 4,
        "use_cpu": True,
    }
    root = opt_ml(tmp_path / "ml", export, request_hyperparameters(long_run))

    def interrupt() -> int:
        running = Running(root)
        first = int(running.wait_for(r"\bstep (\d+)/1000 \|").group(1))
        running.wait_for(rf"\bstep {first + 1}/1000 \|")
        code, stopped = running.terminate()
        print(f"SIGTERM at step {first + 1}: exit {code} after {stopped:.1f} s")
        assert stopped < 120
        assert code == entry.EXIT_SIGTERM, "\n".join(running.lines[-40:])
        assert any("SIGTERM: checkpoint saved at step" in line for line in running.lines)
        return first

    interrupt()
    saved = sorted((root / "checkpoints" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    assert saved and (saved[-1] / "trainer_state.json").is_file()
    step = json.loads((saved[-1] / "trainer_state.json").read_text())["global_step"]
    assert step >= 2 and saved[-1].name == f"checkpoint-{step}"
    assert not (root / "output" / "failure").exists() and not any((root / "model").iterdir())
    resumed_first = interrupt()  # the same /opt/ml again: the first step it trains is the one after the checkpoint
    assert resumed_first == step + 1


@pytest.mark.slow
def test_two_processes_under_torchrun_train_and_stop_together(export: Export, tmp_path: Path) -> None:
    """The command `train` starts for several GPUs (or hosts), here two CPU processes on this host (Gloo): each runs
    the entry point as one of torchrun's processes; SIGTERM to torchrun (as `train` passes it on) stops both after
    the same step with one checkpoint; started again, they resume there and write the model (rank 0 only)."""
    from tests import testing

    base = testing.tiny_model(tmp_path / "tiny")
    budget = {"base_model": str(base), "max_steps": 8, "logging_steps": 1, "save_steps": 0, "use_cpu": True,
              "per_device_train_batch_size": 4, "learning_rate": 1e-3, "early_stopping_patience": 0}  # fmt: skip
    root = opt_ml(tmp_path / "ml", export, request_hyperparameters(budget))
    command = entry.torchrun_command(entry.Resources(), 2, root)
    running = Running(root, command)
    running.wait_for(r"\bstep 2/8 \|")
    code, _ = running.terminate()
    assert code != 0 and any("SIGTERM: checkpoint saved at step" in line for line in running.lines)
    saved = sorted((root / "checkpoints" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    step = json.loads((saved[-1] / "trainer_state.json").read_text())["global_step"]
    assert 2 <= step < 8 and not any((root / "model").iterdir())
    resumed = Running(root, command)
    resumed.wait_for(rf"\bstep {step + 1}/8 \|")
    assert resumed.process.wait(timeout=300) == 0, "\n".join(resumed.lines[-40:])
    resumed._reader.join(10)
    report = json.loads((root / "output" / "data" / "training_report.json").read_text())
    assert report["world_size"] == 2 and report["global_step"] == 8 and report["resumed_from_step"] == step
    assert (root / "model" / "config.json").is_file() and (root / "model" / schema.TRAINING_OUTCOME_FILE).is_file()


def test_sigterm_in_training_saves_a_checkpoint_and_raises_interrupted(tmp_path: Path) -> None:
    """The train step's own training (`core.train`) in this process, SIGTERM sent to itself after step 2's progress
    line: a checkpoint of that step, `Interrupted`, no model; the handler before training is back afterwards (the
    test's own, which would record a SIGTERM that the training did not take)."""
    from components.train import core
    from components.train.callbacks import Interrupted
    from tests import testing

    texts, labels, facets = testing.synthetic_reviews(40, seed=2)
    rows = testing.features(texts, labels, SEQ, facets=facets)
    args = core.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=50, per_device_train_batch_size=4, logging_steps=1,
        save_steps=0, learning_rate=1e-3, use_cpu=True,
    )  # fmt: skip
    base = core.ModelArguments(str(testing.tiny_model(tmp_path / "tiny")))
    missed: list[int] = []

    def on_log(metrics: dict[str, float], step: int) -> None:
        if step == 2 and "loss" in metrics:
            os.kill(os.getpid(), signal.SIGTERM)

    def record(number: int, frame: Any) -> None:
        missed.append(number)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        with pytest.raises(Interrupted, match=r"^Training stopped by SIGTERM at step (2|3): checkpoint saved in "):
            core.train(rows.iloc[:32], rows.iloc[32:], base, core.DataArguments(max_seq_length=SEQ), args, None,
                       tmp_path / "model", on_log)  # fmt: skip
        assert signal.getsignal(signal.SIGTERM) is record and not missed
    finally:
        signal.signal(signal.SIGTERM, previous)
    saved = core.checkpoint_dirs(tmp_path / "out")
    assert [p.name for p in saved][-1] in ("checkpoint-2", "checkpoint-3")
    assert not (tmp_path / "model").exists()


# --- the contract's files, without training ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"learning_rate": 3.2e-05, "warmup_ratio": 0.06, "lr_scheduler_type": "cosine", "use_cpu": False},
        {"per_device_train_batch_size": 16, "group_by_length": False, "training_args": "optim=adamw_torch"},
    ],
    ids=["default", "tuned", "switches"],
)
def test_the_training_job_requests_hyperparameters_parse_in_the_entry_point(overrides: dict[str, Any]) -> None:
    """Every name the request sends is one the entry point takes, every value comes back as the option's value."""
    sent = request_hyperparameters(overrides)
    assert all(isinstance(v, str) for v in sent.values())
    values, ignored = entry.parse_hyperparameters(sent)
    expected = {k: v for k, v in {**STEP_VALUES, **overrides}.items() if k not in requests.NOT_HYPERPARAMETERS}
    assert values == expected and ignored == []
    assert {type(v) for v in values.values()} <= {str, int, float, bool}


def test_a_tuning_trials_quoted_categorical_value_and_reserved_keys() -> None:
    """SageMaker's tuning gives a categorical value as a JSON string (`components.sagemaker.tuning` strips the same
    quotes from TunedHyperParameters) and adds ``_tuning_objective_metric``."""
    values, ignored = entry.parse_hyperparameters(
        {"lr_scheduler_type": '"cosine"', "learning_rate": "4.5e-05", **RESERVED}
    )
    assert values == {"lr_scheduler_type": "cosine", "learning_rate": 4.5e-05}
    assert sorted(ignored) == sorted(RESERVED)


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"learning_rat": "5e-05"}, r"^hyperparameter learning_rat is no training option; valid: .*learning_rate"),
        ({"output_dir": "/tmp/x"}, r"^hyperparameter output_dir: the container sets it itself"),
        ({"max_steps": "2.5"}, r"^hyperparameter max_steps must be a whole number, got '2.5'$"),
        ({"use_cpu": "maybe"}, r"^hyperparameter use_cpu must be true or false, got 'maybe'$"),
        ({"lr_scheduler_type": "step"}, r"^hyperparameter lr_scheduler_type must be one of linear, cosine"),
        ({"max_seq_length": "2"}, r"^hyperparameter max_seq_length must be at least 3, got 2\.$"),
    ],
)
def test_bad_hyperparameters_are_one_line_naming_the_key(hyperparameters: dict[str, str], message: str) -> None:
    with pytest.raises(entry.ContractError, match=message) as error:
        entry.parse_hyperparameters(hyperparameters)
    assert "\n" not in str(error.value)


def _config_root(tmp_path: Path, export: Export, **changes: Any) -> entry.Paths:
    root = opt_ml(tmp_path / "ml", export, request_hyperparameters({}))
    config = root / "input" / "config"
    for name, body in changes.items():
        (config / f"{name}.json").write_text(json.dumps(body))
    return entry.Paths(root)


def test_a_missing_or_pipe_mode_channel_is_refused_naming_it(small_export: Export, tmp_path: Path) -> None:
    export = small_export
    only_train = {"train": export.input_data_config["train"]}
    paths = _config_root(tmp_path, export, inputdataconfig=only_train)
    with pytest.raises(entry.ContractError, match=r"has no 'validation' channel \(it has train\)"):
        entry.read_job(paths)
    pipe = {**export.input_data_config, "validation": {"TrainingInputMode": "Pipe"}}
    (paths.config / "inputdataconfig.json").write_text(json.dumps(pipe))
    with pytest.raises(entry.ContractError, match=r"^channel validation: TrainingInputMode 'Pipe'"):
        entry.read_job(paths)
    (paths.config / "inputdataconfig.json").write_text(json.dumps(export.input_data_config))
    shutil.rmtree(paths.channel("train"))
    with pytest.raises(entry.ContractError, match=r"^channel train: no \.parquet file under .*input/data/train"):
        entry.read_job(paths)


def test_two_hosts_start_torchrun_with_the_hosts_of_resourceconfig(small_export: Export, tmp_path: Path) -> None:
    """resourceconfig.json of the second of two instances: node rank 1 of 2, the first host as master."""
    resources = {
        "current_host": "algo-2",
        "hosts": ["algo-1", "algo-2"],
        "network_interface_name": "ethwe",
        "current_instance_type": "ml.g5.2xlarge",
    }
    paths = _config_root(tmp_path, small_export, resourceconfig=resources)
    job = entry.read_job(paths)
    assert job.resources == entry.Resources("algo-2", ("algo-1", "algo-2"), "ethwe")
    command = entry.torchrun_command(job.resources, 1, paths.root)
    assert command == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--node_rank=1", "--master_addr=algo-1",
        "--master_port=29500", "--nproc_per_node=1", "-m", "components.sagemaker.train_entry",
        "--root", str(paths.root),
    ]  # fmt: skip
    env = entry.torchrun_environment(job.resources, {"PATH": "/usr/bin"})
    assert env == {"PATH": "/usr/bin", "NCCL_SOCKET_IFNAME": "ethwe", "GLOO_SOCKET_IFNAME": "ethwe"}
    one_host_gpus = entry.torchrun_command(entry.Resources(), 4, paths.root)
    assert one_host_gpus[3:5] == ["--standalone", "--nproc_per_node=4"]
    (paths.config / "resourceconfig.json").write_text(json.dumps({**resources, "current_host": "algo-3"}))
    with pytest.raises(entry.ContractError, match=r"current_host 'algo-3' is not among hosts \['algo-1', 'algo-2'\]"):
        entry.read_job(paths)


def test_sigterm_to_train_is_passed_on_to_torchrun(tmp_path: Path) -> None:
    """`train` waiting for its torchrun (here a stand-in child that exits 143 on SIGTERM): SIGTERM to `train` goes
    to the child, and `train` reports it.  The test's own handler stays around it (it would record a SIGTERM that
    was not passed on)."""
    missed: list[int] = []
    ready = tmp_path / "ready"

    def record(number: int, frame: Any) -> None:
        missed.append(number)

    def terminate_when_ready() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    child = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    previous = signal.signal(signal.SIGTERM, record)
    try:
        threading.Thread(target=terminate_when_ready, daemon=True).start()
        started = time.monotonic()
        assert entry._launch([sys.executable, "-c", child], os.environ) == (143, True)
        assert time.monotonic() - started < 50 and not missed
        assert signal.getsignal(signal.SIGTERM) is record
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_root_is_opt_ml_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(entry.ROOT_ENV, raising=False)
    assert entry.root_path() == Path("/opt/ml")
    monkeypatch.setenv(entry.ROOT_ENV, "/tmp/ml")
    assert entry.root_path() == Path("/tmp/ml") and entry.root_path("/x") == Path("/x")


def test_the_train_image_runs_train_for_sagemaker() -> None:
    """`docker run IMAGE train` runs the program `train` on the PATH: images/train, copied into the venv's bin."""
    stage = (ROOT / "images" / "Dockerfile").read_text().split("FROM train-deps AS train", 1)[1].split("FROM ", 1)[0]
    assert "COPY images/train /opt/venv/bin/train" in stage
    assert "!images/train" in (ROOT / ".dockerignore").read_text().splitlines()
    assert os.access(TRAIN, os.X_OK)
    assert TRAIN.read_text().rstrip().endswith('exec python -m components.sagemaker.train_entry "$@"')
