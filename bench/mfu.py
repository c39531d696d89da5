"""GPU throughput and model FLOPs utilisation (MFU) of the train step's loop: roberta-base, bf16, seq 128.

The train step itself (`components.train.core.train`: `transformers.Trainer` with length grouping, AMP, fused
AdamW, and our callback's health rules and progress lines) fine-tunes a roberta-base-shaped classifier on
synthetic reviews that are all ``--seq-length`` tokens long, for ``--warmup-steps`` + ``--steps`` optimizer
steps.  *value*: samples/s over the steps after the warm-up (from the step's own timing: the optimizer steps'
seconds, each ending when Trainer reads its loss from the GPU); *baseline*: the samples/s at which the GPU
would run at its peak dense bf16 throughput, so *ratio* is the MFU.

FLOPs per training sample: 6 × non-embedding parameters × tokens — forward (2) plus backward (4) per
parameter and token, attention scores left out; ≈ 66 GFLOP for roberta-base at 128 tokens.  The peak is
looked up from the GPU's name (`PEAK_BF16_TFLOPS`) or given with ``--peak-tflops``.

Without ``--base-model`` the weights are random (`RobertaConfig()` is roberta-base's shape), which needs
no download — throughput does not depend on the weights; ``--base-model roberta-base`` (local Hugging
Face cache) or a model directory uses real ones.  Needs a CUDA GPU; ``--allow-cpu`` runs the same code on
the CPU (a smoke test; give ``--peak-tflops``).

    python -m bench mfu [--base-model ID|DIR] [--batch-size 64] [--seq-length 128] [--steps 60]
                        [--warmup-steps 10] [--precision bf16] [--peak-tflops T] [--allow-cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench._util import result

#: Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, by a part of `torch.cuda.get_device_name()`;
#: the first match wins, so the more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H200",), 989.4),
    (("H100", "NVL"), 835.0),
    (("H100", "PCIE"), 756.0),
    (("H100",), 989.4),  # SXM5 (name "NVIDIA H100 80GB HBM3")
    (("A100",), 312.0),
    (("L40S",), 362.05),
    (("L4",), 121.0),
)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, or None when it is not in `PEAK_BF16_TFLOPS`."""
    name = device_name.upper()
    for parts, tflops in PEAK_BF16_TFLOPS:
        if all(part in name for part in parts):
            return tflops
    return None


def random_roberta_base(directory: Path) -> str:
    """A roberta-base-shaped classifier with random weights, saved with a tokenizer the loop can use.

    The tokenizer is the bundled BERT's (its ids fit RoBERTa's larger vocabulary); the loop only needs its
    padding and first-token ids — the synthetic reviews are token ids already.
    """
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    from components.common import modeling

    torch.manual_seed(0)
    with modeling.quiet_transformers():
        RobertaForSequenceClassification(RobertaConfig(num_labels=3)).save_pretrained(directory)
        AutoTokenizer.from_pretrained(modeling.bundled_model_path()).save_pretrained(directory)
    return str(directory)


def model_size(model_dir: str) -> tuple[int, int]:
    """(non-embedding parameters, vocabulary size): the parameters every token uses — all but the input
    embeddings (word, position, token type) — and the number of token ids the model accepts."""
    from components.common import modeling

    model = modeling.load_classifier(model_dir)
    embeddings = model.base_model.embeddings
    params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in embeddings.parameters())
    return params, model.get_input_embeddings().num_embeddings


