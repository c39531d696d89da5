"""`python -m components.tune`: the tune step on this machine (what the KFP component runs, as a CLI).

    python -m components.tune --feature-store runs/x/feature_store --output-dir runs/x/tune \\
        --tuning-trials 8 --tuning-spec my-search.yaml --pipeline-run-id abc123

Every option of `core.TuneConfig` is a flag, and so are the training options each trial gets from the step
(`core.TRIAL_DATA_OPTIONS`).  Writes ``tuning_report.json``, ``trials.parquet`` and ``tuning_report.html``
to ``--output-dir`` (the study database too, unless ``--study-storage`` names one), prints the best
parameters as JSON on stdout.  Exit code 2 on bad input (one ``error:`` line), 1 when too many trials failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from components.common import options
from components.common.logs import configure_logging
from components.tune import core


def parser() -> options.OneLineParser:
    cli = options.OneLineParser(
        prog="python -m components.tune",
        description=__doc__.split("\n")[0],
        formatter_class=options.DefaultsHelpFormatter,
    )
    for f in fields(core.TuneConfig):
        options.add_argument(cli, core.TuneConfig, f.name)
    options.add_arguments(cli.add_argument_group("trial data", core.TrialData.__doc__), core.TrialData)
    cli.add_argument("--output-dir", required=True, help="Reports, trials table, trial directories, study.db.")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    values = vars(parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    configure_logging()
    out = Path(values.pop("output_dir"))
    config, data = core.from_parameters(values)
    try:
        outcome = core.tune(config, data, out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    core.write_outputs(outcome, out / "tuning_report.json", out / "trials.parquet", out / "tuning_report.html")
    print(json.dumps({"best_params": outcome.best_params, "best_value": outcome.best_value}))
    return 0
