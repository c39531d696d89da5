"""Fine-tune a BERT-style model as a 3-class review-sentiment classifier, on Hugging Face `transformers.Trainer`.

`train` is the whole step as a library call: train and validation feature rows (`input_ids`, `label_id`) in,
a `save_pretrained` directory (weights, config with the id↔label map, tokenizer) out.  Our options (the flags
of ``python -m components.train``) become a `transformers.TrainingArguments` (`hf_arguments`; ``--training-args``
passes any other of its fields through), and `Trainer` does the rest: dynamic padding (`DataCollatorWithPadding`),
fused AdamW with warm-up and decay, gradient clipping, bf16/fp16 mixed precision on CUDA, DDP under `torchrun`,
evaluation, early stopping (`EarlyStoppingCallback`), the best checkpoint as the final model, and checkpoints
(``<output_dir>/checkpoints/checkpoint-<step>``) that a re-run on the same `output_dir` resumes from
(``resume_from_checkpoint``) where it was, data order and random numbers included.  Batches are length-grouped
by `EpochOrder`: the order of `batching.epoch_batches`, a function of (seed, epoch) (Trainer's own
``group_by_length`` sampler draws from the global RNG, so a run resumed in a later epoch would see other batches).
Ours, as one callback (`callbacks.TrainingMonitor`): health rules, progress and metric lines, history, stop reason.
Nothing here imports `kfp` or `mlflow`: metrics go to the optional ``on_log(metrics, step)`` callback.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D
from components.common import options, schema
from components.common.modeling import load_tokenizer, quiet_transformers, resolve_base_model
from components.common.training_options import DataArguments, HealthArguments, ModelArguments, TrainingArguments

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("components.train")
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainResult:
    """What training produced: for the step's Metrics, MLflow and `summary.json` (`training`)."""

    model_dir: str
    base_model: str
    global_step: int
    total_steps: int
    epochs_completed: float
    stop_reason: str
    best_step: int
    metric_for_best_model: str
    metrics: dict[str, float]
    health: dict[str, Any]
    history: list[dict[str, float]]
    resumed_from_step: int | None
    device: str
    precision: str
    world_size: int
    train_rows: int
    validation_rows: int
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Our options that become `transformers.TrainingArguments` fields of the same name.
SAME_NAMES = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "lr_scheduler_type", "max_grad_norm", "seed", "use_cpu", "load_best_model_at_end", "metric_for_best_model",
)  # fmt: skip


def extra_training_args(text: str) -> dict[str, Any]:
    """The `transformers.TrainingArguments` fields of ``--training-args`` (``key=value ...``), typed by
    `transformers.HfArgumentParser`.

    Raises:
        ValueError: Not ``key=value``, no such field, a bad value, or a field that one of our flags sets.
    """
    from transformers import HfArgumentParser
    from transformers import TrainingArguments as HFArguments

    pairs = [word.partition("=") for word in shlex.split(text)]
    ours = {f.name for f in fields(TrainingArguments)} | {"output_dir", "eval_strategy", "save_strategy"}
    try:
        if any(not eq or key in ours for key, eq, _ in pairs):
            raise SystemExit(2)
        argv = [item for key, _, value in pairs for item in (f"--{key}", value)]
        namespace, rest = HfArgumentParser(HFArguments).parse_known_args(["--output_dir", ".", *argv])
        if rest:
            raise SystemExit(2)
    except SystemExit as error:  # (argparse's way of refusing a value)
        raise ValueError(
            f"--training-args {text!r}: give transformers.TrainingArguments fields that none of our flags sets, "
            "as key=value separated by spaces (e.g. 'optim=adamw_torch torch_compile=true')."
        ) from error
    return {key: getattr(namespace, key) for key, _, _ in pairs}


