"""Contracts written once: ``max_seq_length``'s default is one constant (`components.common.schema`), and the
tune step checks a search against the training options' declaration by import (not by running the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

from components.common import schema, training_options

ROOT = Path(__file__).resolve().parents[2]


def _literal_defaults(name: str, paths: list[Path]) -> list[str]:
    """Where a parameter or dataclass field called ``name`` gets a number literal as its default."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            pairs: list[tuple[str, ast.AST | None]] = []
            if isinstance(node, ast.arguments):
                positional = [*node.posonlyargs, *node.args]
                defaults = [None] * (len(positional) - len(node.defaults)) + list(node.defaults)
                pairs += [(a.arg, d) for a, d in zip(positional, defaults, strict=True)]
                pairs += [(a.arg, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                value = node.value
                if isinstance(value, ast.Call):  # field(default=...) or option(default, ...)
                    keywords = {k.arg: k.value for k in value.keywords}
                    value = keywords.get("default", value.args[0] if value.args else None)
                pairs.append((node.target.id, value))
            for arg, default in pairs:
                if arg == name and isinstance(default, ast.Constant) and isinstance(default.value, int):
                    found.append(f"{path.name}:{default.lineno}")
    return found


def test_max_seq_length_default_is_written_once() -> None:
    sources = sorted(p for d in ("components", "serving", "pipelines") for p in (ROOT / d).rglob("*.py"))
    assert _literal_defaults("max_seq_length", sources) == []
    assert schema.MAX_SEQ_LENGTH == 128
    assert training_options.DataArguments().max_seq_length == 128


def test_the_scan_finds_a_literal_default(tmp_path: Path) -> None:
    """The scan above is not blind: each way a default is written is found."""
    path = tmp_path / "m.py"
    path.write_text(
        "def f(a, max_seq_length: int = 128): ...\n"
        "def g(*, max_seq_length=64): ...\n"
        "class C:\n"
        "    max_seq_length: int = field(default=256, metadata={})\n"
        "    max_seq_length: int = option(32, 'help')\n"
        "    max_seq_length: int = 16\n"
        "def h(max_seq_length: int = schema.MAX_SEQ_LENGTH): ...\n"
    )
    assert _literal_defaults("max_seq_length", [path]) == ["m.py:1", "m.py:2", "m.py:4", "m.py:5", "m.py:6"]