def synthetic_reviews(rows: int, seq_length: int, vocab_size: int, tokenizer: Any, seed: int) -> Any:
    """Feature rows of exactly ``seq_length`` tokens: [first] random ids [last], balanced labels."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    first, last = tokenizer.cls_token_id or 0, tokenizer.sep_token_id or 2
    high = min(vocab_size, len(tokenizer))
    ids = rng.integers(1000, high, size=(rows, seq_length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = first, last
    return pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(rows)],
            "input_ids": list(ids),
            "label_id": np.arange(rows) % 3,
        }
    )


def steady_rate(log: list[tuple[int, float]], batch: int, after_step: int) -> float:
    """Samples/s between the first progress line at or after ``after_step`` and the last one.

    ``log`` holds (step, cumulative samples/s) of the progress lines; the loop's cumulative figure is
    samples / training seconds, so each line gives the training seconds up to its step.
    """
    points = [(step, step * batch / sps) for step, sps in log if sps > 0]
    window = [p for p in points if p[0] >= after_step]
    if len(window) < 2:
        raise ValueError(
            f"Too few progress lines after step {after_step} to time ({len(window)}); raise --steps or lower "
            "--log-every."
        )
    (first_step, first_s), (last_step, last_s) = window[0], window[-1]
    return (last_step - first_step) * batch / (last_s - first_s)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench mfu")
    parser.add_argument("--base-model", default="", help="empty: roberta-base's shape with random weights")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps after the warm-up")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32", "auto"])
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="0: look it up from the GPU's name")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (smoke)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    import torch

    from components.common import modeling
    from components.common.training_options import HealthArguments
    from components.train import cli, core

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("error: bench mfu needs a CUDA GPU (torch.cuda.is_available() is False); --allow-cpu smokes")
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or peak_tflops(device_name)
    if not peak:
        raise SystemExit(f"error: no known bf16 peak for {device_name!r}; pass --peak-tflops")
    if args.warmup_steps % args.log_every or args.steps % args.log_every:
        raise SystemExit("error: --warmup-steps and --steps must be multiples of --log-every")

    cli.configure_logging()
    progress: list[tuple[int, float]] = []
    last: dict[str, float] = {}

    def on_log(metrics: dict[str, float], step: int) -> None:
        if "samples_per_second" in metrics:  # progress lines (evaluations log other figures)
            progress.append((step, metrics["samples_per_second"]))
            last.update(metrics)

    with tempfile.TemporaryDirectory() as tmp:
        if args.base_model:
            model_dir = modeling.resolve_base_model(args.base_model)
        else:
            model_dir = random_roberta_base(Path(tmp) / "base")
        tokenizer = modeling.load_tokenizer(model_dir)
        params, vocab = model_size(model_dir)
        total_steps = args.warmup_steps + args.steps
        train = synthetic_reviews(total_steps * args.batch_size, args.seq_length, vocab, tokenizer, args.seed)
        validation = synthetic_reviews(args.batch_size, args.seq_length, vocab, tokenizer, args.seed + 1)
        trained = core.train(
            train,
            validation,
            core.ModelArguments(model_dir),
            core.DataArguments(max_seq_length=args.seq_length),
            core.TrainingArguments(
                output_dir=str(Path(tmp) / "out"),
                max_steps=total_steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=2e-5,
                precision=args.precision,
                use_cpu=args.allow_cpu and not torch.cuda.is_available(),
                seed=args.seed,
                save_steps=0,
                logging_steps=args.log_every,
                early_stopping_patience=0,
                load_best_model_at_end=False,
            ),
            HealthArguments(health_policy="report"),
            on_log=on_log,
        )
    samples_per_second = steady_rate(progress, args.batch_size, args.warmup_steps)
    flops_per_sample = 6 * params * args.seq_length
    peak_samples_per_second = peak * 1e12 / flops_per_sample
    gpu_memory = last.get("gpu_max_memory_allocated_mb")
    return result(
        "mfu",
        samples_per_second,
        peak_samples_per_second,
        "samples/s (ratio = MFU)",
        goal=0.40,
        mfu=round(samples_per_second / peak_samples_per_second, 4),
        device=device_name,
        peak_bf16_tflops=peak,
        achieved_tflops=round(samples_per_second * flops_per_sample / 1e12, 2),
        gflop_per_sample=round(flops_per_sample / 1e9, 2),
        non_embedding_parameters=params,
        model=args.base_model or "roberta-base shape (RobertaConfig(), random weights)",
        precision=trained.precision,
        batch_size=args.batch_size,
        seq_length=args.seq_length,
        timed_steps=args.steps,
        warmup_steps=args.warmup_steps,
        gpu_max_memory_allocated_mb=round(gpu_memory, 1) if gpu_memory else None,
        gpu_utilization_pct=last.get("gpu_utilization_pct"),
        threads=torch.get_num_threads(),
        load_average=os.getloadavg(),
    )
