"""A local run on the course data, tuning included, prints a line at least every 30 s (issue 21's acceptance)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: The longest silence a user sees on the terminal.
MAX_GAP_S = 30.0


@pytest.mark.slow
def test_a_course_run_with_two_trials_prints_a_line_at_least_every_30_s(tmp_path: Path, reviews_csv: Path) -> None:
    """`python -m pipelines run` on the course CSV with ``--tuning-trials 2`` (a reduced budget: 300 rows, one
    epoch; the bias check still reads all 23k reviews), its terminal read as it prints (stdout and stderr, each
    line stamped with time.monotonic on arrival): no gap between consecutive lines, nor before the first, over
    30 s; each trial's start and end (with its value) among them. Minutes on a loaded 2-core machine. Failed
    before: 600 s of silence during the tune step, one training line at its end."""
    command = [
        sys.executable,
        "-m",
        "pipelines",
        "run",
        "--data",
        str(reviews_csv),
        "--output",
        str(tmp_path / "run"),
        "--max-rows",
        "300",
        "--epochs",
        "1",
        "--tuning-trials",
        "2",
        "--mlflow-tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # (this process reads the lines; the run decides the rest)
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    )
    assert process.stdout is not None
    stamped = [(started, "(started)")]
    for line in process.stdout:
        stamped.append((time.monotonic(), line.rstrip("\n")))
    code = process.wait()
    shown = "\n".join(f"{t - started:7.1f} {line}" for t, line in stamped)
    (tmp_path / "terminal.txt").write_text(shown + "\n")
    assert code == 0, shown[-3000:]
    gaps = sorted(((b[0] - a[0], b[1]) for a, b in itertools.pairwise(stamped)), reverse=True)
    print(f"\n{len(stamped) - 1} lines in {stamped[-1][0] - started:.0f} s; the longest gaps before a line:")
    for gap, line in gaps[:5]:
        print(f"  {gap:5.1f} s  {line[:100]}")
    assert gaps[0][0] <= MAX_GAP_S, shown
    lines = [line for _, line in stamped]
    for trial in ("trial-0000", "trial-0001"):  # its start, and its end with its value
        assert any(f"{trial}: started: learning_rate=" in line for line in lines), shown
        ended = re.compile(rf"{trial}: (complete|pruned) after \d+ evaluation\(s\), \d+ s, last [\w-]+ \d\.\d{{4}}$")
        assert any(ended.search(line) for line in lines), shown
    assert any(line.startswith("✓ tune-hyperparameters") for line in lines), shown
    assert (tmp_path / "run" / "summary.json").is_file()
