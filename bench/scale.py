"""The data path at scale: check → prepare → bias check → featurize → Feast ingest on 100k, 300k and 1M reviews.

    python -m bench scale [--sizes 100000,300000,1000000] [--balance] [--csv PATH] [--workdir DIR]

Data: synthetic reviews drawn from the course CSV (``--csv``, else ``$REVIEWS_CSV``; without it the benchmark
refuses, as the other benchmarks on the course data do: there is no built-in distribution). Each synthetic review
takes every column but the text from a course row drawn at random (rating, class name, division, department, age,
title, ...: the course's mix of classes and ratings, and their joint distribution), and a text of as many words as
that row's review has, each word drawn from the course's words by their frequency (no text where the course row has
none, 3.6 % of rows). So the words-per-review distribution is the course's (and with it, about, the tokens per
review). Made vectorised in chunks of ``--chunk-rows`` (Arrow takes and `binary_join`) and written with Arrow's CSV
writer as a CSV with the course's header, which the prepare step reads as it reads the course CSV.

Each step runs in a process of its own (`bench._scale_step`), calling its core as the KFP component does, in
the pipeline's order, on the previous step's outputs: ``check`` (a local run's data check before the steps,
`prepare_data.core.validate`: not part of the ``total``), ``prepare`` (cleaned + prepared Parquet), ``bias`` (on
the cleaned rows), ``featurize`` (the bundled MiniLM's tokenizer, 128 tokens, 90/5/5 split) and ``ingest`` (the
embedded Feast store: SQLite online, DuckDB over Parquet offline). Per size and step: ``seconds`` (the step's work, its
modules imported first), ``process_seconds`` (the whole process, interpreter start and imports included),
``cpu_seconds`` (user + system of the process and its threads), ``peak_rss_mb`` (the process's VmHWM, MiB)
and ``rows``. ``--before DIR`` runs every step with an earlier version of the steps first, on the same data
(``before`` per size, ``exponents_before``): a change's before and after, under the same load.

Balancing: prepare balances by default in the pipeline (every class down-sampled to the smallest, which passes
on about 30 % of the rows); here it does not (``balance: false``, the demanding case: featurize and ingest see
every unique review) unless ``--balance``.

*value*: the growth exponent of the ``total`` seconds (prepare, bias, featurize, ingest) from the first size to
the last, log(t2/t1)/log(n2/n1) (1.0: linear); *baseline*: the goal, 1.1 (lower is better, so ``ratio`` <= 1
meets it). Also every step's exponent between consecutive sizes and first to last, and ``peak_rss_mb_max`` (any
step, ``check`` included) against the 3 GB goal (3000 MiB here).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bench._course import course_csv
from bench._util import result

#: The steps, in the pipeline's order (see `bench._scale_step`); ``check`` is a local run's data check before them.
STEPS = ("check", "prepare", "bias", "featurize", "ingest")
#: The steps of the pipeline itself (on a cluster too): their sum is the ``total``.
PIPELINE_STEPS = STEPS[1:]
#: The goals (docs: issue 22): time exponent from 100k to 1M, and peak RSS of any step at 1M.
EXPONENT_GOAL = 1.1
PEAK_RSS_GOAL_MB = 3000.0
#: The course CSV's text column (`PrepareConfig.text_column`'s default).
TEXT = "Review Text"


# --- the synthetic reviews ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CourseProfile:
    """What the synthetic reviews are drawn from: the course CSV's rows without their text, and its words."""

    #: The CSV's header names, in order ("" for pandas' unnamed index column).
    header: list[str]
    #: Every column but the text (and the unnamed index), one row per course review.
    meta: pa.Table
    #: Words (whitespace-separated) of each course review's text; -1 where it has none.
    words: np.ndarray
    #: Every word of every review, in order: a uniform draw from it is a draw by word frequency.
    pool: pa.Array


def course_profile(csv: str | Path) -> CourseProfile:
    """Read the course CSV (as pandas reads it, like prepare) into a `CourseProfile`.

    Raises:
        SystemExit: It has no ``Review Text`` column.
    """
    import pandas as pd

    frame = pd.read_csv(csv, low_memory=False)
    if TEXT not in frame.columns:
        raise SystemExit(f"error: {csv} has no {TEXT!r} column; pass the course CSV with --csv")
    header = ["" if str(c).startswith("Unnamed: ") else str(c) for c in frame.columns]
    text = frame[TEXT]
    present = text.notna().to_numpy()
    split = text[present].astype(str).str.split()
    words = np.full(len(frame), -1, dtype=np.int64)
    words[present] = split.str.len().to_numpy()
    pool = pa.array(list(itertools.chain.from_iterable(split)), pa.string())
    meta = frame.drop(columns=[TEXT, *(c for c in frame.columns if str(c).startswith("Unnamed: "))])
    return CourseProfile(header, pa.Table.from_pandas(meta, preserve_index=False), words, pool)


