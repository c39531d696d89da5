"""The training loop behind `core.train`: epochs of optimizer steps, evaluation and early stopping, health
rules, progress lines; checkpoints and resume through `components.train.checkpoints`.

`Trainer.run` is the epoch loop: `_run_epoch` takes optimizer steps (`_optimizer_step`) and after each one
does what is due (`_after_step`: progress line, health stop, `evaluate`, `save_checkpoint`); `_end_epoch`
evaluates and checkpoints at an epoch's end and `_end_run` at the end of training.

`core` imports this module, never the other way round (the layering check forbids import cycles, type-only
ones included), so the `core.DataArguments` and `core.TrainingArguments` that `Trainer` takes are typed `Any`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D
from components.common import schema, trial_metrics
from components.common.modeling import autocast, first_token_id, load_classifier, pick_precision
from components.train.checkpoints import Checkpoints, TrainerState, TrainingParts, export_model, fingerprint
from components.train.evaluation import evaluate_split, record_evaluation
from components.train.health import HealthMonitor
from components.train.progress import Throughput
from components.train.runtime import (
    Distributed,
    auto_pad,
    build_optimizer,
    gpu_stats,
    pick_device,
    seed_everything,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedTokenizerBase

    from components.train.health import Firing, HealthArguments

log = logging.getLogger("components.train")


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


class Trainer:
    """The training loop and its state (`core.train` builds one, resumes it, runs it and finishes it)."""

    def __init__(
        self,
        train_examples: D.Examples,
        val_examples: D.Examples,
        model_name: str,
        tokenizer: PreTrainedTokenizerBase,
        data_args: Any,  # core.DataArguments
        args: Any,  # core.TrainingArguments
        health_args: HealthArguments,
        on_log: Callable[[dict[str, float], int], None] | None,
        dist: Distributed,
    ) -> None:
        import torch

        self.args, self.data_args, self.dist, self.on_log = args, data_args, dist, on_log
        self.tokenizer, self.model_name = tokenizer, model_name
        self.train_examples, self.val_examples = train_examples, val_examples
        self.device = pick_device(args.use_cpu, dist)
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

        self.optimizer, self.scheduler = build_optimizer(self.model, args, self.total_steps, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.parts = TrainingParts(self.model, self.optimizer, self.scheduler, self.scaler)
        self.checkpoints = Checkpoints(self.output_dir, dist, args.save_total_limit)
        self.health = HealthMonitor(health_args, total_steps=self.total_steps)
        rows = len(train_examples)
        self.state = TrainerState(
            fingerprint=fingerprint(model_name, data_args, args, dist.world_size, self.total_steps, rows)
        )
        self.resumed_from: int | None = None
        self.ddp_model: torch.nn.Module = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)
        pad = data_args.pad_to_multiple_of
        self.collate = D.Collator(train_examples, tokenizer.pad_token_id, pad if pad >= 0 else auto_pad(self.device))
        self._clip_params = [p for p in self.model.parameters() if p.requires_grad]
        self._pending: list[tuple[Any, Any]] = []  # (loss, grad norm) tensors since the last flush
        self._pending_steps: list[int] = []
        self._saved_step = -1
        self.speed = Throughput(dist.world_size)
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

    def _warn(self, firings: list[Firing]) -> None:
        for firing in firings:
            if self.dist.main:
                log.warning("health rule %s fired at step %d: %s", firing.rule, firing.step, firing.message)

    def _check_health_stop(self) -> None:
        if self.health.should_stop and not self.state.stop_reason:
            self.state.stop_reason = "health:" + self.health.firings[0].rule

    # -- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write checkpoint-<step> (see `checkpoints.Checkpoints.save`)."""
        self._flush()
        self._saved_step = self.state.global_step
        self.state.health = self.health.state_dict()
        return self.checkpoints.save(self.state, self.parts)

    def maybe_resume(self) -> None:
        """Load the newest checkpoint when resuming; otherwise clear old checkpoints."""
        path = self.checkpoints.start(self.args.resume)
        if path is None:
            return
        state = self.checkpoints.load(path, self.state.fingerprint, self.parts, self.device, self.model_name)
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
            self._warn(self.health.on_step(step, loss, norm, overflow))
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
        metrics = {
            "loss": sum(window) / len(window) if window else float("nan"),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "grad_norm": self._last_grad_norm,
            "epoch": step / self.steps_per_epoch,
            "samples_per_second": self.speed.samples_per_second(),
            "step_time_s": self.speed.mean_step(),
            **self.health.metrics(),
            **gpu_stats(self.device),
        }
        self.speed.log_line(step, self.total_steps, metrics)
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
        self._warn(self.health.on_evaluation(state.global_step, train_loss, result["loss"]))
        value, metric = result[args.metric_for_best_model], args.metric_for_best_model
        improved = record_evaluation(state, value, metric, args.early_stopping_threshold, args.early_stopping_patience)
        entry = {
            "step": state.global_step,
            "epoch": round(state.global_step / self.steps_per_epoch, 4),
            "train_loss": train_loss,
            **{f"eval_{k}": v for k, v in result.items()},
        }
        state.history.append(entry)
        if self.dist.main:
            # The metric line a tuning trial reports from (Optuna engine, Katib's StdOut collector): stdout.
            print(trial_metrics.format_line(len(state.history), state.global_step, result), flush=True)
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
        return bool(state.stop_reason)

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        """Train until the last step, early stopping or a health stop; a resumed run goes on where it was."""
        state = self.state
        self.speed.steps = 0
        done = bool(state.stop_reason) or state.global_step >= self.total_steps
        epoch, position = state.epoch, state.batches_done_in_epoch  # where a resumed run left off in its epoch
        while not done and epoch < self.num_epochs:
            batches = self._batches(epoch)
            position, done = self._run_epoch(epoch, batches, position)
            if position >= len(batches):  # the epoch is complete
                done = self._end_epoch(epoch) or done
            epoch, position = epoch + 1, 0
        self._end_run()

    def _run_epoch(self, epoch: int, batches: list[np.ndarray], position: int) -> tuple[int, bool]:
        """Optimizer steps over ``batches[position:]``: (the position reached, whether training is over)."""
        args, accum = self.args, self.args.gradient_accumulation_steps
        step_started = time.perf_counter()
        while position < len(batches):
            micro = batches[position : min(position + accum, len(batches))]
            loss, norm = self._optimizer_step(micro)
            position += len(micro)
            step = self._count_step(epoch, position, loss, norm)
            will_eval = bool(args.eval_steps) and step % args.eval_steps == 0
            will_save = will_eval or (bool(args.save_steps) and step % args.save_steps == 0)
            if step % args.logging_steps == 0 or will_save or position >= len(batches):
                self._flush()  # waits for the device: part of the step time
            self.speed.seconds += time.perf_counter() - step_started
            if self._after_step(step, will_eval, will_save):
                return position, True
            step_started = time.perf_counter()
        return position, False

    def _optimizer_step(self, micro: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over one step's micro-batches, then clip, step and schedule.

        Returns:
            (loss, gradient norm before clipping), still on the device: `_flush` reads them in bulk.
        """
        import torch

        total_loss = None
        for i, indices in enumerate(micro):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in self.collate(indices).items()}
            last = i == len(micro) - 1 or not self.dist.enabled  # DDP all-reduces gradients only after the last
            no_sync = nullcontext() if last else self.ddp_model.no_sync()
            with no_sync, autocast(self.device, self.autocast_dtype):
                loss = self.ddp_model(**batch).loss
            scaled = loss / len(micro)
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total_loss = scaled.detach() if total_loss is None else total_loss + scaled.detach()
            self.speed.add_batch(
                len(indices), int(self.lengths[indices].sum()), len(indices) * batch["input_ids"].shape[1]
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.args.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self._clip_params, self.args.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in self._clip_params if p.grad is not None])
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, norm.detach()

    def _count_step(self, epoch: int, position: int, loss: torch.Tensor, norm: torch.Tensor) -> int:
        """Record a finished optimizer step (its loss and norm wait for `_flush`); the new global step."""
        state = self.state
        state.global_step += 1
        state.epoch, state.batches_done_in_epoch = epoch, position
        self.speed.steps += 1
        self._pending.append((loss, norm))
        self._pending_steps.append(state.global_step)
        return state.global_step

    def _after_step(self, step: int, will_eval: bool, will_save: bool) -> bool:
        """What is due after ``step``: progress line, health stop, evaluation, checkpoint; True when training
        is over (stopped, or the last step)."""
        if step % self.args.logging_steps == 0:
            self._progress(step)
        self._check_health_stop()
        if will_eval:
            self.evaluate()
        if will_save:
            self.save_checkpoint()
        return bool(self.state.stop_reason) or step >= self.total_steps

    def _end_epoch(self, epoch: int) -> bool:
        """Evaluate and checkpoint at the end of ``epoch`` unless already done at its last step; True to stop."""
        state = self.state
        state.epoch, state.batches_done_in_epoch = epoch + 1, 0
        if state.last_eval_step != state.global_step:
            self.evaluate()
        if self._saved_step != state.global_step:  # (a resumed run finds the epoch complete)
            self.save_checkpoint()
        return bool(state.stop_reason)

    def _end_run(self) -> None:
        """The last evaluation, the stop reason, and a checkpoint so that a re-run finds the run finished."""
        state = self.state
        if state.last_eval_step != state.global_step:
            self.evaluate()
        self._flush()
        self._check_health_stop()
        state.stop_reason = state.stop_reason or "completed"
        if self._saved_step == state.global_step:  # only the stop reason is new: rewrite the state file
            state.health = self.health.state_dict()
            self.checkpoints.write_state(self.checkpoints.path(state.global_step), state)
        else:
            self.save_checkpoint()

    def finish(self, model_dir: Path) -> TrainResult:
        """Write the final model (the best one, unless told otherwise) with its tokenizer; return the result."""
        state, args = self.state, self.args
        final_step = state.best_step if args.load_best_model_at_end else state.global_step
        if self.dist.main:
            if final_step != state.global_step:
                self.checkpoints.load_weights(self.model, final_step, self.device)
            export_model(self.model, self.tokenizer, model_dir)
            outcome = self.health.outcome(state.stop_reason)
            (model_dir / schema.TRAINING_OUTCOME_FILE).write_text(json.dumps(outcome, indent=1))
        self.dist.barrier()
        entry = next(h for h in state.history if h["step"] == final_step)
        seconds, steps = self.speed.seconds, self.speed.steps
        metrics = {
            "train_loss": state.loss_sum / state.loss_count if state.loss_count else float("nan"),
            **{k: v for k, v in entry.items() if k.startswith("eval_")},
            "global_step": float(state.global_step),
            "best_step": float(state.best_step),
            "epochs": round(state.global_step / self.steps_per_epoch, 4),
            "samples_per_second": self.speed.samples_per_second(),
            "step_time_s": seconds / steps if steps else 0.0,
            "padding_share": self.speed.padding_share(),
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
