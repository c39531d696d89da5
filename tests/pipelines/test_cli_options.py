"""`python -m pipelines run` checks every option before the first step: exit 2, one line naming the flag,
nothing written — and a run that ends otherwise always leaves a summary that says how it ended."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(["run", *argv])
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--epochs", "0"], "--epochs", "at least 1"),
        (["--batch-size", "0"], "--batch-size", "at least 1"),
        (["--learning-rate", "nan"], "--learning-rate", "finite"),
        (["--learning-rate", "10"], "--learning-rate", "at most 0.01, got 10.0. Fine-tuning BERT uses 1e-5 to 1e-4"),
        (["--learning-rate", "0"], "--learning-rate", "above 0"),
        (["--min-accuracy", "2"], "--min-accuracy", "at most 1"),
        (["--max-abs-ci", "-0.1"], "--max-abs-ci", "at least 0"),
        (["--max-abs-dpl", "x"], "--max-abs-dpl", "expected float"),
        (["--min-facet-rows", "0"], "--min-facet-rows", "at least 1"),
        (["--max-rows", "-5"], "--max-rows", "at least 0"),
        (["--max-seq-length", "2"], "--max-seq-length", "at least 3"),
        (["--health-policy", "panic"], "--health-policy", "must be one of report, stop"),
        (["--deploy-backend", "docker"], "--deploy-backend", "must be one of local, kserve"),
        (["--canary-traffic-percent", "100"], "--canary-traffic-percent", "at most 99"),
        (["--local-port", "70000"], "--local-port", "at most 65535"),
        (["--smoke-reviews", "0"], "--smoke-reviews", "at least 1"),
        (["--validation-fraction", "0.6", "--test-fraction", "0.5"], "--test-fraction", "nothing to train on"),
        (["--feast-config", "no/such/feature_store.yaml"], "--feast-config", "no/such/feature_store.yaml"),
        (["--base-model", "/no/such/model"], "--base-model", "does not exist"),
        (["--epochs"], "--epochs", "expected one argument"),
        (["--no-such-flag"], "--no-such-flag", "unrecognized"),
    ],
)
def test_bad_option_exits_2_with_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str, words: str
) -> None:
    out = tmp_path / "run"
    code, err = _run(["--output", str(out), *args], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0] and words in err[0], err
    assert not out.exists()  # nothing written


def test_malformed_feast_config_is_rejected_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "feature_store.yaml"
    config.write_text("project: [unclosed\n")
    code, err = _run(["--output", str(tmp_path / "run"), "--feast-config", str(config)], capsys)
    assert code == 2 and len(err) == 1 and "--feast-config" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_output_that_cannot_be_a_directory_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "taken").write_text("not a directory")
    output = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "run"
    code, err = _run(["--output", str(output)], capsys)
    assert code == 2 and len(err) == 1 and "--output" in err[0] and "Traceback" not in err[0]
    assert (tmp_path / "taken").read_text() == "not a directory"


def test_an_unwritable_output_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """/proc refuses new directories even to root."""
    code, err = _run(["--output", "/proc/bert-kfp-run"], capsys)
    assert code == 2 and len(err) == 1 and "--output" in err[0] and "cannot write" in err[0]


def test_an_earlier_run_is_neither_reused_silently_nor_left_as_a_stale_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"status": "succeeded"}))
    code, err = _run(["--output", str(out), "--epochs", "1"], capsys)
    assert code == 2 and len(err) == 1 and "--overwrite" in err[0]
    assert json.loads((out / "summary.json").read_text())["status"] == "succeeded"  # untouched
    # With --overwrite, bad input changes nothing: the earlier run is removed only when this one starts
    # (tests/pipelines/test_run_dir.py).
    code, err = _run(["--output", str(out), "--overwrite", "--data", str(tmp_path / "missing.csv")], capsys)
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]
    assert json.loads((out / "summary.json").read_text())["status"] == "succeeded"


def test_ctrl_c_leaves_an_interrupted_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pipelines", "run", "--output", str(out), "--max-rows", "60", "--epochs", "1"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # wait until a step runs
        if line.startswith("▶ check-bias"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "Ctrl-C" in summary["error"]
    assert "Traceback" not in err


def test_a_swallowed_ctrl_c_is_still_remembered() -> None:
    """A KeyboardInterrupt lost inside a library (here: swallowed on purpose) is still recorded, so the run
    stops when its steps return instead of reporting success."""
    from pipelines.local import _remembered_ctrl_c

    before = signal.getsignal(signal.SIGINT)
    with _remembered_ctrl_c() as seen:
        assert not seen
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here, in the main thread
        except KeyboardInterrupt:
            pass  # what a finalizer or an over-broad except would do
        assert seen == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # A SQLite file where no file can be made: /proc takes none, even from root (os.access says yes there).
        (["--tuning-trials", "2", "--study-storage", "sqlite:////proc/study.db"], ["--study-storage", "cannot be"]),
        (["--mlflow-tracking-uri", "sqlite:////proc/mlflow.db"], ["sqlite:////proc/mlflow.db", "cannot be written"]),
        # The bundled MiniLM has 512 positions (config.json and tokenizer_config.json say so).
        (["--max-seq-length", "600"], ["--max-seq-length 600", "512 tokens"]),
        (["--max-seq-length", "100000"], ["--max-seq-length 100000", "use at most 512"]),
        (["--deploy-backend", "kserve"], ["--deploy-backend kserve", "--deploy-backend local", "submit"]),
    ],
    ids=["study-storage-in-proc", "mlflow-sqlite-in-proc", "seq-length-600", "seq-length-100000", "kserve-locally"],
)
def test_options_that_would_fail_after_training_are_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    """Each used to pass the checks and fail at its step, after the steps before it had run (minutes of
    training); ``--data`` names a missing file, so a check that lets the option through fails on the data."""
    out = tmp_path / "run"
    code, err = _run(["--output", str(out), "--data", str(tmp_path / "missing.csv"), *args], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in words), err
    assert not out.exists()
    assert not Path("/proc/study.db").exists() and not Path("/proc/mlflow.db").exists()


def test_an_existing_writable_study_storage_and_tracking_store_pass_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real write of the checks changes nothing: an existing database keeps its bytes and time stamp, and
    no file is left beside it; the run goes on to the next check (here: the missing data)."""
    import sqlite3

    for name in ("study.db", "mlflow.db"):
        with sqlite3.connect(tmp_path / name) as db:
            db.execute("create table t (x)")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    argv = ["--output", str(tmp_path / "run"), "--data", str(tmp_path / "missing.csv"), "--tuning-trials", "2"]
    argv += [
        "--study-storage",
        f"sqlite:///{tmp_path}/study.db",
        "--mlflow-tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
    ]
    code, err = _run(argv, capsys)
    assert code == 2 and len(err) == 1 and "missing.csv" in err[0] and "does not exist" in err[0], err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
