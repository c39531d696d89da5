"""The training loop behind `core.train`: steps, evaluation, early stopping, health rules, checkpoints, resume.

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
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D
from components.common.modeling import autocast, first_token_id, load_classifier, pick_precision, quiet_transformers
from components.train.core import (
    DataArguments,
    Distributed,
    TrainingArguments,
    TrainResult,
    evaluate_split,
    gpu_stats,
    log,
    pick_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from components.train.health import HealthArguments, HealthMonitor

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedTokenizerBase

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Settings a resumed run must share with the run that wrote the checkpoints.
_RESUME_KEYS = (
    "base_model",
    "max_seq_length",
    "group_by_length",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "seed",
    "world_size",
    "total_steps",
    "train_rows",
)


# --- checkpoints ------------------------------------------------------------------------------------


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


# --- the training loop ------------------------------------------------------------------------------


class Trainer:
    """The training loop and its state (`core.train` builds one, resumes it, runs it and finishes it)."""

    def __init__(
        self,
        train_examples: D.Examples,
        val_examples: D.Examples,
        model_name: str,
        tokenizer: PreTrainedTokenizerBase,
        data_args: DataArguments,
        args: TrainingArguments,
        health_args: HealthArguments,
        on_log: Callable[[dict[str, float], int], None] | None,
        dist: Distributed,
    ) -> None:
        import torch
        from transformers import get_scheduler

        self.args, self.data_args, self.dist, self.on_log = args, data_args, dist, on_log
        self.tokenizer, self.model_name = tokenizer, model_name
        self.train_examples, self.val_examples = train_examples, val_examples
        self.device = pick_device(args, dist)
        self.autocast_dtype = pick_precision(args.precision, self.device)
        self.output_dir = Path(args.output_dir)
        seed_everything(args.seed)
        self.model = load_classifier(model_name).to(self.device)
        self.model.train()
        check = (self.model.get_input_embeddings().num_embeddings, first_token_id(tokenizer), model_name)
        D.check_vocabulary(train_examples, "train", *check)
        D.check_vocabulary(val_examples, "validation", *check)

        self.lengths = train_examples.lengths
        per_epoch = len(self._batches(0))
        if per_epoch == 0:
            raise ValueError(
                f"The train split ({len(train_examples)} rows) gives no batch to each of {dist.world_size} processes; "
                "use fewer GPUs or more data."
            )
        self.steps_per_epoch = math.ceil(per_epoch / args.gradient_accumulation_steps)
        self.total_steps = args.max_steps if args.max_steps > 0 else self.steps_per_epoch * args.num_train_epochs
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            fused=self.device.type in ("cuda", "cpu"),  # one kernel over all parameters, not one per tensor
        )
        self.scheduler = get_scheduler(
            args.lr_scheduler_type,
            self.optimizer,
            num_warmup_steps=math.ceil(args.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.health = HealthMonitor(health_args)
        self.state = TrainerState(fingerprint=self._fingerprint())
        self.resumed_from: int | None = None
        self.ddp_model: torch.nn.Module = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)
        pad = data_args.pad_to_multiple_of
        self.collate = D.Collator(train_examples, tokenizer.pad_token_id, pad if pad >= 0 else _auto_pad(self.device))
        self._pending: list[tuple[Any, Any]] = []  # (loss, grad norm) tensors since the last flush
        self._pending_steps: list[int] = []
        self._steps_run = 0
        self._saved_step = -1
        self._samples = 0
        self._tokens = 0
        self._padded_tokens = 0
        self._train_seconds = 0.0
        self._recent: list[tuple[int, float]] = []  # (step, training seconds so far) for the ETA
        self._window_losses: list[float] = []
        self._last_grad_norm = float("nan")

    # -- helpers -------------------------------------------------------------------------------------

    def _batches(self, epoch: int) -> list[np.ndarray]:
        batches = D.epoch_batches(
            self.lengths,
            self.args.per_device_train_batch_size * self.dist.world_size,
            self.args.seed,
            epoch,
            self.data_args.group_by_length,
        )
        # A global batch of world_size × batch rows, split so every process gets a similar-length share.
        if not self.dist.enabled:
            return batches
        usable = [b for b in batches if len(b) >= self.dist.world_size]
        return [np.array_split(b, self.dist.world_size)[self.dist.rank] for b in usable]

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "base_model": self.model_name,
            "max_seq_length": self.data_args.max_seq_length,
            "group_by_length": self.data_args.group_by_length,
            "per_device_train_batch_size": self.args.per_device_train_batch_size,
            "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
            "learning_rate": self.args.learning_rate,
            "seed": self.args.seed,
            "world_size": self.dist.world_size,
            "total_steps": self.total_steps,
            "train_rows": len(self.train_examples),
        }

    def _barrier(self) -> None:
        if self.dist.enabled:
            import torch

            torch.distributed.barrier()

    # -- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write checkpoint-<step> atomically (a temporary directory renamed into place)."""
        import torch

        self._flush()
        self._saved_step = self.state.global_step
        root = self.output_dir / CHECKPOINTS
        final = root / f"checkpoint-{self.state.global_step}"
        tmp = root / f".tmp-checkpoint-{self.state.global_step}"
        if self.dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            with quiet_transformers():
                self.model.save_pretrained(tmp)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), tmp / "scaler.pt")
        self._barrier()
        torch.save(rng_state(), tmp / f"rng_state_{self.dist.rank}.pt")
        self._barrier()
        if self.dist.main:
            self._write_state(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._rotate()
        self._barrier()
        return final

    def _write_state(self, directory: Path) -> None:
        """Write the trainer state JSON into a checkpoint directory (atomically: a reader sees old or new)."""
        if not self.dist.main:
            return
        self.state.health = self.health.state_dict()
        tmp = directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        os.replace(tmp, directory / STATE_FILE)

    def _rotate(self) -> None:
        keep = {self.output_dir / CHECKPOINTS / f"checkpoint-{self.state.best_step}"}
        existing = checkpoint_dirs(self.output_dir)
        keep.update(existing[-self.args.save_total_limit :])
        for path in existing:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def maybe_resume(self) -> None:
        """Load the newest checkpoint when resuming; otherwise clear old checkpoints."""
        import torch

        found = checkpoint_dirs(self.output_dir)
        if self.dist.main:
            for leftover in (self.output_dir / CHECKPOINTS).glob(".tmp-checkpoint-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        if not self.args.resume:
            if found and self.dist.main:
                shutil.rmtree(self.output_dir / CHECKPOINTS)
            self._barrier()
            return
        if not found:
            return
        path = found[-1]
        state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
        differs = {
            k: (state.fingerprint.get(k), self.state.fingerprint[k])
            for k in _RESUME_KEYS
            if state.fingerprint.get(k) != self.state.fingerprint[k]
        }
        if differs:
            listed = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differs.items())
            raise ValueError(
                f"{self.output_dir} holds checkpoints of a run with other settings ({listed}). Resume with the same "
                "settings, choose another --output-dir, or pass --no-resume to start over."
            )
        from safetensors.torch import load_file

        weights = load_file(str(path / "model.safetensors"), device=str(self.device))
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
        if unexpected or [k for k in missing if k not in tied]:
            raise ValueError(
                f"Checkpoint {path} does not fit {self.model_name}: missing {missing}, extra {unexpected}."
            )
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.device))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
        if self.scaler is not None and (path / "scaler.pt").is_file():
            self.scaler.load_state_dict(torch.load(path / "scaler.pt"))
        rng = path / f"rng_state_{self.dist.rank}.pt"
        if rng.is_file():
            set_rng_state(torch.load(rng, weights_only=False))
        self.health.load_state_dict(state.health)
        self.state = state
        self.resumed_from = state.global_step
        if self.dist.main:
            log.info("Resuming from %s (step %d of %d)", path, state.global_step, self.total_steps)

    # -- logging -------------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Move the buffered per-step losses and gradient norms to the CPU (one device sync) and run the
        health rules on them."""
        import torch

        if not self._pending:
            return
        losses = torch.stack([loss for loss, _ in self._pending]).float()
        norms = torch.stack([norm for _, norm in self._pending]).float()
        if self.dist.enabled:
            torch.distributed.all_reduce(losses)
            losses /= self.dist.world_size
        losses_cpu, norms_cpu = losses.cpu().tolist(), norms.cpu().tolist()
        steps = self._pending_steps
        self._pending, self._pending_steps = [], []
        for step, loss, norm in zip(steps, losses_cpu, norms_cpu, strict=True):
            overflow = self.scaler is not None and not math.isfinite(norm)
            for firing in self.health.on_step(step, loss, norm, overflow):
                if self.dist.main:
                    log.warning("health rule %s fired at step %d: %s", firing.rule, firing.step, firing.message)
            if math.isfinite(loss):
                self.state.loss_sum += loss
                self.state.loss_count += 1
                self.state.loss_since_eval_sum += loss
                self.state.loss_since_eval_count += 1
                self._window_losses.append(loss)
            self._last_grad_norm = norm

    def _progress(self, step: int) -> None:
        """A progress line and the numbers for ``on_log`` (main process only)."""
        window, self._window_losses = self._window_losses, []
        if not self.dist.main:
            return
        self._recent = [*self._recent[-4:], (step, self._train_seconds)]
        first_step, first_seconds = self._recent[0]
        mean_step = self._train_seconds / max(1, self._steps_run)
        recent_step = (self._train_seconds - first_seconds) / (step - first_step) if step > first_step else mean_step
        metrics = {
            "loss": sum(window) / len(window) if window else float("nan"),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "grad_norm": self._last_grad_norm,
            "epoch": step / self.steps_per_epoch,
            "samples_per_second": self._samples * self.dist.world_size / self._train_seconds
            if self._train_seconds
            else 0.0,
            "step_time_s": mean_step,
            **self.health.metrics(),
            **gpu_stats(self.device),
        }
        log.info(
            "step %d/%d | epoch %.2f | loss %.4f | lr %.3g | grad %.3g | %.1f samples/s | %.3f s/step | ETA %s",
            step,
            self.total_steps,
            metrics["epoch"],
            metrics["loss"],
            metrics["learning_rate"],
            metrics["grad_norm"],
            metrics["samples_per_second"],
            mean_step,
            _duration((self.total_steps - step) * recent_step),
        )
        if self.on_log:
            self.on_log(metrics, step)

    # -- evaluation and early stopping ---------------------------------------------------------------

    def evaluate(self) -> bool:
        """Evaluate on validation, update best model / early stopping / overfitting; True to stop."""
        self._flush()
        args, state = self.args, self.state
        result = evaluate_split(
            self.model,
            self.val_examples,
            self.tokenizer.pad_token_id,
            args.per_device_eval_batch_size,
            self.device,
            self.autocast_dtype,
            self.dist,
        )
        train_loss = (
            state.loss_since_eval_sum / state.loss_since_eval_count if state.loss_since_eval_count else float("nan")
        )
        state.loss_since_eval_sum, state.loss_since_eval_count = 0.0, 0
        for firing in self.health.on_evaluation(state.global_step, train_loss, result["loss"]):
            if self.dist.main:
                log.warning("health rule %s fired at step %d: %s", firing.rule, firing.step, firing.message)
        value = result[args.metric_for_best_model]
        sign = -1.0 if args.metric_for_best_model == "loss" else 1.0
        improved = state.best_metric is None or sign * (value - state.best_metric) > args.early_stopping_threshold
        if improved:
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
        else:
            state.evals_without_improvement += 1
        state.last_eval_step = state.global_step
        entry = {
            "step": state.global_step,
            "epoch": round(state.global_step / self.steps_per_epoch, 4),
            "train_loss": train_loss,
            **{f"eval_{k}": v for k, v in result.items()},
        }
        state.history.append(entry)
        if self.dist.main:
            log.info(
                "eval at step %d: loss %.4f accuracy %.4f f1_macro %.4f%s",
                state.global_step,
                result["loss"],
                result["accuracy"],
                result["f1_macro"],
                " (best)" if improved else f" (no improvement {state.evals_without_improvement}x)",
            )
            if self.on_log:
                self.on_log({k: v for k, v in entry.items() if k != "step"}, state.global_step)
        patience = args.early_stopping_patience
        if patience and state.evals_without_improvement >= patience and not state.stop_reason:
            state.stop_reason = "early_stopping"
        return bool(state.stop_reason)

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        import torch

        args, state = self.args, self.state
        accum = args.gradient_accumulation_steps
        self._steps_run = 0
        clip_params = [p for p in self.model.parameters() if p.requires_grad]
        done = bool(state.stop_reason) or state.global_step >= self.total_steps
        epoch = state.epoch
        position = state.batches_done_in_epoch  # where a resumed run left off in its epoch
        while not done and epoch < self.num_epochs:
            batches = self._batches(epoch)
            step_started = time.perf_counter()
            while position < len(batches):
                micro = batches[position : min(position + accum, len(batches))]
                total_loss = None
                for i, indices in enumerate(micro):
                    batch = {k: v.to(self.device, non_blocking=True) for k, v in self.collate(indices).items()}
                    sync = i == len(micro) - 1 or not self.dist.enabled
                    with (
                        nullcontext() if sync else self.ddp_model.no_sync(),
                        autocast(self.device, self.autocast_dtype),
                    ):
                        loss = self.ddp_model(**batch).loss
                    scaled = loss / len(micro)
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    total_loss = scaled.detach() if total_loss is None else total_loss + scaled.detach()
                    self._samples += len(indices)
                    self._tokens += int(self.lengths[indices].sum())
                    self._padded_tokens += len(indices) * batch["input_ids"].shape[1]
                position += len(micro)
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                if args.max_grad_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(clip_params, args.max_grad_norm)
                else:
                    norm = torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(p.grad) for p in clip_params if p.grad is not None])
                    )
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                state.epoch, state.batches_done_in_epoch = epoch, position
                self._steps_run += 1
                self._pending.append((total_loss, norm.detach()))
                self._pending_steps.append(state.global_step)
                step = state.global_step
                will_eval = bool(args.eval_steps) and step % args.eval_steps == 0
                will_save = will_eval or (bool(args.save_steps) and step % args.save_steps == 0)
                if step % args.logging_steps == 0 or will_save or position >= len(batches):
                    self._flush()  # waits for the device: part of the step time
                self._train_seconds += time.perf_counter() - step_started
                if step % args.logging_steps == 0:
                    self._progress(step)
                if self.health.should_stop and not state.stop_reason:
                    state.stop_reason = "health:" + self.health.firings[0].rule
                if will_eval:
                    self.evaluate()
                if will_save:
                    self.save_checkpoint()
                if state.stop_reason or step >= self.total_steps:
                    done = True
                    break
                step_started = time.perf_counter()
            if position >= len(batches):  # the epoch is complete
                state.epoch, state.batches_done_in_epoch = epoch + 1, 0
                if state.last_eval_step != state.global_step:
                    self.evaluate()
                if self._saved_step != state.global_step:  # (a resumed run finds the epoch complete)
                    self.save_checkpoint()
                done = done or bool(state.stop_reason)
            epoch += 1
            position = 0
        if state.last_eval_step != state.global_step:
            self.evaluate()
        self._flush()
        if self.health.should_stop and not state.stop_reason:
            state.stop_reason = "health:" + self.health.firings[0].rule
        state.stop_reason = state.stop_reason or "completed"
        if self._saved_step == state.global_step:  # only the stop reason is new: rewrite the state file
            self._write_state(self.output_dir / CHECKPOINTS / f"checkpoint-{state.global_step}")
        else:
            self.save_checkpoint()  # so that a re-run finds the run finished

    def finish(self, model_dir: Path) -> TrainResult:
        """Write the final model (the best one, unless told otherwise) with its tokenizer; return the result."""
        state, args = self.state, self.args
        final_step = state.best_step if args.load_best_model_at_end else state.global_step
        if self.dist.main:
            if final_step != state.global_step:
                from safetensors.torch import load_file

                best = self.output_dir / CHECKPOINTS / f"checkpoint-{final_step}" / "model.safetensors"
                self.model.load_state_dict(load_file(str(best), device=str(self.device)), strict=False)
            tmp = model_dir.with_name(model_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            with quiet_transformers():
                self.model.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
            labels = {"id2label": dict(enumerate(D.CLASS_NAMES)), "sentiment": {n: v for v, n in _sentiments()}}
            (tmp / "label_map.json").write_text(json.dumps(labels, indent=1))
            if model_dir.exists():
                shutil.rmtree(model_dir)
            model_dir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, model_dir)
        self._barrier()
        entry = next(h for h in state.history if h["step"] == final_step)
        seconds, steps = self._train_seconds, self._steps_run
        metrics = {
            "train_loss": state.loss_sum / state.loss_count if state.loss_count else float("nan"),
            **{k: v for k, v in entry.items() if k.startswith("eval_")},
            "global_step": float(state.global_step),
            "best_step": float(state.best_step),
            "epochs": round(state.global_step / self.steps_per_epoch, 4),
            "samples_per_second": self._samples * self.dist.world_size / seconds if seconds else 0.0,
            "step_time_s": seconds / steps if steps else 0.0,
            "padding_share": 1 - self._tokens / self._padded_tokens if self._padded_tokens else 0.0,
            **self.health.metrics(),
            **gpu_stats(self.device),
        }
        return TrainResult(
            model_dir=str(model_dir),
            base_model=self.model_name,
            global_step=state.global_step,
            total_steps=self.total_steps,
            epochs_completed=metrics["epochs"],
            stop_reason=state.stop_reason,
            best_step=state.best_step,
            metric_for_best_model=args.metric_for_best_model,
            metrics=metrics,
            health=self.health.report(),
            history=state.history,
            resumed_from_step=self.resumed_from,
            device=str(self.device),
            precision=str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "fp32",
            world_size=self.dist.world_size,
            train_rows=len(self.train_examples),
            validation_rows=len(self.val_examples),
        )


def _auto_pad(device: torch.device) -> int:
    """Pad to a multiple of 8 on GPU (tensor-core friendly shapes); exactly to the longest review on CPU."""
    return 8 if device.type == "cuda" else 0


def _sentiments() -> Iterator[tuple[int, str]]:
    from components.common import schema

    yield from schema.SENTIMENTS.items()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )
