"""`python -m serving --model-dir DIR [--port N] …`: serve a trained review classifier over HTTP (KServe).

`python -m serving serve [flags]` is SageMaker's hosting contract (a bring-your-own container is started with
the argument ``serve`` and nothing else): the model SageMaker unpacked at ``/opt/ml/model``, every interface,
port 8080 (``$SAGEMAKER_BIND_TO_PORT`` where SageMaker sets it), then any option from the environment as
``SERVING_<OPTION>`` (CreateModel's ``Environment``, e.g. ``SERVING_MAX_SEQ_LENGTH=256``), then the flags
after ``serve``; a later one wins.  The server answers SageMaker's ``GET /ping`` and ``POST /invocations``
beside KServe's routes (`serving.server.add_sagemaker_routes`).

Errors (a bad option, a model directory that does not load, a port in use) are one ``error:`` line and
exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence

from components.common import options
from serving.config import ServeConfig

#: The argument SageMaker starts a serving container with.
SERVE_COMMAND = "serve"
#: Where SageMaker unpacks the model data (model.tar.gz) in a serving container.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
#: `serve` reads option ``max_seq_length`` from ``SERVING_MAX_SEQ_LENGTH``, and so on.
ENV_PREFIX = "SERVING_"


def parser() -> options.OneLineParser:
    """One flag per `ServeConfig` field."""
    cli = options.OneLineParser(
        prog="python -m serving",
        description="Serve a trained review classifier over HTTP: KServe V1 and V2 protocols, batched.",
        formatter_class=options.DefaultsHelpFormatter,
    )
    options.add_arguments(cli, ServeConfig)
    return cli


def serve_argv(flags: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The flags of `python -m serving serve ``flags```: SageMaker's defaults, then the ``SERVING_<OPTION>``
    variables of ``environ``, then ``flags`` (argparse keeps the last of a repeated flag)."""
    port = environ.get("SAGEMAKER_BIND_TO_PORT", "").strip() or "8080"
    argv = ["--model-dir", SAGEMAKER_MODEL_DIR, "--host", "0.0.0.0", "--port", port]
    for field in dataclasses.fields(ServeConfig):
        value = environ.get(ENV_PREFIX + field.name.upper())
        if value is None:
            continue
        if options.value_type(ServeConfig, field.name)[0] is bool:
            argv += options.to_argv({field.name: value.strip().lower() in ("1", "true", "yes")})
        else:
            argv += [options.flag(field.name), value]
    return [*argv, *flags]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [SERVE_COMMAND]:
        arguments = serve_argv(arguments[1:], os.environ)
    args = parser().parse_args(arguments)
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
