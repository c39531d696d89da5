"""The run directory of `python -m pipelines run`: nothing in it changes before every check passed (an earlier
run survives bad input, even with --overwrite); one run at a time holds it (an OS lock, released by the kernel
however the run ends), a killed run's directory is refused unless --overwrite takes it over; a full disk is one
`error:` line; SIGTERM stops the run like Ctrl-C, and no process of a run outlives it, even after `kill -9`."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import local, reaper, run_dir, run_log, summary
from pipelines.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private_mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a check let a run through, it trains into this test's own MLflow store, never the user's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(["run", *argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _alive(pid: int) -> bool:
    """Running: neither gone nor a zombie (an ended process its parent has not collected)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[:1] != [b"Z"]


def _hold_lock(output: Path) -> subprocess.Popen[str]:
    """Another process that holds ``output``'s lock, as a run does (it prints 'locked' once it does)."""
    code = (
        "import sys, time; from pathlib import Path; from pipelines.run_dir import RunLock; "
        "RunLock(Path(sys.argv[1])).acquire(False); print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(output)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    """A finished run: its summary and its (emptied) lock file."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"status": "succeeded", "marker": 1}))
    (out / run_dir.LOCK_FILE).write_text("")
    return out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--data", "missing.csv"], "does not exist"),
        (["--epochs", "0"], "--epochs"),
        (
            ["--text-column", "No Such Column"],
            "No Such Column",
        ),  # on the synthetic sample: checked before it is written
        (["--base-model", "/no/such/model"], "--base-model"),
    ],
    ids=["missing-data", "bad-option", "missing-column-in-sample", "bad-model"],
)
def test_overwrite_with_bad_input_leaves_the_earlier_run_as_it_was(
    earlier_run: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    """It used to remove the earlier run's summary.json before the checks ran (exit 2, earlier run lost)."""
    before = _snapshot(earlier_run)
    args = [str(earlier_run.parent / a) if a == "missing.csv" else a for a in args]
    code, err = _run(["--output", str(earlier_run), "--overwrite", *args], capsys)
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert _snapshot(earlier_run) == before


def test_a_directory_in_use_is_refused_at_once_naming_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any other check (here a model that does not exist would be the next error), whatever
    --overwrite says; the running run's files are not touched."""
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(out)
    try:
        before = _snapshot(out)
        for extra in ([], ["--overwrite"]):
            code, err = _run(["--output", str(out), "--base-model", "/no/such/model", *extra], capsys)
            assert code == 2 and len(err) == 1, err
            assert "is in use by another run" in err[0] and f"pid {holder.pid} " in err[0] and "started at" in err[0]
        assert _snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_directory_is_refused_and_overwrite_takes_it_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(out)
    holder.kill()  # kill -9: the kernel released the lock; the file still names the run
    holder.wait()
    code, err = _run(["--output", str(out)], capsys)
    assert code == 2 and len(err) == 1, err
    assert "killed before it ended" in err[0] and f"pid {holder.pid} " in err[0] and "--overwrite" in err[0]
    # --overwrite passes the lock check (and nothing changes while the other checks fail) ...
    before = _snapshot(out)
    code, err = _run(["--output", str(out), "--overwrite", "--data", str(tmp_path / "missing.csv")], capsys)
    assert code == 2 and "does not exist" in err[0] and _snapshot(out) == before
    # ... and the run that starts takes the lock over: the killed run's record is what it replaced.
    lock = run_dir.RunLock(out)
    taken = lock.acquire(overwrite=True)
    try:
        assert taken is not None and taken.pid == holder.pid
        assert json.loads((out / run_dir.LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert (out / run_dir.LOCK_FILE).read_text() == ""  # ended: no longer taken for a killed run
    assert run_dir.check(out, overwrite=False) is None


def test_the_lock_is_exclusive_while_held(tmp_path: Path) -> None:
    first, second = run_dir.RunLock(tmp_path), run_dir.RunLock(tmp_path)
    assert first.acquire(overwrite=False) is None
    try:
        with pytest.raises(run_dir.RunDirBusy, match=f"pid {os.getpid()} "):
            second.acquire(overwrite=True)
        with pytest.raises(run_dir.RunDirBusy):
            run_dir.check(tmp_path, overwrite=True)
    finally:
        first.release()
    assert second.acquire(overwrite=False) is None
    second.release()


# --- a full disk ------------------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root may mount one; elsewhere the test is skipped)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> None:
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def test_an_output_on_a_full_disk_is_one_error_and_nothing_is_written(
    small_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(small_tmpfs)
    before = sorted(p.name for p in small_tmpfs.iterdir())
    code, err = _run(["--output", str(small_tmpfs / "run")], capsys)
    assert code == 2 and len(err) == 1 and "is full" in err[0] and "--output" in err[0], err
    assert sorted(p.name for p in small_tmpfs.iterdir()) == before


def test_a_summary_that_does_not_fit_leaves_no_partial_file(small_tmpfs: Path) -> None:
    _fill(small_tmpfs)
    with pytest.raises(OSError, match="No space left"):
        summary.write_summary(small_tmpfs, {"status": "failed", "error": "x" * 100_000})
    assert not (small_tmpfs / "summary.json.tmp").exists() and not (small_tmpfs / "summary.json").exists()


def test_log_lines_on_a_full_disk_raise_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """kfp.local logs each line of a step through `logging` into the run's log: a write error there used to
    print '--- Logging error ---' and a traceback per line (200 lines). /dev/full fails every write."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "run.log").symlink_to("/dev/full")
    terminal = io.StringIO()
    log = run_log.RunLog(terminal, logs)
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("test-full-disk")
    logger.addHandler(handler)
    try:
        for i in range(50):
            logger.warning("Executing task 'prepare-reviews' line %d %s", i, "x" * 400)
    finally:
        logger.removeHandler(handler)
        log.finish()
    assert isinstance(log.write_error, OSError) and "No space left" in str(log.write_error)
    assert "Logging error" not in capfd.readouterr().err
    assert "▶ prepare-reviews" in terminal.getvalue()  # the terminal still hears about the steps


# --- signals and the processes of a step ------------------------------------------------------------------------


def _guarded_tree(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """A parent (as `python -m pipelines run` is) whose child is the reaper running a shell that starts a
    background sleep, a sleep it orphans, and a foreground sleep; returns the parent and the reaper's pid."""
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'pipelines.reaper', '--', 'sh', '-c',"
        " 'sleep 301 & (sleep 302 &); sleep 303'])\n"
        "print(p.pid, flush=True); time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    wrapper = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while len(reaper.descendants(wrapper)) < 4 and time.monotonic() < deadline:  # sh and three sleeps
        time.sleep(0.1)
    return parent, wrapper


def test_a_killed_parent_leaves_no_process_of_a_step_behind(tmp_path: Path) -> None:
    """kill -9 of the run: the kernel tells each step's reaper (PR_SET_PDEATHSIG), which stops everything below
    it, the orphaned sleep included (PR_SET_CHILD_SUBREAPER made it the reaper's)."""
    parent, wrapper = _guarded_tree(tmp_path)
    below = reaper.descendants(wrapper)
    assert len(below) == 4
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in [wrapper, *below]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in [wrapper, *below] if _alive(pid)] == []


def test_sigterm_to_a_steps_reaper_stops_its_processes_and_exits_143() -> None:
    command = [sys.executable, "-m", "pipelines.reaper", "--", "sh", "-c", "sleep 301 & (sleep 302 &); sleep 303"]
    wrapper = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 30
    while len(reaper.descendants(wrapper.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    below = reaper.descendants(wrapper.pid)
    assert len(below) == 4
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=10) == 143
    assert [pid for pid in below if _alive(pid)] == []


def test_a_steps_exit_code_passes_through_and_leftovers_are_stopped() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.reaper", "--", "sh", "-c", "(sleep 300 &); exit 3"], cwd=ROOT, timeout=60
    )
    assert done.returncode == 3
    assert time.monotonic() - started < 30  # it did not wait for the orphaned sleep: it stopped it


def test_sigterm_is_remembered_as_well_as_raised() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with local._remembered_ctrl_c() as seen:
        with pytest.raises(local.Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert stopped.value.signum == signal.SIGTERM and stopped.value.exit_code == 143
        assert isinstance(stopped.value, KeyboardInterrupt) and seen == [signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


# --- real runs (kfp.local, every step a process) ----------------------------------------------------------------


def _start(out: Path, tmp_path: Path, *extra: str, rows: int = 60) -> subprocess.Popen[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pipelines", "run", "--output", str(out), "--max-rows", str(rows)]
    command += ["--epochs", "1", *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(process: subprocess.Popen[str], prefix: str) -> list[str]:
    """The lines ``process`` printed up to the first that starts with ``prefix`` (it must come)."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    pytest.fail(f"no line {prefix!r}; printed: {seen}; stderr: {process.stderr.read() if process.stderr else ''}")


def _step_processes(pid: int) -> list[int]:
    """The processes below a run once its step has started them (the step's line comes just before)."""
    deadline = time.monotonic() + 30
    while not (below := reaper.descendants(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # and what they start
    return reaper.descendants(pid) or below


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive ``seconds`` later."""
    time.sleep(seconds)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.integration
def test_two_runs_into_one_output_one_proceeds_and_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    """Both start at the same moment: exactly one runs, the other exits 2 at once naming it. SIGTERM to the
    one that runs (as Kubernetes, systemd and CI send it: to that process alone) stops its steps like Ctrl-C:
    exit 143, summary.json "terminated", the lock released, and no process of the run alive 5 s later."""
    out = tmp_path / "run"
    first, second = _start(out, tmp_path), _start(out, tmp_path)
    codes = {}
    deadline = time.monotonic() + 120
    while not codes and time.monotonic() < deadline:
        codes = {p.pid: p.poll() for p in (first, second) if p.poll() is not None}
        time.sleep(0.1)
    assert list(codes.values()) == [2], codes
    refused = first if first.pid in codes else second
    running = second if refused is first else first
    err = refused.communicate(timeout=30)[1].strip().splitlines()
    assert len(err) == 1 and "is in use by another run" in err[0] and f"pid {running.pid} " in err[0], err
    _wait_for(running, "▶ featurize-reviews")
    assert running.poll() is None
    below = _step_processes(running.pid)
    assert below, "the running step's processes"
    running.send_signal(signal.SIGTERM)
    _, err_text = running.communicate(timeout=60)
    assert running.returncode == 143, err_text
    assert "terminated (SIGTERM)" in err_text and "Traceback" not in err_text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "terminated" and "SIGTERM" in summary["error"]
    assert _gone_within([running.pid, *below], 5) == []
    assert (out / run_dir.LOCK_FILE).read_text() == ""


@pytest.mark.integration
@pytest.mark.slow  # about 25-60 s: runs in CI's `-m slow` pass
def test_kill_9_of_a_run_leaves_no_orphan_and_overwrite_takes_its_directory_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = _start(out, tmp_path)
    _wait_for(run, "▶ check-bias")
    below = _step_processes(run.pid)
    assert below
    run.kill()
    run.communicate(timeout=30)
    assert _gone_within(below, 5) == []
    # The directory of the killed run: refused without --overwrite, taken over with it (and said so).
    again = _start(out, tmp_path)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "killed before it ended" in err and f"pid {run.pid} " in err, err
    takeover = _start(out, tmp_path, "--overwrite")
    printed = _wait_for(takeover, "▶ prepare-reviews")
    assert any(line.startswith("--overwrite: taking over") and f"pid {run.pid} " in line for line in printed)
    takeover.send_signal(signal.SIGINT)
    _, err = takeover.communicate(timeout=60)
    assert takeover.returncode == 130, err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_during_training_of_a_quick_run(tmp_path: Path) -> None:
    """The issue's acceptance, as a user runs it: `--max-rows 300 --epochs 1`, SIGTERM while the model trains."""
    out = tmp_path / "run"
    run = _start(out, tmp_path, rows=300)
    _wait_for(run, "▶ train-classifier")
    below = _step_processes(run.pid)
    time.sleep(3)  # into the training loop
    below = reaper.descendants(run.pid) or below
    assert below
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    assert json.loads((out / "summary.json").read_text())["status"] == "terminated"
    assert _gone_within([run.pid, *below], 5) == []


@pytest.mark.slow
@pytest.mark.integration
def test_a_disk_that_fills_during_the_run_is_one_error_line(tmp_path: Path) -> None:
    """1.2 MB free: the checks pass, the early steps fit, training's model does not. One `error:` line (and
    where the summary is, when it still fits), no traceback, no partial summary left."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (mount / "filler").write_bytes(b"\0" * 400 * 1024)
        run = _start(mount / "run", tmp_path)
        out, err = run.communicate(timeout=900)
        lines = err.strip().splitlines()
        assert run.returncode == 1 and lines[0].startswith("error: ") and len(lines) <= 2, err
        assert "Traceback" not in err + out and "Logging error" not in err + out
        assert list((mount / "run").rglob("*.json.tmp")) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
