"""The training CLI as a tuning trial sees it: ``python -m components.train``, known only by its interface.

A step may not import another step (the layering contract), and a trial must run the training exactly as a
Katib trial will — the CLI in a process of its own — so the tuner learns the training options from the
CLI itself: `options` reads ``python -m components.train --help`` once (every option's flags and type:
``FLOAT``, ``INT``, ``STR``, ``{choices}`` or a ``--x/--no-x`` switch), and `check_values` runs the
CLI's own parser on the values a search may give (each option's flag repeated with every value, then
``--help``: argparse converts and bounds-checks every occurrence before ``--help`` exits, and trains
nothing).  So names, types, choices and bounds are checked by the declaration of record
(``components/train``'s dataclasses), before any trial starts, without a copy of it here.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODULE = "components.train"
_KINDS = {"FLOAT": "float", "INT": "int", "STR": "str"}
_OPTION_LINE = re.compile(r"^  (--[^\s,]+.*?)(?:\s{2,}|$)")


class TrainingCLIError(RuntimeError):
    """The training CLI could not be asked (not installed, crashed)."""


@dataclass(frozen=True)
class TrainingOption:
    """One option of the training CLI: its name (the dataclass field), flags, and kind."""

    name: str
    flags: tuple[str, ...]
    kind: str  # float, int, str, choice, bool (a --x/--no-x switch) or flag (a plain switch)
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The ``--field-name`` flag."""
        return "--" + self.name.replace("_", "-")


def command(argv: Sequence[str]) -> list[str]:
    """The command line that runs the training CLI with ``argv``."""
    return [sys.executable, "-m", MODULE, *argv]


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "10000"}  # one line per option in --help
    try:
        return subprocess.run(command(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TrainingCLIError(f"Cannot run the training CLI ({' '.join(command(argv))}): {error}") from error


def parse_help(text: str) -> dict[str, TrainingOption]:
    """The options listed by the training CLI's ``--help`` (``-h`` left out), by name."""
    found: dict[str, TrainingOption] = {}
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if not match:
            continue
        parts = [p.strip().split(" ", 1) for p in match.group(1).split(", ")]
        flags = tuple(p[0] for p in parts)
        metavar = parts[0][1] if len(parts[0]) > 1 else ""
        positive = [f for f in flags if not f.startswith("--no-")]
        if positive and any(f.startswith("--no-") for f in flags):
            kind, choices = "bool", ()
        elif metavar.startswith("{"):
            kind, choices = "choice", tuple(metavar.strip("{}").split(","))
        elif metavar:
            kind, choices = _KINDS.get(metavar, "str"), ()
        else:
            kind, choices, positive = "flag", (), list(flags)
        name = positive[-1][2:].replace("-", "_")
        found[name] = TrainingOption(name, flags, kind, choices)
    return found


@functools.cache
def options() -> dict[str, TrainingOption]:
    """Every training option, by name, from ``python -m components.train --help`` (asked once per process).

    Raises:
        TrainingCLIError: The CLI did not answer.
    """
    done = _run(["--help"])
    parsed = parse_help(done.stdout) if done.returncode == 0 else {}
    if not parsed:
        raise TrainingCLIError(
            f"python -m {MODULE} --help failed (exit code {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return parsed


def resolve(name: str, known: Mapping[str, TrainingOption]) -> TrainingOption:
    """The option called ``name``.

    Raises:
        ValueError: No such option; an alias (``batch_size``) names the option's own name.
    """
    if name in known:
        return known[name]
    flag = "--" + name.replace("_", "-")
    for option in known.values():
        if flag in option.flags:
            raise ValueError(f"{name!r} is an alias; use the option's name {option.name!r}")
    raise ValueError(f"{name!r} is no training option; valid: {', '.join(sorted(known))}")


def to_argv(values: Mapping[str, Any], known: Mapping[str, TrainingOption] | None = None) -> list[str]:
    """``--flag value`` pairs for the training CLI (``--x`` / ``--no-x`` for switches)."""
    known = options() if known is None else known
    argv: list[str] = []
    for name, value in values.items():
        option = resolve(name, known)
        if option.kind in ("bool", "flag"):
            on = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
            if option.kind == "flag":
                argv += [option.flags[0]] if on else []
            else:
                argv.append(option.flag if on else "--no-" + option.flag[2:])
        else:
            argv += [option.flag, _text(value)]
    return argv


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def check_values(values: Iterable[tuple[str, Any]]) -> None:
    """Run the training CLI's own parser on every (option name, value) pair, training nothing.

    Raises:
        ValueError: The CLI's own message for the first value it refuses (an unknown choice, a value out of
            the option's bounds, a number that is not one).
    """
    argv: list[str] = []
    known = options()
    for name, value in values:
        argv += to_argv({name: value}, known)
    done = _run([*argv, "--help"])
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        raise ValueError(message.removeprefix("error: "))