def hf_arguments(args: TrainingArguments, precision: str, cuda: bool) -> Any:
    """The `transformers.TrainingArguments` of our options (``precision``: `modeling.pick_precision`'s name).

    Evaluation and checkpoints share one strategy (``load_best_model_at_end`` needs that): every `eval_steps`
    steps, else at epoch ends; `callbacks.TrainingMonitor` adds the checkpoints every `save_steps`.  Trainer
    logs every step (the health rules look at each); the monitor prints a progress line every `logging_steps`.
    """
    from transformers import TrainingArguments as HFArguments

    strategy = "steps" if args.eval_steps else "epoch"
    settings = dict(
        **{name: getattr(args, name) for name in SAME_NAMES},
        output_dir=str(Path(args.output_dir) / CHECKPOINTS),
        warmup_steps=args.warmup_ratio,  # below 1: a share of the steps
        bf16=precision == "bfloat16",
        fp16=precision == "float16",
        eval_strategy=strategy,
        eval_steps=args.eval_steps or None,
        save_strategy=strategy,
        save_steps=args.eval_steps or None,
        save_total_limit=max(2, args.save_total_limit),  # Trainer deletes the last of 1 at the end; resuming needs it
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,  # a non-finite loss is for the health rules to see
        train_sampling_strategy="sequential",  # `EpochOrder` holds the epoch's length-grouped order
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=cuda,
        full_determinism=args.deterministic and not cuda,
    )
    extras = extra_training_args(args.training_args)
    if clash := sorted(set(extras) & set(settings)):
        raise ValueError(
            f"--training-args {args.training_args!r}: the train step sets {', '.join(clash)} itself (from its own "
            "flags or for its callbacks); give transformers.TrainingArguments fields that none of our flags sets."
        )
    return HFArguments(**settings, **extras)


class EpochOrder:
    """The train split as a map-style dataset in the order of one epoch's batches (`batching.epoch_batches`;
    ``batch_size``: the global batch, over all processes); Trainer's data loader calls `set_epoch`.  A short
    batch goes last, so that Trainer's sequential batches are the same batches."""

    def __init__(self, examples: D.Examples, batch_size: int, seed: int, group_by_length: bool) -> None:
        self.examples, self.batch_size, self.seed, self.group = examples, batch_size, seed, group_by_length
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        batches = D.epoch_batches(self.examples.lengths, self.batch_size, self.seed, epoch, self.group)
        self.order = np.concatenate(sorted(batches, key=lambda b: len(b) < self.batch_size))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.row(self.examples, self.order[i])

    @staticmethod
    def row(examples: D.Examples, i: int) -> dict[str, Any]:
        """One review as Trainer's collator takes it."""
        return {"input_ids": examples.input_ids[i].tolist(), "labels": int(examples.labels[i])}


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``<output_dir>/checkpoints`` (their trainer state, written last, reads back),
    oldest first."""
    found = []
    for path in (Path(output_dir) / CHECKPOINTS).glob("checkpoint-*"):
        try:
            json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        found.append((int(path.name.split("-")[1]), path))
    return [p for _, p in sorted(found)]


def fingerprint(model_name: str, data_args: DataArguments, args: TrainingArguments, world_size: int, rows: int) -> dict:
    """The settings a resumed run must share with the run that wrote the checkpoints."""
    same = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "seed", "max_steps")
    return {"base_model": model_name, "max_seq_length": data_args.max_seq_length, **{k: getattr(args, k) for k in same},
            "group_by_length": data_args.group_by_length, "num_train_epochs": args.num_train_epochs,
            "world_size": world_size, "train_rows": rows}  # fmt: skip


def saved_run(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state, `callbacks.TrainingMonitor`'s saved run) of a checkpoint."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    monitor = state.get("stateful_callbacks", {}).get("TrainingMonitor", {})
    return state, monitor.get("attributes", {}).get("run", {})


def start(output_dir: Path, resume: bool, expected: dict[str, Any], main: bool) -> Path | None:
    """The checkpoint to resume from, or None; clears half-written checkpoints (and all, when not resuming).

    Raises:
        ValueError: The newest checkpoint was written by a run with other settings.
    """
    root, found = output_dir / CHECKPOINTS, checkpoint_dirs(output_dir)
    if main and root.is_dir():
        for path in root.iterdir():
            if not resume or path not in found:
                shutil.rmtree(path, ignore_errors=True)
    if not resume or not found:
        return None
    saved = saved_run(found[-1])[1].get("fingerprint", {})
    differs = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if differs:
        listed = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differs.items())
        raise ValueError(
            f"{output_dir} holds checkpoints of a run with other settings ({listed}). Resume with the same "
            "settings, choose another --output-dir, or pass --no-resume to start over."
        )
    return found[-1]


def export_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, model_dir: Path, check: D.Examples | None = None
) -> dict[str, Any]:
    """The final `save_pretrained` directory with the tokenizer, `label_map.json` and the ONNX models
    (`components.common.onnx_export`: kept where their labels equal PyTorch's on ``check``), replaced atomically.
    Returns the export's report."""
    from components.common import onnx_export

    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    labels = {"id2label": dict(enumerate(D.CLASS_NAMES)), "sentiment": {n: v for v, n in schema.SENTIMENTS.items()}}
    (tmp / "label_map.json").write_text(json.dumps(labels, indent=1))
    exported = onnx_export.export(tmp, check=check)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, model_dir)
    return exported