def synthetic_chunk(profile: CourseProfile, rng: np.random.Generator, first: int, rows: int) -> pa.Table:
    """``rows`` synthetic reviews (see the module docstring), numbered from ``first``, in the CSV's column order."""
    drawn = rng.integers(0, len(profile.words), size=rows)
    counts = profile.words[drawn]
    present = counts >= 0
    offsets = np.zeros(rows + 1, dtype=np.int32)  # a chunk holds far fewer than 2**31 words
    np.cumsum(np.where(present, counts, 0), out=offsets[1:])
    words = profile.pool.take(pa.array(rng.integers(0, len(profile.pool), size=int(offsets[-1]))))
    lists = pa.ListArray.from_arrays(pa.array(offsets), words)
    text = pc.if_else(pa.array(present), pc.binary_join(lists, " "), pa.scalar(None, pa.string()))
    meta = profile.meta.take(pa.array(drawn))
    columns = []
    for name in profile.header:
        if name == "":
            columns.append(pa.array(np.arange(first, first + rows, dtype=np.int64)))
        elif name == TEXT:
            columns.append(text)
        else:
            columns.append(meta.column(name))
    return pa.table(columns, names=profile.header)


def write_reviews(path: Path, rows: int, profile: CourseProfile, seed: int = 0, chunk_rows: int = 50_000) -> np.ndarray:
    """Write ``rows`` synthetic reviews to a CSV with the course's header, chunk by chunk; returns the words
    per review of those that have a text."""
    rng = np.random.default_rng(seed)
    writer, words = None, []
    try:
        for first in range(0, rows, chunk_rows):
            chunk = synthetic_chunk(profile, rng, first, min(chunk_rows, rows - first))
            if writer is None:
                writer = pacsv.CSVWriter(str(path), chunk.schema)
            writer.write_table(chunk)
            words.append(words_per_review(chunk.column(TEXT)))
    finally:
        if writer is not None:
            writer.close()
    return np.concatenate(words)


def words_per_review(texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Whitespace-separated words of each non-missing text."""
    present = pc.drop_null(texts)
    return pc.list_value_length(pc.utf8_split_whitespace(present)).to_numpy(zero_copy_only=False)


def length_summary(words: np.ndarray) -> dict[str, float]:
    """Mean and quantiles of words per review."""
    points = (10, 50, 90, 99)
    q = np.percentile(words, points)
    return {"mean": round(float(words.mean()), 2), **{f"p{p}": float(v) for p, v in zip(points, q, strict=True)}}


# --- the growth exponents ----------------------------------------------------------------------------------


def growth_exponent(n1: float, t1: float, n2: float, t2: float) -> float:
    """k in t = c * n**k through (n1, t1) and (n2, t2): log(t2 / t1) / log(n2 / n1) (1.0: linear)."""
    return math.log(t2 / t1) / math.log(n2 / n1)


def exponents(sizes: list[int], seconds: list[float]) -> dict[str, float]:
    """The exponent between each pair of consecutive sizes, and from the first to the last (``"a->b"``)."""
    pairs = list(itertools.pairwise(range(len(sizes))))
    if len(sizes) > 2:
        pairs.append((0, len(sizes) - 1))
    return {
        f"{sizes[i]}->{sizes[j]}": round(growth_exponent(sizes[i], seconds[i], sizes[j], seconds[j]), 3)
        for i, j in pairs
    }


# --- running the steps -------------------------------------------------------------------------------------


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(step: str, spec: dict[str, Any], log: Path, code_dir: str = "") -> dict[str, Any]:
    """Run one step in a process of its own (`bench._scale_step`) and return its figures; with ``code_dir``, the
    step's packages (`components`, `feature_repo`) are imported from there (see ``--before``).

    Raises:
        SystemExit: The step failed (with the end of its log).
    """
    env, cwd = None, None
    if code_dir:  # `python -m` puts the working directory first on sys.path: the steps come from there
        repo = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
        env, cwd = {**os.environ, "PYTHONPATH": path}, code_dir
    cpu, start = _cpu_children(), time.perf_counter()
    with log.open("ab") as sink:
        command = [sys.executable, "-m", "bench._scale_step", step, json.dumps(spec)]
        code = subprocess.call(command, stderr=sink, env=env, cwd=cwd)
    process_seconds, cpu_seconds = time.perf_counter() - start, _cpu_children() - cpu
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench scale: step {step} exited with {code}; the end of its log:\n{tail}")
    figures = json.loads(Path(spec["result"]).read_text())
    return {**figures, "process_seconds": process_seconds, "cpu_seconds": cpu_seconds}


def run_steps(data: Path, root: Path, balance: bool, code_dir: str = "") -> dict[str, Any]:
    """Run every step on the reviews CSV ``data``, outputs under ``root``; the figures of that run."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "cleaned": root / "cleaned.parquet",
        "prepared": root / "prepared.parquet",
        "prepare_report": root / "prepare.json",
        "bias_json": root / "bias.json",
        "bias_html": root / "bias.html",
        "features": root / "features.parquet",
        "features_report": root / "features.json",
        "store": root / "feature_store",
        "ingest_report": root / "ingest.json",
    }
    spec: dict[str, Any] = {"data": str(data), **{k: str(v) for k, v in paths.items()}, "balance": balance}
    steps = {}
    load_start = os.getloadavg()
    for step in STEPS:
        print(f"bench scale: {data.parent.name} {code_dir or 'this checkout'}: {step}", file=sys.stderr, flush=True)
        result_path = str(root / f"{step}.result.json")
        steps[step] = run_step(step, {**spec, "result": result_path}, root / "steps.log", code_dir)
    return {
        "steps": {s: _rounded(f) for s, f in steps.items()},
        "seconds": round(sum(steps[s]["seconds"] for s in PIPELINE_STEPS), 2),
        "process_seconds": round(sum(steps[s]["process_seconds"] for s in PIPELINE_STEPS), 2),
        "seconds_with_check": round(sum(f["seconds"] for f in steps.values()), 2),
        "peak_rss_mb": round(max(f["peak_rss_mb"] for f in steps.values()), 1),
        "loadavg_1m_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
    }


