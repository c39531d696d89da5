"""Model server speed per inference backend: PyTorch fp32 (the server before ONNX), ONNX fp32 and ONNX int8.

The bundled MiniLM with a new 3-label head (`serving.testing.untrained_classifier`; the figures concern speed,
not accuracy) or ``--model-dir``, exported to ONNX (`components.common.onnx_export`, fp32 and int8) when it has
no ``onnx/`` yet, served by `python -m serving --backend B` on 127.0.0.1 for each backend B in turn, with the
same batching settings and the same closed-loop load generator (threads with keep-alive HTTP connections,
bounded by ``--requests`` and ``--max-seconds`` per run) sending one review per V1 request.  Reviews are
synthetic: about 43 words, 50 tokens (38–64); the course's average about 74.

Per backend:

- *requests/s* with batching at ``--concurrency`` (16), p50/p99 latency, mean batch;
- *in-process limit*: reviews/s of one padded forward pass of ``--concurrency`` reviews through the same
  backend in this process (tokenize, forward, softmax; no HTTP, no batcher) — what the hardware allows this
  backend; ``server_share`` = server requests/s ÷ that (goal ≥ 0.9);
- *single request*: p50 latency of one request at a time (nothing else in flight), paired with a bare forward
  of the same review in this process (a request, then the bare forward, so both see the same load on a shared
  machine); ``overhead_pct`` = server ÷ bare − 1 (goal ≤ 20 %).

*value*: requests/s of the variant ``auto`` serves (int8 where the model directory has it); *baseline*: PyTorch
fp32's (goal: ratio ≥ 2.5, single-request p50 ≤ 0.5× PyTorch's).  ``--threads`` (default 1) applies to every
server and to the in-process figures: on a shared 2-core machine two threads per process next to other jobs
make a single forward several times slower (spinning threads waiting for a core).  Throughput runs alternate
between the backends' servers (all three run at once, idle but for the one under load); every figure is the
median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._util import result
from components.common import schema
from components.common.inference import VARIANTS


def reviews(count: int, seed: int = 0) -> list[str]:
    """``count`` synthetic reviews of about 43 words (~50 tokens), different from each other."""
    from tests.testing import synthetic_reviews

    texts, _, _ = synthetic_reviews(count * 5, seed=seed)
    return [". ".join(texts[i * 5 : i * 5 + 5]).capitalize() + "." for i in range(count)]


def load(port: int, path: str, bodies: list[bytes], concurrency: int, total: int, max_seconds: float) -> dict:
    """Send up to ``total`` requests from ``concurrency`` threads (each waits for its answer before the next)
    within ``max_seconds``; requests/s, latency percentiles (ms) and errors."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    start_line = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start_line.wait()
        while True:
            i = next(counter)
            if i >= total or time.perf_counter() > deadline[0]:
                break
            begin = time.perf_counter()
            connection.request("POST", path, bodies[i % len(bodies)], {"content-type": "application/json"})
            reply = connection.getresponse()
            body = reply.read()
            latencies.append(time.perf_counter() - begin)
            if reply.status != 200:
                errors.append(f"{reply.status} {body[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    begin = time.perf_counter()
    deadline[0] = begin + max_seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


class BareForward:
    """Reviews through the tokenizer and one backend in this process: no server, no batcher."""

    def __init__(
        self, model_dir: Path, backend: str, threads: int = 0, max_seq_length: int = schema.MAX_SEQ_LENGTH
    ) -> None:
        from components.common import inference

        self.engine = inference.load(model_dir, backend, threads)
        self.max_seq_length = max_seq_length

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        from components.common import modeling

        ids = self.engine.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        return modeling.softmax(self.engine.batch_logits([np.asarray(i, dtype=np.int64) for i in ids]))

    def once_ms(self, text: str) -> float:
        """Milliseconds of one review: tokenize, forward, softmax."""
        begin = time.perf_counter()
        self._probabilities([text])
        return (time.perf_counter() - begin) * 1000

    def batch_ms_per_text(self, texts: list[str]) -> float:
        """Milliseconds per review of one padded forward pass over all of ``texts`` (batching's best case)."""
        begin = time.perf_counter()
        self._probabilities(texts)
        return (time.perf_counter() - begin) * 1000 / len(texts)


def in_process_limit(bare: BareForward, texts: list[str], size: int, repeat: int) -> float:
    """Reviews/s of one forward pass of ``size`` reviews in this process (median of ``repeat``): the most a
    batching server of this backend can answer on this machine."""
    runs = [bare.batch_ms_per_text([texts[(r * size + i) % len(texts)] for i in range(size)]) for r in range(repeat)]
    return 1000 / statistics.median(runs)


def paired(port: int, path: str, texts: list[str], bare: BareForward, count: int, max_seconds: float) -> dict:
    """``count`` pairs (within ``max_seconds``): one request to the server (nothing else in flight), then the
    same review through the bare model here — so both halves of a pair see the same load on the machine."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    server_ms, bare_ms = [], []
    deadline = time.perf_counter() + max_seconds
    for i in range(count + 3):
        if time.perf_counter() > deadline:
            break
        text = texts[i % len(texts)]
        begin = time.perf_counter()
        connection.request("POST", path, json.dumps({"instances": [text]}), {"content-type": "application/json"})
        reply = connection.getresponse()
        body = reply.read()
        elapsed = (time.perf_counter() - begin) * 1000
        if reply.status != 200:
            raise SystemExit(f"the server answered {reply.status}: {body[:200]!r}")
        bare_time = bare.once_ms(text)
        if i >= 3:  # the first pairs warm up
            server_ms.append(elapsed)
            bare_ms.append(bare_time)
    connection.close()
    return {"p50_ms": statistics.median(server_ms), "bare_p50_ms": statistics.median(bare_ms)}


def batch_metrics(port: int, name: str) -> dict[str, float]:
    """Forward passes and texts so far, from the server's /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    values = {}
    for line in text.splitlines():
        for key in ("sentiment_batch_texts_count", "sentiment_batch_texts_sum"):
            if line.startswith(f'{key}{{model_name="{name}"}}'):
                values[key] = float(line.rsplit(" ", 1)[1])
    return values


def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


#: The backends compared, in the order they are shown; ``pytorch`` is the baseline.
BACKENDS = ("pytorch", "onnx", "onnx-int8")


def model_with_onnx(model_dir: str, root: Path) -> Path:
    """``model_dir`` (default: the bundled MiniLM with a new head) with ``onnx/`` (fp32 and int8), exported into
    a copy under ``root`` where the directory has none."""
    import shutil

    from components.common import inference, onnx_export
    from serving.testing import untrained_classifier

    if model_dir and inference.onnx_path(model_dir, int8=True).is_file():
        return Path(model_dir)
    path = root / "model"
    if model_dir:
        shutil.copytree(model_dir, path)
    else:
        untrained_classifier("", path)
    onnx_export.export(path)  # speed only: no label check (an untrained head's labels mean nothing)
    return path


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench serve")
    parser.add_argument("--model-dir", default="", help="a model directory (default: bundled MiniLM, new head)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, of " + ", ".join(BACKENDS))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="requests per throughput run at most")
    parser.add_argument("--overhead-requests", type=int, default=100, help="single requests per run at most")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit of each run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=0, help="the servers' (0: their default)")
    parser.add_argument("--max-latency-ms", type=float, default=-1, help="the servers' (-1: their default)")
    parser.add_argument(
        "--threads", "--torch-threads", type=int, default=1, help="of every server and in-process figure (0: all)"
    )
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        raise SystemExit(f"error: --backends takes a comma-separated list of {', '.join(BACKENDS)}")

    from serving.config import ServeConfig
    from serving.testing import ServerProcess

    defaults = ServeConfig()
    max_batch = args.max_batch_size or defaults.max_batch_size
    max_latency = args.max_latency_ms if args.max_latency_ms >= 0 else defaults.max_latency_ms
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        model_dir = model_with_onnx(args.model_dir, root)
        texts = reviews(64)
        bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
        flags = ("--max-batch-size", str(max_batch), "--max-latency-ms", str(max_latency))
        servers = {
            b: ServerProcess(model_dir, root / f"{b}.log", *flags, "--torch-threads", str(args.threads), "--backend", b)
            for b in backends
        }
        runs: dict[str, dict[str, list]] = {b: {"load": [], "single": []} for b in backends}
        limits: dict[str, float] = {}
        passes: dict[str, tuple[float, float]] = {}
        try:
            for server in servers.values():
                server.wait()
            path = f"/v1/models/{schema.MODEL_NAME}:predict"
            for server in servers.values():  # warm up: first forwards, connections
                load(server.port, path, bodies, 2, 8, args.max_seconds)
            before = {b: batch_metrics(s.port, s.name) for b, s in servers.items()}
            for _ in range(args.repeat):
                for b, server in servers.items():
                    runs[b]["load"].append(
                        load(server.port, path, bodies, args.concurrency, args.requests, args.max_seconds)
                    )
            for b, server in servers.items():
                after = batch_metrics(server.port, server.name)
                count = "sentiment_batch_texts_count"
                passes[b] = (
                    after.get(count, 0) - before[b].get(count, 0),
                    after.get("sentiment_batch_texts_sum", 0) - before[b].get("sentiment_batch_texts_sum", 0),
                )
                bare = BareForward(model_dir, b, args.threads)
                bare.batch_ms_per_text(texts[: args.concurrency])  # warm up
                limits[b] = in_process_limit(bare, texts, args.concurrency, args.repeat + 2)
                for _ in range(args.repeat):
                    runs[b]["single"].append(
                        paired(server.port, path, texts, bare, args.overhead_requests, args.max_seconds)
                    )
        finally:
            for server in servers.values():
                server.stop()

    failed = [run for b in backends for run in runs[b]["load"] if run["errors"]]
    if failed:
        raise SystemExit(f"{sum(r['errors'] for r in failed)} requests failed, e.g. {failed[0]['first_error']}")
    figures = {}
    for b in backends:
        load_runs, single = runs[b]["load"], runs[b]["single"]
        rate = _median(load_runs, "requests_per_s")
        n_passes, n_texts = passes[b]
        figures[VARIANTS[b]] = {
            "requests_per_s": round(rate, 1),
            "p50_ms": round(_median(load_runs, "p50_ms"), 1),
            "p99_ms": round(_median(load_runs, "p99_ms"), 1),
            "mean_batch": round(n_texts / n_passes, 1) if n_passes else None,
            "in_process_reviews_per_s": round(limits[b], 1),
            "server_share": round(rate / limits[b], 2),
            "single_request_p50_ms": round(_median(single, "p50_ms"), 2),
            "bare_forward_p50_ms": round(_median(single, "bare_p50_ms"), 2),
            # per run (its pairs saw the same load), then the median of the runs
            "overhead_pct": round(100 * statistics.median(r["p50_ms"] / r["bare_p50_ms"] - 1 for r in single), 1),
            "runs_requests_per_s": [round(run["requests_per_s"], 1) for run in load_runs],
        }
    served = next((VARIANTS[b] for b in ("onnx-int8", "onnx") if b in backends), VARIANTS[backends[0]])
    base = VARIANTS["pytorch"] if "pytorch" in backends else VARIANTS[backends[0]]
    return result(
        "serve",
        figures[served]["requests_per_s"],
        figures[base]["requests_per_s"],
        "requests/s",
        value_backend=served,
        baseline_backend=base,
        concurrency=args.concurrency,
        threads=args.threads,
        max_batch_size=max_batch,
        max_latency_ms=max_latency,
        requests_per_run=[run["requests"] for run in runs[backends[0]]["load"]],
        single_request_p50_ratio=round(
            figures[served]["single_request_p50_ms"] / figures[base]["single_request_p50_ms"], 2
        ),
        backends=figures,
        goals={"ratio": ">= 2.5", "single_request_p50_ratio": "<= 0.5", "server_share": ">= 0.9"},
    )