def train(
    train_rows: Any,
    validation_rows: Any,
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    health_args: HealthArguments | None = None,
    model_dir: str | Path | None = None,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    class_weights: Sequence[float] | None = None,
) -> TrainResult:
    """Fine-tune with `transformers.Trainer` (see the module docstring) and write the final model to
    ``model_dir`` (default ``<output_dir>/model``) with ``training_outcome.json`` beside it for evaluate's gate.
    ``on_log`` is called on the main process with (metrics, step) at progress lines and evaluations.
    ``class_weights`` (per class id, e.g. `batching.balanced_class_weights`): the loss weighted by class.

    Raises:
        ValueError: Bad settings, bad or empty splits (`batching.to_examples`), a base model that is not there or
            has no tokenizer (`modeling.resolve_base_model`, `modeling.load_tokenizer`), features from another
            tokenizer, or checkpoints in ``output_dir`` from a run with other settings.
    """
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, PrinterCallback, set_seed

    from components.common.modeling import first_token_id, load_classifier, pick_precision, weighted_loss
    from components.train.callbacks import CountingTrainer, Throughput, TrainingMonitor, gpu_stats, scores

    health_args = health_args or HealthArguments()
    args.validate()
    health_args.validate()
    options.check_fields(data_args)
    train_examples = D.to_examples(train_rows, "train", data_args.max_seq_length)
    val_examples = D.to_examples(validation_rows, "validation", data_args.max_seq_length)
    name = resolve_base_model(model_args.base_model)
    tokenizer = load_tokenizer(name)
    cuda = torch.cuda.is_available() and not args.use_cpu
    dtype = pick_precision(args.precision, torch.device("cuda" if cuda else "cpu"))
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    hf_args = hf_arguments(args, precision, cuda)
    main, world = hf_args.process_index == 0, hf_args.world_size
    deterministic = torch.are_deterministic_algorithms_enabled()
    set_seed(args.seed)  # (the classifier head's initialisation)
    model = load_classifier(name)
    check = (model.get_input_embeddings().num_embeddings, first_token_id(tokenizer), name)
    D.check_vocabulary(train_examples, "train", *check)
    D.check_vocabulary(val_examples, "validation", *check)
    expected = fingerprint(name, data_args, args, world, len(train_examples))
    if class_weights is not None:
        expected["class_weights"] = [round(float(w), 6) for w in class_weights]
    with hf_args.main_process_first(desc="checkpoints"):
        resume = start(Path(args.output_dir), args.resume, expected, main)
    meter = Throughput(world)
    patience, threshold = args.early_stopping_patience, args.early_stopping_threshold
    early = EarlyStoppingCallback(patience, threshold) if patience else None
    monitor = TrainingMonitor(args, health_args, meter, expected, early, on_log)
    state, saved = saved_run(resume) if resume else ({}, {})
    finished = bool(saved.get("stop_reason"))
    if finished:  # a re-run of a finished run: nothing to train, the result is in its last checkpoint
        monitor.restore(state["stateful_callbacks"], state["max_steps"])
    else:
        pad = data_args.pad_to_multiple_of if data_args.pad_to_multiple_of >= 0 else 8 if cuda else 0
        batch = args.per_device_train_batch_size * world  # the global batch: one per process
        trainer = CountingTrainer(
            model=model,
            args=hf_args,
            data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad or None),
            train_dataset=EpochOrder(train_examples, batch, args.seed, data_args.group_by_length),
            eval_dataset=[EpochOrder.row(val_examples, i) for i in np.argsort(val_examples.lengths, kind="stable")],
            compute_metrics=scores,
            compute_loss_func=weighted_loss(class_weights) if class_weights is not None else None,
            callbacks=[c for c in (early, monitor) if c is not None],
        )
        trainer.meter = meter
        # The classifiers' loss is a batch mean that ignores Trainer's num_items_in_batch, although their forward
        # takes **kwargs: Trainer would scale it by the processes (DDP) and not divide it by accumulation steps.
        trainer.model_accepts_loss_kwargs = False
        trainer.remove_callback(PrinterCallback)
        try:
            with quiet_transformers():  # (no "Writing model shards" bars between the progress lines)
                trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        finally:  # Trainer's full_determinism and our SIGTERM handler are process-wide: back to what they were
            torch.use_deterministic_algorithms(deterministic)
            monitor.signal_stop.uninstall()
        state = asdict(trainer.state)
    global_step = int(state["global_step"])
    best_step = int(state.get("best_global_step") or global_step)
    final_step = best_step if args.load_best_model_at_end else global_step
    model_dir = Path(model_dir) if model_dir else Path(args.output_dir) / "model"
    if main:
        if finished:
            model = load_classifier(str(resume.parent / f"checkpoint-{final_step}"))
        exported = export_model(model, tokenizer, model_dir, val_examples)
        dropped = "; ".join(f"{k} dropped: {v}" for k, v in exported["dropped"].items())
        print(f"ONNX: {', '.join(exported['variants']) or 'none'} ({dropped or 'all kept'})", flush=True)
        outcome = monitor.health.outcome(monitor.stop_reason)
        (model_dir / schema.TRAINING_OUTCOME_FILE).write_text(json.dumps(outcome, indent=1))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    run = monitor.run
    entry = next(h for h in run["history"] if h["step"] == final_step)
    metrics = {
        "train_loss": run["loss_sum"] / run["loss_count"] if run["loss_count"] else float("nan"),
        **{k: v for k, v in entry.items() if k.startswith("eval_")},
        "global_step": float(global_step),
        "best_step": float(best_step),
        "epochs": round(float(state["epoch"]), 4),
        "samples_per_second": meter.samples_per_second(),
        "step_time_s": meter.mean_step() if meter.steps else 0.0,
        "padding_share": meter.padding_share(),
        **monitor.health.metrics(),
        **gpu_stats(hf_args.device),
    }
    return TrainResult(
        model_dir=str(model_dir),
        base_model=name,
        global_step=global_step,
        total_steps=int(state["max_steps"]),
        epochs_completed=metrics["epochs"],
        stop_reason=monitor.stop_reason,
        best_step=best_step,
        metric_for_best_model=args.metric_for_best_model,
        metrics=metrics,
        health=monitor.health.report(),
        history=run["history"],
        resumed_from_step=int(resume.name.split("-")[1]) if resume else None,
        device=str(hf_args.device),
        precision=precision,
        world_size=world,
        train_rows=len(train_examples),
        validation_rows=len(val_examples),
        parameters={**asdict(model_args), **asdict(data_args), **asdict(args), **asdict(health_args)},
    )
