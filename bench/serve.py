"""Model server speed: batching of concurrent requests, latency, and the server's overhead over a bare forward.

The bundled MiniLM with a new 3-label head (`serving.testing.untrained_classifier`; the figures concern speed,
not accuracy) or ``--model-dir``, served by `python -m serving` on 127.0.0.1 — twice: with the default
batching settings and with ``--max-batch-size 1`` (no batching).  A closed-loop load generator (threads with
keep-alive HTTP connections, bounded by ``--requests`` and ``--max-seconds`` per run) sends one review per
V1 request.  Reviews are synthetic: about 43 words, 50 tokens (38–64); the course's average about 74.

- *value*: requests/s with batching at ``--concurrency`` (16); *baseline*: the same without batching
  (goal: ratio ≥ 3×); p50/p99 latency of both.
- in-process batch gain: ms per review of ``--concurrency`` reviews one at a time vs. in one padded forward
  pass, in this process without any server — the most batching can give for this model on this machine.
- overhead: p50 latency of one request at a time (nothing else in flight) to the batching server vs. p50 of
  a bare forward of the same review in this process (tokenizer + model + softmax, no HTTP, no batcher), in
  pairs (a request, then the bare forward) so both see the same load on a shared machine; goal ≤ 20 %.

``--torch-threads`` (default 1) applies to both servers and the bare forward: on a shared 2-core machine two
OpenMP threads per process next to other jobs make a single forward several times slower (spinning threads
waiting for a core), which would flatter batching.  Throughput runs alternate between the two servers;
every figure is the median of ``--repeat`` runs.
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
    """One review through the tokenizer and the model in this process: batch 1, no server, no batcher."""

    def __init__(self, model_dir: Path, threads: int = 0, max_seq_length: int = schema.MAX_SEQ_LENGTH) -> None:
        import torch

        from components.common import modeling

        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer = modeling.load_trained_classifier(model_dir)
        self.model.eval()
        self.max_seq_length = max_seq_length

    def once_ms(self, text: str) -> float:
        """Milliseconds of one review: tokenize, forward, softmax."""
        import torch

        begin = time.perf_counter()
        with torch.inference_mode():
            encoded = self.tokenizer(text, truncation=True, max_length=self.max_seq_length, return_tensors="pt")
            torch.softmax(self.model(**encoded).logits.float(), dim=-1).numpy()
        return (time.perf_counter() - begin) * 1000

    def batch_ms_per_text(self, texts: list[str]) -> float:
        """Milliseconds per review of one padded forward pass over all of ``texts`` (batching's best case)."""
        import torch

        begin = time.perf_counter()
        with torch.inference_mode():
            encoded = self.tokenizer(
                texts, truncation=True, max_length=self.max_seq_length, padding=True, return_tensors="pt"
            )
            torch.softmax(self.model(**encoded).logits.float(), dim=-1).numpy()
        return (time.perf_counter() - begin) * 1000 / len(texts)


def ceiling(bare: BareForward, texts: list[str], size: int, repeat: int) -> float:
    """How much faster per review one forward pass of ``size`` reviews is than ``size`` passes of one, in this
    process (alternated, medians of ``repeat``): the most batching can give for this model on this machine."""
    single, batched = [], []
    for r in range(repeat):
        group = [texts[(r * size + i) % len(texts)] for i in range(size)]
        single.append(statistics.mean(bare.once_ms(t) for t in group))
        batched.append(bare.batch_ms_per_text(group))
    return statistics.median(single) / statistics.median(batched)


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


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench serve")
    parser.add_argument("--model-dir", default="", help="a model directory (default: bundled MiniLM, new head)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="requests per throughput run at most")
    parser.add_argument("--overhead-requests", type=int, default=100, help="requests per overhead run at most")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit of each run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=0, help="the batching server's (0: its default)")
    parser.add_argument("--max-latency-ms", type=float, default=-1, help="the batching server's (-1: its default)")
    parser.add_argument("--torch-threads", type=int, default=1, help="of both servers and the bare forward (0: all)")
    args = parser.parse_args(argv)

    from serving.config import ServeConfig
    from serving.testing import ServerProcess, untrained_classifier

    defaults = ServeConfig()
    max_batch = args.max_batch_size or defaults.max_batch_size
    max_latency = args.max_latency_ms if args.max_latency_ms >= 0 else defaults.max_latency_ms
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        model_dir = Path(args.model_dir) if args.model_dir else untrained_classifier("", root / "minilm")
        texts = reviews(64)
        bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
        threads = ("--torch-threads", str(args.torch_threads))
        batched = ServerProcess(
            model_dir, root / "batched.log", "--max-batch-size", str(max_batch), "--max-latency-ms", str(max_latency),
            *threads,
        )  # fmt: skip
        single = ServerProcess(
            model_dir, root / "single.log", "--max-batch-size", "1", "--max-latency-ms", "0", *threads
        )  # fmt: skip
        try:
            batched.wait(), single.wait()
            path = "/v1/models/review-sentiment:predict"
            for server in (batched, single):  # warm up: first forwards, connections
                load(server.port, path, bodies, 2, 8, args.max_seconds)
            runs: dict[str, list[dict]] = {"batched": [], "single": [], "overhead": []}
            before = batch_metrics(batched.port, batched.name)
            for _ in range(args.repeat):
                for key, server in (("batched", batched), ("single", single)):
                    runs[key].append(load(server.port, path, bodies, args.concurrency, args.requests, args.max_seconds))
            after = batch_metrics(batched.port, batched.name)
            bare = BareForward(model_dir, args.torch_threads)
            gain = ceiling(bare, texts, args.concurrency, args.repeat + 2)
            for _ in range(args.repeat):
                pairs = paired(batched.port, path, texts, bare, args.overhead_requests, args.max_seconds)
                runs["overhead"].append(pairs)
        finally:
            batched.stop()
            single.stop()

    errors = sum(run.get("errors", 0) for key in runs for run in runs[key])
    if errors:
        first = next(run["first_error"] for key in runs for run in runs[key] if run.get("errors"))
        raise SystemExit(f"{errors} requests failed, e.g. {first}")
    passes = after.get("sentiment_batch_texts_count", 0) - before.get("sentiment_batch_texts_count", 0)
    texts_done = after.get("sentiment_batch_texts_sum", 0) - before.get("sentiment_batch_texts_sum", 0)
    server_ms, bare_ms = _median(runs["overhead"], "p50_ms"), _median(runs["overhead"], "bare_p50_ms")
    # overhead: per run (its pairs saw the same load), then the median of the runs
    overhead = statistics.median(run["p50_ms"] / run["bare_p50_ms"] - 1 for run in runs["overhead"])
    return result(
        "serve",
        _median(runs["batched"], "requests_per_s"),
        _median(runs["single"], "requests_per_s"),
        "requests/s",
        concurrency=args.concurrency,
        torch_threads=args.torch_threads,
        requests_per_run=[run["requests"] for run in runs["batched"]],
        batched={
            "max_batch_size": max_batch,
            "max_latency_ms": max_latency,
            "p50_ms": round(_median(runs["batched"], "p50_ms"), 1),
            "p99_ms": round(_median(runs["batched"], "p99_ms"), 1),
            "mean_batch": round(texts_done / passes, 1) if passes else None,
            "runs_requests_per_s": [round(run["requests_per_s"], 1) for run in runs["batched"]],
        },
        unbatched={
            "p50_ms": round(_median(runs["single"], "p50_ms"), 1),
            "p99_ms": round(_median(runs["single"], "p99_ms"), 1),
            "runs_requests_per_s": [round(run["requests_per_s"], 1) for run in runs["single"]],
        },
        overhead={
            "server_p50_ms": round(server_ms, 2),
            "bare_forward_p50_ms": round(bare_ms, 2),
            "overhead_pct": round(100 * overhead, 1),
            "runs_server_p50_ms": [round(run["p50_ms"], 2) for run in runs["overhead"]],
            "runs_bare_p50_ms": [round(run["bare_p50_ms"], 2) for run in runs["overhead"]],
        },
        in_process_batch_gain=round(gain, 2),
        goals={"ratio": ">= 3", "overhead_pct": "<= 20"},
    )
