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
    chosen = names if argv[0] == "all" else [argv[0]]
    for name in chosen:
        if name not in names:
            print(f"error: no benchmark {name!r}; choose one of {', '.join(names)}", file=sys.stderr)
            return 2
        result = importlib.import_module(f"bench.{name}").main(argv[1:])
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
