"""`python -m bench <name> [options]`: run one benchmark and print one JSON object.

Every benchmark prints ``name``, ``value``, ``baseline``, ``ratio`` and ``unit`` (plus its own details);
figures and the commands that reproduce them are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in {"-h", "--help"}:
        print(f"usage: python -m bench {{{','.join(names)},all}} [options]")
        return 0 if argv else 2
    if argv[0] != "all" and argv[0] not in names:
        print(f"error: no benchmark {argv[0]!r}; choose one of {', '.join(names)}", file=sys.stderr)
        return 2
    if argv[0] != "all":
        try:
            print(json.dumps(importlib.import_module(f"bench.{argv[0]}").main(argv[1:])))
        except SystemExit as stop:  # a benchmark refusing its input (a missing CSV, a bad flag value): exit 2
            if not isinstance(stop.code, str):
                raise
            print(stop.code, file=sys.stderr)
            return 2
        return 0
    failed = []
    for name in names:  # one that cannot run here (mfu without a GPU) is reported and the rest go on
        try:
            print(json.dumps(importlib.import_module(f"bench.{name}").main(argv[1:])), flush=True)
        except SystemExit as stop:
            print(f"bench {name}: {stop}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"not run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
