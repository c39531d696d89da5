"""Other libraries are used through their public API (issue 20, item 4).

The names below are private parts of Optuna, argparse, Feast and KServe that this project used once.  Each may
appear (as a whole word, in any tracked or new file but this one) only inside its one documented wrapper: a
function whose docstring names the public hook the library lacks and the version it was checked on, with a test
that fails when the library changes (listed beside it).  Most have none: a public way was found.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: private name (regular expression) → the one (file, function) allowed to use it, or None (nowhere).  The
#: wrapper's own test (`PINNED_BY`) may name it too.
PRIVATE: dict[str, tuple[str, str] | None] = {
    r"\b_storage\b": None,  # optuna.Study._storage: we create the RDBStorage ourselves and keep it
    r"\b_trial_id\b": None,  # FrozenTrial._trial_id: BaseStorage.get_trial_id_from_study_id_trial_number
    r"\b_actions\b": None,  # ArgumentParser._actions: parser.set_defaults marks the flags not given
    r"\b_StoreTrueAction\b": None,  # argparse: an off switch is a flag whose default is False
    # argparse has no public hook that decides per argument whether the help shows its default.
    r"\b_get_help_string\b": ("components/common/options.py", "DefaultsHelpFormatter"),
    r"online_read": None,  # Feast's OnlineStore.online_read: FeatureStore.get_online_features
    # KServe's REST server: ModelServer has no hook for a bound socket or for handlers after KServe's own.
    r"\bkserve\.protocol\.rest\.server\b": ("serving/server.py", "kserve_rest_server"),
    r"\bRESTServer\b": ("serving/server.py", "kserve_rest_server"),
    r"\bFASTAPI_APP_IMPORT_STRING\b": ("serving/server.py", "kserve_rest_server"),
    r"\bV1Endpoints\b|\bkserve\.protocol\.dataplane\b": None,  # /invocations is KServe's own predict route
}

#: wrapper file → the test that fails when the library changes under it.
PINNED_BY = {
    "serving/server.py": "tests/serving/test_kserve_rest_server.py",
    "components/common/options.py": "tests/unit/test_no_private_api.py",  # test_the_help_formatter_...
}


def _files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "*.md", "*.toml", "*.yaml"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    here = Path(__file__).resolve()
    return [ROOT / p for p in listed if (ROOT / p).is_file() and (ROOT / p).resolve() != here]


def _function_at(tree: ast.Module, line: int) -> str:
    """The module-level function or class around ``line``; '' outside any."""
    for node in tree.body:
        functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        if isinstance(node, functions) and node.lineno <= line <= (node.end_lineno or node.lineno):
            return node.name
    return ""


def _uses(pattern: str) -> list[tuple[str, str, int]]:
    """(file, enclosing function, line) of every use of ``pattern``."""
    found = []
    for path in _files():
        text = path.read_text(errors="replace")
        lines = [i + 1 for i, line in enumerate(text.splitlines()) if re.search(pattern, line)]
        if not lines:
            continue
        tree = ast.parse(text) if path.suffix == ".py" else None
        relative = str(path.relative_to(ROOT))
        found += [(relative, _function_at(tree, n) if tree else "", n) for n in lines]
    return found


@pytest.mark.parametrize("pattern", list(PRIVATE))
def test_a_private_name_is_used_only_in_its_documented_wrapper(pattern: str) -> None:
    allowed = PRIVATE[pattern]
    tests = {PINNED_BY[allowed[0]]} if allowed else set()
    outside = [use for use in _uses(pattern) if (allowed is None or use[:2] != allowed) and use[0] not in tests]
    assert outside == [], f"{pattern} used outside {allowed or 'any wrapper'}: {outside}"


def test_the_help_formatter_shows_defaults_worth_showing_only() -> None:
    """Fails when argparse stops calling ``_get_help_string`` as `DefaultsHelpFormatter` expects."""
    import argparse

    from components.common.options import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(prog="p", formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--count", type=int, default=3, help="how many")
    parser.add_argument("--name", default=None, help="a name")
    parser.add_argument("--dry-run", action="store_true", help="change nothing")
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True, help="reuse")
    parser.add_argument("--balance", action=argparse.BooleanOptionalAction, default=False, help="balance")
    text = " ".join(parser.format_help().split())
    assert "how many (default: 3)" in text and "reuse (default: True)" in text
    assert "a name --dry-run" in text and "change nothing --cache" in text and text.endswith("balance")
