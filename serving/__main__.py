"""`python -m serving --model-dir DIR [--port N] …`: serve a trained review classifier over HTTP (KServe).

Errors (a bad option, a model directory that does not load, a port in use) are one ``error:`` line and
exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from components.common import options
from serving.config import ServeConfig


def parser() -> options.OneLineParser:
    """One flag per `ServeConfig` field."""
    cli = options.OneLineParser(
        prog="python -m serving",
        description="Serve a trained review classifier over HTTP: KServe V1 and V2 protocols, batched.",
        formatter_class=options.DefaultsHelpFormatter,
    )
    options.add_arguments(cli, ServeConfig)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    config = options.from_mapping(ServeConfig, vars(args))
    sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported; our flags are not its flags
    from serving import server

    try:
        server.serve(config)
    except ValueError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
