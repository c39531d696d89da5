"""One step of `python -m bench scale`, in a process of its own: ``python -m bench._scale_step STEP SPEC``.

SPEC is a JSON object of paths (and ``balance``). The step's core is called as its KFP component calls it
(same functions, same arguments; only the KFP Metrics and summary_md are left out), after the step's modules
are imported, and the child writes one JSON object to ``SPEC["result"]``: the step's seconds (imports not
included), its peak RSS (VmHWM of this process: the kernel's high-water mark of the step's own address space,
interpreter and libraries included) and its row counts.

``check`` is the local run's data check before any step (`pipelines.local`: `prepare_data.core.validate`, the
whole prepare in memory, nothing written).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Modules each step imports before its clock starts (its own and the libraries it loads lazily).
IMPORTS = {
    "check": ("components.prepare_data.core", "fsspec", "pandas"),
    "prepare": ("components.prepare_data.core", "fsspec", "pandas", "pyarrow.parquet"),
    "bias": ("components.bias_check.core", "components.common.report_html", "fsspec", "pyarrow.parquet"),
    "featurize": ("components.featurize.core", "tokenizers", "transformers"),
    "ingest": (
        "components.feast_ingest.core",
        "feast",
        "feast.infra.offline_stores.duckdb",
        "feast.infra.online_stores.sqlite",
        "feature_repo.review_features",
    ),
}


def _prepare_config(spec: dict[str, Any]) -> Any:
    from components.prepare_data.core import PrepareConfig

    return PrepareConfig(balance=bool(spec["balance"]))


def _check(spec: dict[str, Any]) -> dict[str, Any]:
    from components.prepare_data import core

    report = core.validate(spec["data"], _prepare_config(spec))
    return {"rows": report.rows_in, "rows_out": report.rows_out}


def _prepare(spec: dict[str, Any]) -> dict[str, Any]:
    from components.prepare_data import core

    report = core.run(spec["data"], _prepare_config(spec), spec["cleaned"], spec["prepared"], spec["prepare_report"])
    return {
        "rows": report.rows_in,
        "rows_clean": report.rows_clean,
        "rows_out": report.rows_out,
        "dropped_duplicate": report.dropped_duplicate,
        "dropped_conflicting_label": report.dropped_conflicting_label,
    }


def _bias(spec: dict[str, Any]) -> dict[str, Any]:
    from components.bias_check import core
    from components.common import schema

    path = spec["cleaned"]
    group = schema.GROUP if schema.GROUP in core.columns_of(path) else None
    report = core.run(path, schema.FACET, schema.LABEL, schema.POSITIVE_LABEL, group, core.BiasGates())
    core.write_outputs(report, spec["bias_json"], spec["bias_html"])
    return {"rows": report.rows, "facet_values": len(report.facet_rows)}


def _featurize(spec: dict[str, Any]) -> dict[str, Any]:
    from components.featurize import core

    config = core.FeaturizeConfig()
    report = core.run(spec["prepared"], spec["features"], config, spec["features_report"], core.parse_timestamp(""))
    return {"rows": report.rows, "token_length": report.token_length}


def _ingest(spec: dict[str, Any]) -> dict[str, Any]:
    from components.feast_ingest import core

    config = core.IngestConfig(store_dir=spec["store"], feast_config="local", offline_path="")
    report = core.ingest(spec["features"], config)
    core.write_report(report, spec["ingest_report"])
    return {"rows": report.rows_written, "parts_seconds": report.seconds, "online_write": report.online_write}


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "check": _check,
    "prepare": _prepare,
    "bias": _bias,
    "featurize": _featurize,
    "ingest": _ingest,
}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def main(argv: list[str]) -> int:
    step, spec = argv[0], json.loads(argv[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.pop("FEAST_OFFLINE_PATH", None)
    for module in IMPORTS[step]:
        importlib.import_module(module)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    found = STEPS[step](spec)
    seconds = time.perf_counter() - start
    figures = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "import_peak_rss_mb": rss_before, **found}
    Path(spec["result"]).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
