"""Bias check speed and memory: our streaming counts vs. `smclarify.bias.report` on the same data.

1. ``--rows`` rows (default 1M) with 10 facet values and 3 labels, as Parquet: our `count_labels` +
   `bias_metrics` (reading the file included) against `smclarify.bias.report.bias_report` on the same
   frame in memory; rows/s of each, and the largest difference between the two sets of metrics.
2. ``--stream-rows`` rows (default 10M) streamed from Parquet in a fresh process: peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench._util import median_seconds, result

FACETS = 10


def write_reviews(path: Path, rows: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """Synthetic (facet, sentiment) rows written in chunks, so making 10M rows needs little memory."""
    rng = np.random.default_rng(seed)
    names = np.array([f"category {i}" for i in range(FACETS)])
    positive_rate = np.linspace(0.5, 0.9, FACETS)
    schema = pa.schema([("product_category", pa.string()), ("sentiment", pa.int8())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            facet = rng.integers(0, FACETS, size=n)
            u = rng.random(n)
            label = np.where(u < positive_rate[facet], 1, np.where(u < positive_rate[facet] + 0.1, 0, -1))
            writer.write_table(
                pa.table({"product_category": names[facet], "sentiment": label.astype(np.int8)}, schema=schema)
            )


def _ours(path: Path) -> dict:
    from components.bias_check import core

    return core.bias_metrics(core.count_labels(str(path), "product_category", "sentiment", 1))


def _smclarify(frame: pd.DataFrame) -> dict:
    from smclarify.bias import report

    out = report.bias_report(
        frame,
        report.FacetColumn("product_category"),
        report.LabelColumn("sentiment", frame["sentiment"], positive_label_values=[1]),
        report.StageType.PRE_TRAINING,
        metrics=["CI", "DPL", "KL", "JS", "LP", "TVD", "KS"],
    )
    return {i["value_or_threshold"]: {m["name"]: m["value"] for m in i["metrics"]} for i in out}


def _peak_rss_mb(path: Path) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of a fresh process that streams ``path`` through the bias check."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss of the parent over fork + exec.
    code = (
        "import re,sys,time; from components.bias_check import core; t=time.perf_counter(); "
        "core.bias_metrics(core.count_labels(sys.argv[1], 'product_category', 'sentiment', 1)); "
        "hwm=re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print(time.perf_counter()-t, int(hwm) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)
    seconds, rss = out.stdout.split()
    return float(rss), float(seconds)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench bias")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stream-rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reviews.parquet"
        write_reviews(path, args.rows)
        ours_s, ours = median_seconds(lambda: _ours(path), args.repeat)
        frame = pd.read_parquet(path).astype({"sentiment": "int64"})
        start = time.perf_counter()
        theirs = _smclarify(frame)
        theirs_s = time.perf_counter() - start
        diff = max(abs(ours[v][m] - theirs[v][m]) for v in theirs for m in theirs[v])
        del frame
        big = Path(tmp) / "big.parquet"
        write_reviews(big, args.stream_rows, seed=1)
        rss_mb, stream_s = _peak_rss_mb(big)
    return result(
        "bias",
        args.rows / ours_s,
        args.rows / theirs_s,
        "rows/s",
        rows=args.rows,
        facet_values=FACETS,
        seconds=round(ours_s, 3),
        smclarify_seconds=round(theirs_s, 2),
        max_abs_diff=diff,
        stream_rows=args.stream_rows,
        stream_seconds=round(stream_s, 2),
        stream_peak_rss_mb=round(rss_mb, 1),
        bench_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
