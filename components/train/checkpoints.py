"""Checkpoints of a training run: write atomically, keep the newest and the best, resume, export the model.

A checkpoint (``<output_dir>/checkpoints/checkpoint-<step>``) holds the model weights, the optimizer,
scheduler and loss-scaler states, every process's RNG states and `TrainerState` (step, epoch, position in
the epoch's batches, loss sums, best metric, early-stopping and health-rule counters, history).  It is
written to a temporary directory and renamed into place, so a killed process leaves either the old or the
new checkpoint, never half of one.  Because an epoch's batch order is a function of (seed, epoch), a
resumed run regenerates it, skips the batches already trained on, and ends exactly where an uninterrupted
run ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.common import batching as D
from components.common import schema
from components.common.modeling import quiet_transformers
from components.train.runtime import Distributed, rng_state, set_rng_state

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedTokenizerBase

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs (saved as JSON in each checkpoint)."""

    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    loss_since_eval_sum: float = 0.0
    loss_since_eval_count: int = 0
    best_metric: float | None = None
    best_step: int = 0
    evals_without_improvement: int = 0
    last_eval_step: int = -1
    stop_reason: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingParts:
    """What a checkpoint holds besides `TrainerState`: the model and the optimisation state."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None


def fingerprint(
    model_name: str, data_args: Any, args: Any, world_size: int, total_steps: int, rows: int
) -> dict[str, Any]:
    """The settings a resumed run must share with the run that wrote the checkpoints (``data_args``,
    ``args``: `core.DataArguments`, `core.TrainingArguments`)."""
    return {
        "base_model": model_name,
        "max_seq_length": data_args.max_seq_length,
        "group_by_length": data_args.group_by_length,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "world_size": world_size,
        "total_steps": total_steps,
        "train_rows": rows,
    }


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


class Checkpoints:
    """The checkpoints of one run under ``<output_dir>/checkpoints``, as seen by one of its processes."""

    def __init__(self, output_dir: Path, dist: Distributed, keep: int) -> None:
        self.output_dir, self.dist, self.keep = output_dir, dist, keep
        self.root = output_dir / CHECKPOINTS

    def path(self, step: int) -> Path:
        return self.root / f"checkpoint-{step}"

    def save(self, state: TrainerState, parts: TrainingParts) -> Path:
        """Write checkpoint-<step> atomically (a temporary directory renamed into place); keep the newest
        ``keep`` and the best one."""
        import torch

        final = self.path(state.global_step)
        tmp = self.root / f".tmp-checkpoint-{state.global_step}"
        if self.dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            with quiet_transformers():
                parts.model.save_pretrained(tmp)
            torch.save(parts.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(parts.scheduler.state_dict(), tmp / "scheduler.pt")
            if parts.scaler is not None:
                torch.save(parts.scaler.state_dict(), tmp / "scaler.pt")
        self.dist.barrier()
        torch.save(rng_state(), tmp / f"rng_state_{self.dist.rank}.pt")
        self.dist.barrier()
        if self.dist.main:
            self.write_state(tmp, state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._rotate(state.best_step)
        self.dist.barrier()
        return final

    def write_state(self, directory: Path, state: TrainerState) -> None:
        """Write the trainer state JSON into a checkpoint directory (atomically: a reader sees old or new)."""
        if not self.dist.main:
            return
        tmp = directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(state), indent=1))
        os.replace(tmp, directory / STATE_FILE)

    def _rotate(self, best_step: int) -> None:
        keep = {self.path(best_step)}
        existing = checkpoint_dirs(self.output_dir)
        keep.update(existing[-self.keep :])
        for path in existing:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def start(self, resume: bool) -> Path | None:
        """The newest checkpoint to resume from, or None; removes half-written ones, and every old one when
        not resuming."""
        found = checkpoint_dirs(self.output_dir)
        if self.dist.main:
            for leftover in self.root.glob(".tmp-checkpoint-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        if not resume:
            if found and self.dist.main:
                shutil.rmtree(self.root)
            self.dist.barrier()
            return None
        return found[-1] if found else None

    def load(
        self, path: Path, fingerprint: dict[str, Any], parts: TrainingParts, device: torch.device, model_name: str
    ) -> TrainerState:
        """Load checkpoint ``path`` into ``parts`` and this process's RNGs; return its `TrainerState`.

        Raises:
            ValueError: It was written by a run with other settings (``fingerprint``), or for another model.
        """
        import torch

        state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
        differs = {k: (state.fingerprint.get(k), v) for k, v in fingerprint.items() if state.fingerprint.get(k) != v}
        if differs:
            listed = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differs.items())
            raise ValueError(
                f"{self.output_dir} holds checkpoints of a run with other settings ({listed}). Resume with the same "
                "settings, choose another --output-dir, or pass --no-resume to start over."
            )
        from safetensors.torch import load_file

        weights = load_file(str(path / "model.safetensors"), device=str(device))
        missing, unexpected = parts.model.load_state_dict(weights, strict=False)
        tied = set(getattr(parts.model, "_tied_weights_keys", None) or [])
        if unexpected or [k for k in missing if k not in tied]:
            raise ValueError(f"Checkpoint {path} does not fit {model_name}: missing {missing}, extra {unexpected}.")
        parts.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
        parts.scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
        if parts.scaler is not None and (path / "scaler.pt").is_file():
            parts.scaler.load_state_dict(torch.load(path / "scaler.pt"))
        rng = path / f"rng_state_{self.dist.rank}.pt"
        if rng.is_file():
            set_rng_state(torch.load(rng, weights_only=False))
        return state

    def load_weights(self, model: torch.nn.Module, step: int, device: torch.device) -> None:
        """Load the model weights of checkpoint-<step> (the best model, at the end)."""
        from safetensors.torch import load_file

        best = self.path(step) / "model.safetensors"
        model.load_state_dict(load_file(str(best), device=str(device)), strict=False)


def export_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> None:
    """The final `save_pretrained` directory with the tokenizer and `label_map.json`, replaced atomically."""
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    labels = {"id2label": dict(enumerate(D.CLASS_NAMES)), "sentiment": {n: v for v, n in schema.SENTIMENTS.items()}}
    (tmp / "label_map.json").write_text(json.dumps(labels, indent=1))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, model_dir)
