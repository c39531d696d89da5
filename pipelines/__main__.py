"""`python -m pipelines {run,compile}` — run the pipeline locally, or compile it for a cluster."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from components.featurize.core import FeaturizeConfig
from components.prepare_data.core import PrepareConfig

_DEFAULTS = PrepareConfig()
_FEATURIZE = FeaturizeConfig()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline on this machine (kfp.local)")
    run.add_argument(
        "--data",
        help="CSV, TSV or Parquet file of reviews, local path or fsspec URI "
        "(default: synthetic sample reviews generated into the output directory)",
    )
    run.add_argument("--output", type=Path, help="run directory (default: runs/<UTC timestamp>)")
    run.add_argument("--text-column", default=_DEFAULTS.text_column)
    labels = run.add_mutually_exclusive_group()
    labels.add_argument("--rating-column", default=_DEFAULTS.rating_column, help="1–5 star ratings")
    labels.add_argument("--label-column", help="categorical labels: negative/neutral/positive or -1/0/1")
    run.add_argument("--facet-column", default=_DEFAULTS.facet_column, help="column the bias check compares across")
    run.add_argument("--group-column", help="optional group column for the conditional bias metric CDDL")
    run.add_argument(
        "--min-facet-rows", type=int, default=_DEFAULTS.min_facet_rows, help="drop facet values with fewer rows"
    )
    run.add_argument("--no-balance", action="store_true", help="keep the class imbalance (default: balance)")
    run.add_argument("--max-rows", type=int, help="seeded cap on the rows passed on after the bias check")
    run.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    run.add_argument("--max-abs-ci", type=float, default=1.0, help="bias gate on |CI| (default 1.0: off)")
    run.add_argument("--max-abs-dpl", type=float, default=1.0, help="bias gate on |DPL| (default 1.0: off)")
    run.add_argument(
        "--base-model",
        default=_FEATURIZE.base_model,
        help="Hugging Face model id or directory (default: the bundled MiniLM BERT)",
    )
    run.add_argument("--max-seq-length", type=int, default=_FEATURIZE.max_seq_length)
    run.add_argument("--validation-fraction", type=float, default=_FEATURIZE.validation_fraction)
    run.add_argument("--test-fraction", type=float, default=_FEATURIZE.test_fraction)
    run.add_argument("--epochs", type=int, help="training epochs (default: the train step's, 3)")
    run.add_argument("--learning-rate", type=float, help="peak AdamW learning rate (default: the train step's)")
    run.add_argument("--batch-size", type=int, help="reviews per training batch (default: the train step's)")
    run.add_argument(
        "--health-policy", choices=["report", "stop"], default="report", help="what a firing health rule does"
    )
    run.add_argument(
        "--min-accuracy", type=float, default=0.33, help="deploy gate: test accuracy (and not below the champion)"
    )
    run.add_argument(
        "--mlflow-tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else an embedded SQLite store"
    )
    run.add_argument(
        "--feast-config",
        default="local",
        help="`local` (SQLite + Parquet in the run directory) or a feature_store.yaml path",
    )

    comp = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    comp.add_argument("--target", choices=["kfp"], default="kfp", help="kfp: every step on Kubeflow")
    comp.add_argument(
        "--profile", default="onprem", help="cluster profile: onprem, eks, cpu, or one of --profiles-file"
    )
    comp.add_argument("--profiles-file", type=Path, help="profiles YAML (default: pipelines/profiles.yaml)")
    comp.add_argument("--output", type=Path, help="YAML file (default: build/pipeline-<target>-<profile>.yaml)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from pipelines import local
    from pipelines.sample_data import write_sample_csv

    output = args.output or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    data = args.data
    if data is None:
        data = str(write_sample_csv(output / "sample_reviews.csv"))
        print(f"No --data given: using SYNTHETIC sample reviews written to {data}")
    options = local.RunOptions(
        data=data,
        output=output,
        prepare=PrepareConfig(
            text_column=args.text_column,
            rating_column=args.rating_column,
            label_column=args.label_column,
            facet_column=args.facet_column,
            group_column=args.group_column,
            min_facet_rows=args.min_facet_rows,
            balance=not args.no_balance,
            max_rows=args.max_rows,
            seed=args.seed,
        ),
        max_abs_ci=args.max_abs_ci,
        max_abs_dpl=args.max_abs_dpl,
        featurize=FeaturizeConfig(
            base_model=args.base_model,
            max_seq_length=args.max_seq_length,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
        ),
        feast_config=args.feast_config,
        health_policy=args.health_policy,
        min_accuracy=args.min_accuracy,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        **{k: v for k in ("epochs", "learning_rate", "batch_size") if (v := getattr(args, k)) is not None},
    )
    try:
        summary = local.run_pipeline(options)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except local.PipelineFailed as err:
        print(
            f"error: the pipeline failed: {err}\n(summary with status 'failed': {output / 'summary.json'})",
            file=sys.stderr,
        )
        return 1
    print(f"Pipeline succeeded. Summary: {summary.resolve()}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline

    output = args.output or Path("build") / f"pipeline-{args.target}-{args.profile}.yaml"
    extra = {"profiles_file": args.profiles_file} if args.profiles_file else {}
    try:
        path = compile_pipeline(output, target=args.target, profile=args.profile, **extra)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Compiled pipeline: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _run(args) if args.command == "run" else _compile(args)


if __name__ == "__main__":
    sys.exit(main())
