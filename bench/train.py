"""Training speed: dynamic padding with length-grouped batches vs. padding every review to 128 tokens, and the
train step's loop vs. a bare PyTorch loop.

1. **Padding** (course data, ``$REVIEWS_CSV``): the bundled MiniLM fine-tuned for one epoch on the same
   ``--train-rows`` reviews (max 128 tokens, batch 32, same seed and steps) twice — once with batches of
   similar-length reviews padded to their longest, once with shuffled batches each padded to 128 as the
   course did — then both models scored on the same held-out reviews (the rest of the balanced set).
   Repeated for ``--seeds`` seeds (which one runs first alternates): value and baseline are the median
   samples/s with dynamic padding and padded to 128; the accuracies compared are the means over the seeds
   (one short run's accuracy moves by a few points with the batch order alone).
2. **Loop overhead**: ``--overhead-steps`` optimizer steps on identical batches, model, optimizer and
   schedule, in the train step (`core.train`: `transformers.Trainer` with our callback's health rules and
   progress lines, the loss and gradient norm read every step) and in a bare loop (collate, forward, backward,
   clip, step); alternated ``--repeat`` times after one warm-up run, medians.

    python -m bench train [--train-rows 1920] [--eval-rows 0] [--seeds 3] [--overhead-steps 20] [--repeat 3]
                          [--skip-padding]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

from bench._course import course_csv, course_features
from bench._util import result


def _fine_tune(
    train: Any, val: Any, out: str, seed: int, lr: float, batch: int, padded: bool = False, max_steps: int = -1
) -> Any:
    """One epoch (or ``max_steps`` steps) of the train step's loop at 128 tokens, checkpoints at the end only."""
    from components.common.training_options import HealthArguments
    from components.train import core

    data_args = core.DataArguments(
        max_seq_length=128, group_by_length=not padded, pad_to_multiple_of=128 if padded else 0
    )
    args = core.TrainingArguments(
        output_dir=out,
        num_train_epochs=1,
        max_steps=max_steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        seed=seed,
        save_steps=0,
        logging_steps=10,
        early_stopping_patience=0,
    )
    return core.train(train, val, core.ModelArguments(""), data_args, args, HealthArguments())


def _accuracy(model_dir: str, rows: Any) -> float:
    from components.common import batching as D
    from components.evaluate import core as evaluate

    examples = D.to_examples(rows, "held-out")
    return float((evaluate.predict(model_dir, examples, 128) == examples.labels).mean())


def _bare_loop(train: Any, steps: int, batch: int, lr: float, seed: int) -> float:
    """Samples/s of a minimal loop over the batches our loop trains on first (same model, optimizer, schedule)."""
    import torch
    from transformers import get_scheduler, set_seed

    from components.common import batching as D
    from components.common import modeling

    examples = D.to_examples(train, "train", 128)
    tokenizer = modeling.load_tokenizer(modeling.bundled_model_path())
    set_seed(seed)
    model = modeling.load_classifier(modeling.bundled_model_path())
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=max(1, steps // 10), num_training_steps=steps)
    collate = D.Collator(examples, tokenizer.pad_token_id)
    batches = D.epoch_batches(examples.lengths, batch, seed, 0)[:steps]
    samples, started = 0, time.perf_counter()
    for indices in batches:
        loss = model(**collate(indices)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        samples += len(indices)
    return samples / (time.perf_counter() - started)


def _our_loop(train: Any, val: Any, steps: int, batch: int, lr: float, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        return _fine_tune(train, val, out, seed, lr, batch, max_steps=steps).metrics["samples_per_second"]


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench train")
    parser.add_argument("--csv", default="")
    parser.add_argument("--train-rows", type=int, default=1920)
    parser.add_argument("--eval-rows", type=int, default=0, help="held-out rows to score (0: all the others)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--overhead-steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="overhead runs of each loop (0: skip that part)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=3, help="padding runs of each kind, seeds seed, seed+1, ...")
    parser.add_argument("--skip-padding", action="store_true")
    args = parser.parse_args(argv)

    from components.train import cli

    cli.configure_logging()
    frame, _ = course_features(course_csv(args.csv), 128, args.seed)
    shuffled = frame.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    per_class = args.train_rows // 3
    train = shuffled.groupby("label_id", group_keys=False).head(per_class).reset_index(drop=True)
    rest = shuffled[~shuffled["review_id"].isin(set(train["review_id"]))].reset_index(drop=True)
    val, held_out = rest.iloc[:96], rest.iloc[96:]
    if args.eval_rows:
        held_out = held_out.iloc[: args.eval_rows]

    padding: dict[str, Any] = {}
    if not args.skip_padding:
        runs: dict[str, list[dict[str, Any]]] = {"dynamic": [], "padded_128": []}
        for i in range(args.seeds):
            order = (("dynamic", False), ("padded_128", True))
            for name, padded in order if i % 2 == 0 else order[::-1]:  # alternate who runs first
                with tempfile.TemporaryDirectory() as out:
                    trained = _fine_tune(train, val, out, args.seed + i, args.learning_rate, args.batch_size, padded)
                    run = {
                        "seed": args.seed + i,
                        "samples_per_second": round(trained.metrics["samples_per_second"], 2),
                        "padding_share": round(trained.metrics["padding_share"], 4),
                        "steps": trained.global_step,
                        "held_out_accuracy": round(_accuracy(trained.model_dir, held_out), 4),
                    }
                runs[name].append(run)
                print(f"{name}: {run}", file=sys.stderr, flush=True)
        for name, done in runs.items():
            padding[name] = {
                "samples_per_second": statistics.median(r["samples_per_second"] for r in done),
                "mean_held_out_accuracy": round(statistics.fmean(r["held_out_accuracy"] for r in done), 4),
                "runs": done,
            }

    overhead: dict[str, Any] = {}
    bare_sps = ours_sps = float("nan")
    if args.repeat:
        _bare_loop(train, min(5, args.overhead_steps), args.batch_size, args.learning_rate, args.seed)  # warm-up
        bare, ours = [], []
        for _ in range(args.repeat):
            bare.append(_bare_loop(train, args.overhead_steps, args.batch_size, args.learning_rate, args.seed))
            ours.append(_our_loop(train, val, args.overhead_steps, args.batch_size, args.learning_rate, args.seed))
            print(f"overhead run: bare {bare[-1]:.2f}, ours {ours[-1]:.2f} samples/s", file=sys.stderr, flush=True)
        bare_sps, ours_sps = statistics.median(bare), statistics.median(ours)
        overhead = {
            "steps": args.overhead_steps,
            "bare_samples_per_second": [round(v, 2) for v in bare],
            "ours_samples_per_second": [round(v, 2) for v in ours],
            "overhead": round(bare_sps / ours_sps - 1, 4),
        }
    if padding:
        value, baseline = padding["dynamic"]["samples_per_second"], padding["padded_128"]["samples_per_second"]
        accuracy_gap = padding["dynamic"]["mean_held_out_accuracy"] - padding["padded_128"]["mean_held_out_accuracy"]
    else:
        value, baseline, accuracy_gap = ours_sps, bare_sps, float("nan")
    return result(
        "train",
        value,
        baseline,
        "samples/s",
        train_rows=len(train),
        held_out_rows=len(held_out),
        padding=padding,
        accuracy_difference_points=round(100 * accuracy_gap, 2) if np.isfinite(accuracy_gap) else None,
        loop_overhead=overhead,
        threads=_threads(),
        load_average=os.getloadavg(),
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()