def measure_size(
    rows: int, profile: CourseProfile, root: Path, balance: bool, seed: int, chunk_rows: int, before: str = ""
) -> dict:
    """Generate ``rows`` reviews under ``root`` and run every step on them (first with ``before``'s code, if
    given, then with this checkout's); the figures of this size."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "reviews.csv"
    start = time.perf_counter()
    words = write_reviews(data, rows, profile, seed, chunk_rows)
    generate_seconds = time.perf_counter() - start
    figures: dict[str, Any] = {
        "reviews": rows,
        "csv_mb": round(data.stat().st_size / 1e6, 1),
        "generate_seconds": round(generate_seconds, 2),
        "words_per_review": length_summary(words),
    }
    if before:
        figures["before"] = run_steps(data, root / "before", balance, before)
        shutil.rmtree(root / "before", ignore_errors=True)
    return figures | run_steps(data, root / "steps", balance)


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or sizes != sorted(set(sizes)) or sizes[0] < 1:
        raise SystemExit(f"error: --sizes {text!r}: give two or more increasing review counts, e.g. 100000,1000000")
    return sizes


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--sizes", default="100000,300000,1000000", help="review counts, comma-separated")
    parser.add_argument("--balance", action="store_true", help="prepare balances the classes (the pipeline default)")
    parser.add_argument("--csv", default="", help="the course CSV (default: $REVIEWS_CSV)")
    parser.add_argument("--workdir", default="", help="where each size's files go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep each size's files (default: removed when measured)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="reviews generated per chunk")
    parser.add_argument(
        "--before",
        default="",
        help="also run every step with the steps' code (components/, feature_repo/) in this directory, on the same "
        "data, before this checkout's: a change's before and after (`git archive <commit> components feature_repo "
        "| tar -x -C DIR`)",
    )
    args = parser.parse_args(argv)
    sizes = _sizes(args.sizes)
    csv = course_csv(args.csv)
    profile = course_profile(csv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    measured = []
    for rows in sizes:
        directory = root / f"reviews-{rows}"
        measured.append(measure_size(rows, profile, directory, args.balance, args.seed, args.chunk_rows, args.before))
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    if not args.workdir and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    growth = {step: exponents(sizes, [m["steps"][step]["seconds"] for m in measured]) for step in STEPS}
    growth["total"] = exponents(sizes, [m["seconds"] for m in measured])
    growth["total_process"] = exponents(sizes, [m["process_seconds"] for m in measured])
    growth["total_with_check"] = exponents(sizes, [m["seconds_with_check"] for m in measured])
    before_growth = None
    if args.before:
        before_growth = {
            step: exponents(sizes, [m["before"]["steps"][step]["seconds"] for m in measured]) for step in STEPS
        }
        before_growth["total"] = exponents(sizes, [m["before"]["seconds"] for m in measured])
    whole = f"{sizes[0]}->{sizes[-1]}"
    largest = measured[-1]
    ingest = largest["steps"]["ingest"]
    online = ingest.get("parts_seconds", {}).get("online", 0.0)
    peak = max(m["peak_rss_mb"] for m in measured)
    return result(
        "scale",
        growth["total"][whole],
        EXPONENT_GOAL,
        "time growth exponent (lower is better; goal <= 1.1)",
        sizes=sizes,
        balance=args.balance,
        before=args.before or None,
        course_csv=str(csv),
        course_words_per_review=length_summary(profile.words[profile.words >= 0]),
        exponents=growth,
        exponents_before=before_growth,
        peak_rss_mb_max=peak,
        peak_rss_goal_mb=PEAK_RSS_GOAL_MB,
        meets_goals={"exponent": growth["total"][whole] <= EXPONENT_GOAL, "peak_rss": peak <= PEAK_RSS_GOAL_MB},
        feast_online_write_share_at_largest=round(online / largest["seconds"], 3) if largest["seconds"] else None,
        measured=measured,
        cpu_count=os.cpu_count(),
    )
