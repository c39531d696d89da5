"""`python -m pipelines {run,compile,submit}` — run the pipeline locally, or compile it for a cluster (and submit)."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from components.common.options import DefaultsHelpFormatter, OneLineParser
    from pipelines import parameters, profiles, submit
    from pipelines.container_runner import DEFAULT_PROFILE
    from pipelines.local import RUNNERS

    parser = OneLineParser(prog="python -m pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = sub.add_parser(
        "run",
        help="run the whole pipeline on this machine (kfp.local)",
        formatter_class=DefaultsHelpFormatter,
    )
    run.add_argument(
        "--data",
        help="CSV, TSV or Parquet file of reviews, local path or fsspec URI "
        "(default: synthetic sample reviews generated into the output directory)",
    )
    run.add_argument("--output", type=Path, help="run directory (default: runs/<UTC timestamp>)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier run in --output, or take over that of a killed run (its summary.json goes once "
        "every check has passed)",
    )
    run.add_argument("--verbose", action="store_true", help="print every step's full log (else: runs/<run>/logs/)")
    run.add_argument(
        "--runner",
        choices=RUNNERS,
        default="subprocess",
        help="subprocess: every step in this virtualenv; container: every step in its own container "
        "(`make container-runtime`, `make images`; docs/containers.md)",
    )
    run.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="with --runner container: the cluster profile the steps follow"
    )
    parameters.add_run_flags(run)

    comp = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    comp.add_argument(
        "--target",
        choices=["kfp", "sagemaker"],
        default="kfp",
        help="kfp: every step on Kubeflow; sagemaker: tune, train and deploy on Amazon SageMaker (the profile's "
        "sagemaker section; docs/sagemaker.md)",
    )
    comp.add_argument(
        "--profile",
        default=profiles.DEFAULT_PROFILE,
        help="cluster profile: onprem, eks, cpu, or one of --profiles-file",
    )
    comp.add_argument("--profiles-file", type=Path, help="profiles YAML (default: pipelines/profiles.yaml)")
    comp.add_argument("--output", type=Path, help="YAML file (default: build/pipeline-<target>-<profile>.yaml)")
    submit.add_subcommand(sub)
    return parser


def _one_line(error: BaseException) -> str:
    """An error message on one line (a library's message, e.g. YAML's, may span several)."""
    return " ".join(str(error).split())


def _run(args: argparse.Namespace) -> int:
    from pipelines import local, parameters
    from pipelines.summary import print_ending

    values = {name: getattr(args, name) for name in parameters.DECLARED_IN if hasattr(args, name)}
    options = local.RunOptions(
        data=args.data,
        output=args.output or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"),
        arguments=values,
        overwrite=args.overwrite,
        verbose=args.verbose,
        runner=args.runner,
        profile=args.profile,
    )
    try:
        summary = local.run_pipeline(options)
    except ValueError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except local.PipelineFailed as err:
        summary = options.output / "summary.json"
        print(f"error: {_one_line(err)}\n(summary with status 'failed': {summary})", file=sys.stderr)
        return 1
    except local.OutputUnwritable as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # `local.Stopped`: SIGINT (Ctrl-C) or SIGTERM
        signum = err.signum if isinstance(err, local.Stopped) else signal.SIGINT
        status, _, said = local.STOPPED.get(signum, local.STOPPED[signal.SIGINT])
        print(f"{said} (summary with status {status!r}: {options.output / 'summary.json'})", file=sys.stderr)
        return 128 + signum
    print_ending(summary)
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline, local_images_warning

    output = args.output or Path("build") / f"pipeline-{args.target}-{args.profile}.yaml"
    extra = {"profiles_file": args.profiles_file} if args.profiles_file else {}
    try:
        path = compile_pipeline(output, target=args.target, profile=args.profile, **extra)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Compiled pipeline: {path}")
    warning = local_images_warning(path)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "submit":
        from pipelines.submit import run_subcommand

        return run_subcommand(args)
    return _run(args) if args.command == "run" else _compile(args)


if __name__ == "__main__":
    sys.exit(main())
