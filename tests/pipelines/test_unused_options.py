"""Options the run would not use are refused before any step (exit 2, one line naming both flags), instead of
being ignored silently: the tuning spec, study storage and study name without --tuning-trials, and a
--rating-column when --label-column gives the labels. `run` and `submit` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.__main__ import main


@pytest.fixture(autouse=True)
def private_mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a check let a run through, it trains into this test's own MLflow store, never the user's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


def _err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # A malformed spec: it was never read with --tuning-trials 0, so the run went on without tuning.
        (["--tuning-spec", "parameters: [unclosed"], ["--tuning-spec is not used", "--tuning-trials is 0"]),
        (["--tuning-trials", "0", "--tuning-spec", "algorithm: {algorithmName: tpe}"], ["--tuning-spec is not used"]),
        (["--study-name", "nightly", "--study-storage", "sqlite:///s.db"], ["--study-storage, --study-name are"]),
        (["--label-column", "sentiment", "--rating-column", "No Such Column"], ["--rating-column 'No Such Column'"]),
    ],
    ids=["malformed-spec-no-trials", "spec-zero-trials", "study-no-trials", "rating-with-label"],
)
def test_run_refuses_what_it_would_not_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    out = tmp_path / "run"
    code = main(["run", "--output", str(out), *args])
    err = _err(capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(w in err[0] for w in words), err
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [["--tuning-trials", "0"], ["--label-column", "sentiment"], ["--rating-column", "Rating", "--label-column", "x"]],
    ids=["no-tuning", "label-alone", "default-rating-with-label"],
)
def test_options_that_are_used_or_left_at_their_default_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """They pass this check and meet the next one: the data file that does not exist."""
    code = main(["run", "--output", str(tmp_path / "run"), "--data", str(tmp_path / "missing.csv"), *args])
    err = _err(capsys)
    assert code == 2 and len(err) == 1 and "does not exist" in err[0], err


def test_submit_refuses_a_spec_without_trials_before_asking_the_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KFP_HOST is a closed loopback port: reaching it would be exit 1."""
    monkeypatch.setenv("KFP_HOST", "http://127.0.0.1:9")
    argv = ["submit", "--profile", "cpu", "--package", str(tmp_path / "p.yaml"), "--data", "s3://b/r.csv"]
    code = main([*argv, "--tuning-spec", "algorithm: {algorithmName: tpe}"])
    err = _err(capsys)
    assert code == 2 and len(err) == 1 and "--tuning-spec is not used" in err[0], err
    # given with trials, it is used: the check passes and the run goes on to the (closed) endpoint
    code = main([*argv, "--tuning-spec", "algorithm: {algorithmName: tpe}", "--tuning-trials", "2"])
    assert code == 1 and "unreachable" in _err(capsys)[0]
