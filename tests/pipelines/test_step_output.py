"""A step's output reaches ``logs/<step>.log`` (and its progress lines the terminal) while the step runs.

The path is the local run's own: `local._guard_steps` gives every step its command (under `pipelines.reaper`)
and environment, kfp.local's subprocess handler pipes the step's output and prints it line by line, and
`run_log.RunLog` (what the run's stdout is redirected to) writes the step's log file.
"""

from __future__ import annotations

import contextlib
import io
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from components.common import logs
from pipelines import local, run_log

ROOT = Path(__file__).resolve().parents[2]


def _step_env() -> dict[str, str]:
    """The environment `local._guard_steps` gives the real pipeline's steps (all the same)."""
    from pipelines.pipeline import build_pipeline

    executors = local._guard_steps(build_pipeline(profile=None)).pipeline_spec.deployment_spec["executors"]
    envs = []
    for executor in executors.values():
        container = executor["container"]
        assert list(container["command"])[:4] == ["python3", "-m", "pipelines.reaper", "--"]
        envs.append({item["name"]: item["value"] for item in container["env"]} if "env" in container else {})
    assert envs and all(env == envs[0] for env in envs)
    return envs[0]


def test_a_steps_lines_reach_its_log_file_while_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step prints a plain line on stdout (a pipe: block-buffered unless the step's environment says
    otherwise) and a progress line (`logs.Progress`, on stderr), then waits for a file only the test creates:
    both lines must be in ``logs/demo-step.log`` — and the progress line alone on the terminal — while it
    waits. Failed before: the step log was block-buffered (empty until the step ended), and so was the plain
    line in the step's own stdout."""
    from kfp.local import subprocess_task_handler

    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # (the step gets what the run gives it, no more)

    release = tmp_path / "release"
    script = textwrap.dedent(
        f"""
        import os, time
        from components.common.logs import Progress
        print("a plain line of the step")
        Progress("demo").say("a progress line of the step")
        deadline = time.monotonic() + 300
        while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
        """
    )
    command = [sys.executable, "-m", "pipelines.reaper", "--", sys.executable, "-c", script]
    terminal = io.StringIO()
    log = run_log.RunLog(terminal, tmp_path / "logs")
    step_log = tmp_path / "logs" / "demo-step.log"
    codes: list[int] = []
    seen, env = "", _step_env()
    with contextlib.redirect_stdout(log), contextlib.chdir(ROOT):  # (as kfp.local's task lines reach it)
        print("Executing task 'demo-step'")
        step = threading.Thread(target=lambda: codes.append(subprocess_task_handler.run_local_subprocess(command, env)))
        step.start()
        try:
            deadline = time.monotonic() + 120  # a loaded machine starts Python slowly
            while step.is_alive() and time.monotonic() < deadline:
                seen = step_log.read_text() if step_log.exists() else ""
                if "a plain line of the step" in seen and "a progress line of the step" in seen:
                    break
                time.sleep(0.1)
            running = step.is_alive()
        finally:
            release.touch()
            step.join(60)
        print("Task 'demo-step' finished with status SUCCESS")
    log.finish()
    assert running, f"the step ended before its lines were seen in its log: {codes}"
    assert "a plain line of the step" in seen and "a progress line of the step" in seen, seen
    assert codes == [0]
    shown = terminal.getvalue().splitlines()
    progress = [line for line in shown if "a progress line of the step" in line]
    assert len(progress) == 1 and logs.LINE.match(progress[0]), shown
    assert not any("a plain line" in line for line in shown)
    assert shown[0] == "▶ demo-step"
