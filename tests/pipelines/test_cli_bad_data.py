"""`python -m pipelines run` on bad review files: exit 2, one `error:` line naming the file or flag and the
fix, no traceback, nothing written.

Each case calls the CLI's `main` (one also runs it as a separate process, as a user would); the rules
themselves are tested on `components.prepare_data.core` in tests/unit/test_prepare_data.py.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
HEADER = b"Review Text,Rating,Class Name\n"
ROWS = b"nice dress,5,Dresses\nbad knit,1,Knits\nok skirt,3,Skirts\n"


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _file(name: str, content: bytes):
    def make(tmp_path: Path) -> str:
        path = tmp_path / name
        path.write_bytes(content)
        return str(path)

    return make


def _gs_uri(tmp_path: Path) -> str:
    if importlib.util.find_spec("gcsfs"):
        pytest.skip("gcsfs is installed here, so a gs:// URI does not show the missing-package error")
    return "gs://reviews-bucket/reviews.csv"


def _fifo(tmp_path: Path) -> str:
    import os

    path = tmp_path / "reviews.csv"
    os.mkfifo(path)
    return str(path)


# (case id, make the --data value, extra flags, what the error line must say besides the file or flag)
CASES = [
    ("no-filesystem-package", _gs_uri, [], ["--data", "pip install gcsfs"]),
    (
        "unreachable",
        lambda tmp_path: f"http://127.0.0.1:{_closed_loopback_port()}/reviews.csv",
        [],
        ["cannot be reached", "Cannot connect to host 127.0.0.1", "--data"],
    ),
    (
        "numbers-as-text",
        _file("reviews.csv", HEADER + ROWS),
        ["--text-column", "Rating"],
        ["--text-column 'Rating'", "not review text", "Columns that hold text: 'Review Text', 'Class Name'"],
    ),
    ("binary", _file("reviews.csv", bytes(range(128)) * 40), [], ["is binary, not CSV text", "Pass --data"]),
    (
        "cut-short",
        _file("reviews.csv", HEADER + ROWS + b'nice top,4,"Kni'),
        [],
        ["looks cut short at line 5", "Download or export the file again"],
    ),
    (
        "duplicated-column",
        _file("reviews.csv", b"Review Text,Rating,Class Name,Rating\n" + ROWS),
        [],
        ["duplicated column name(s): 'Rating'", "Rename the columns"],
    ),
    ("fifo", _fifo, [], ["is not a regular file (a named pipe (FIFO))", "Save it to a file"]),
    (
        "ragged-semicolons",
        _file("reviews.csv", b"Review Text;Rating;Class Name\nnice;5;Dresses\nbad;1;Knits;extra\n"),
        [],
        ["read as semicolon-separated (detected in its first lines; its suffix says comma)", "line 3"],
    ),
]


@pytest.mark.parametrize(("make_data", "flags", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_fails_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_data, flags: list[str], says: list[str]
) -> None:
    data = make_data(tmp_path)
    output = tmp_path / "out"
    assert main(["run", "--data", data, "--output", str(output), *flags]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert data in lines[0] or any(flag in lines[0] for flag in ("--data", "--text-column"))
    for text in says:
        assert text in lines[0]
    assert not output.exists()


def test_the_real_process_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    """The same through a separate process, as a user runs it (one case: each process takes seconds)."""
    data = _file("reviews.csv", b"Review Text,Rating,Class Name,Rating\n" + ROWS)(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--data", data, "--output", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "duplicated column name(s): 'Rating'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
