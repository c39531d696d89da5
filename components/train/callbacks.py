"""What the train step adds to `transformers.Trainer`, as one `TrainerCallback`: `TrainingMonitor`.

- The health rules of `components.train.health` on every optimizer step's loss and gradient norm (Trainer logs
  both at each step: ``logging_steps=1``) and on every evaluation; policy ``stop`` ends training.
- The progress line every ``--logging-steps`` steps and whenever `components.common.logs.LOOP_EVERY_S`
  seconds passed without one (`Throughput.log_line`: samples/s over all processes, step time and ETA,
  counting only the time in optimizer steps; the SageMaker metric definitions read it), a line by time during
  a long evaluation, the metric line of each evaluation (`trial_metrics.format_line`, which the tune step and
  Katib read), and ``on_log(metrics, step)`` for MLflow.
- An evaluation and a checkpoint at each epoch's end and at the run's end (unless one was just made), and a
  checkpoint every ``--save-steps`` steps besides the evaluations'.
- The history of evaluations, the loss sums, the health monitor's counters, the stop reason and the settings'
  fingerprint: `state` puts them into each checkpoint's ``trainer_state.json`` (Trainer's ``ExportableState``),
  and a resumed run takes them back at ``on_train_begin``, with EarlyStoppingCallback's patience counter.
- SIGTERM: a checkpoint at the end of the current optimizer step, then `Interrupted` (`SignalStop`).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import EarlyStoppingCallback, EvalPrediction, Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from components.common import trial_metrics
from components.common.logs import LOOP_EVERY_S, Progress, set_status
from components.common.metrics import classification_scores
from components.train.health import HealthArguments, HealthMonitor

if TYPE_CHECKING:  # pragma: no cover - typing only
    from collections.abc import Callable

    import torch

log = logging.getLogger("components.train")
METRICS = ("loss", "accuracy", "f1_macro")


class Throughput:
    """Samples, tokens and training seconds of this process since the run (or its resumption) started."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.steps = 0
        self.samples = 0
        self.tokens = 0
        self.padded_tokens = 0
        self.seconds = 0.0
        self._recent: list[tuple[int, float]] = []  # (step, training seconds so far) for the ETA

    def samples_per_second(self) -> float:
        return self.samples * self.world_size / self.seconds if self.seconds else 0.0

    def mean_step(self) -> float:
        return self.seconds / max(1, self.steps)

    def padding_share(self) -> float:
        """Share of the token positions trained on that were padding."""
        return 1 - float(self.tokens) / self.padded_tokens if self.padded_tokens else 0.0

    def log_line(self, step: int, total_steps: int, metrics: dict[str, Any]) -> None:
        """Log the progress line of ``step`` (``metrics``: epoch, loss, learning_rate, grad_norm,
        samples_per_second) with the ETA from the recent steps' pace."""
        self._recent = [*self._recent[-4:], (step, self.seconds)]
        first_step, first_seconds = self._recent[0]
        mean_step = self.mean_step()
        recent_step = (self.seconds - first_seconds) / (step - first_step) if step > first_step else mean_step
        keys = ("epoch", "loss", "learning_rate", "grad_norm", "samples_per_second")
        log.info(
            "step %d/%d | epoch %.2f | loss %.4f | lr %.3g | grad %.3g | %.1f samples/s | %.3f s/step | ETA %s",
            *(step, total_steps, *(metrics[k] for k in keys), mean_step, duration((total_steps - step) * recent_step)),
        )


def duration(seconds: float) -> str:
    """``1h02m`` or ``3m07s``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def gpu_stats(device: torch.device) -> dict[str, float]:
    """Memory (and, with NVML, utilisation) of the GPU; nothing on CPU."""
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


def scores(prediction: EvalPrediction) -> dict[str, float]:
    """Trainer's ``compute_metrics``: accuracy and macro-F1 (`components.common.metrics`, as evaluate reports)."""
    result = classification_scores(prediction.label_ids, prediction.predictions.argmax(1))
    return {"accuracy": result.accuracy, "f1_macro": result.f1_macro}


class CountingTrainer(Trainer):
    """`Trainer` that counts each training batch's rows and token positions (real and padded) into ``meter``."""

    meter: Throughput

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        ids, meter = inputs["input_ids"], self.meter
        meter.samples += ids.shape[0]
        meter.tokens += inputs["attention_mask"].sum()  # a tensor on the device, read at the end: no device sync
        meter.padded_tokens += ids.numel()
        return super().training_step(model, inputs, num_items_in_batch)


class Interrupted(RuntimeError):
    """Training stopped on a signal once a checkpoint was saved (`SignalStop`); a re-run on the same output
    directory resumes from that checkpoint."""


class SignalStop:
    """Stop on SIGTERM with a checkpoint: a pod being deleted, SageMaker's StopTrainingJob or a spot interruption
    (120 s before the end), or torchrun passing the signal on to its processes (30 s before SIGKILL).

    The handler only sets a flag (`install`: at the start of training, in the main thread, where Python runs signal
    handlers; `core.train` uninstalls it when training ends, however it ends).  At the end of the optimizer step
    under way `TrainingMonitor` asks Trainer for a checkpoint and the end of training, and once the checkpoint is
    saved raises `Interrupted`: nothing after it runs (no final evaluation, no model exported from a half-trained
    run).  Under DDP the processes agree at each step's end (the flag all-reduced with MAX), so that all of them
    stop after the same step.
    """

    def __init__(self) -> None:
        self.received = ""  # the signal's name
        self.stopping = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and self._previous is None:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, number: int, frame: Any) -> None:
        self.received = signal.Signals(number).name

    def agreed(self, args: Any) -> bool:
        """Whether to stop after this step: the flag, or under DDP any process's flag (``args``: Trainer's)."""
        stop = bool(self.received)
        if args.world_size > 1:  # (Trainer has started the process group)
            import torch

            flag = torch.tensor([int(stop)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        self.stopping = self.stopping or stop
        return self.stopping


class TrainingMonitor(TrainerCallback, ExportableState):
    """See the module docstring.  ``args`` is a `core.TrainingArguments` (ours: ``logging_steps``, ``save_steps``);
    ``meter`` counts the rows (Trainer's ``training_step``) and the seconds (this callback) of the optimizer steps."""

    def __init__(
        self,
        args: Any,
        health_args: HealthArguments,
        meter: Throughput,
        fingerprint: dict[str, Any],
        early_stopping: EarlyStoppingCallback | None,
        on_log: Callable[[dict[str, float], int], None] | None,
    ) -> None:
        self.args, self.health_args, self.meter, self.early_stopping, self.report = (
            args, health_args, meter, early_stopping, on_log
        )  # fmt: skip
        self.health = HealthMonitor(health_args)
        self.run: dict[str, Any] = {
            "stop_reason": "",
            "history": [],
            "loss_sum": 0.0,
            "loss_count": 0,
            "since_eval_sum": 0.0,
            "since_eval_count": 0,
            "fingerprint": fingerprint,
        }
        self.window: list[float] = []
        self.last_eval_step = self.last_save_step = -1
        self.main = True
        self.fp16 = False
        self.device: Any = None
        self.signal_stop = SignalStop()
        self._mark = time.perf_counter()
        #: Progress lines by time as well as by steps; the batches of the evaluation under way.
        self.ticker = Progress("train", every=LOOP_EVERY_S)
        self._eval_batches = 0

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"run": {**self.run, "health": self.health.state_dict()}}}

    @property
    def stop_reason(self) -> str:
        return str(self.run["stop_reason"])

    def restore(self, saved: dict[str, Any], total_steps: int) -> None:
        """Take back what a checkpoint's trainer state holds (``saved``: its ``stateful_callbacks``), with
        EarlyStoppingCallback's counter (Trainer would rebuild the callbacks to restore them)."""
        self.health = HealthMonitor(self.health_args, total_steps=total_steps)
        if type(self).__name__ in saved:
            run = dict(saved[type(self).__name__]["attributes"]["run"])
            self.health.load_state_dict(run.pop("health"))
            self.run.update(run)
            if history := self.run["history"]:
                self.last_eval_step = int(history[-1]["step"])
        if self.early_stopping is not None and "EarlyStoppingCallback" in saved:
            counter = saved["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"]
            self.early_stopping.early_stopping_patience_counter = counter

    # --- Trainer events -----------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.main, self.fp16, self.device = state.is_world_process_zero, bool(args.fp16), args.device
        self.restore((state.stateful_callbacks or {}) if state.global_step else {}, state.max_steps)
        self.last_save_step = state.global_step
        self.signal_stop.install()
        self._mark = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if self.args.save_steps and step % self.args.save_steps == 0:
            control.should_save = True
        if step >= state.max_steps:  # the last step: evaluated and saved like an epoch's end
            control.should_evaluate = control.should_save = True
        if self.signal_stop.agreed(args):  # SIGTERM: a checkpoint now, then `on_save` ends the run
            control.should_save = control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        control.should_evaluate = self.last_eval_step != state.global_step
        control.should_save = self.last_save_step != state.global_step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_save_step = state.global_step
        self._mark = time.perf_counter()
        if self.signal_stop.stopping:
            step, name = state.global_step, self.signal_stop.received or "another process's signal"
            checkpoint = Path(args.output_dir) / f"checkpoint-{step}"
            if self.main:
                log.warning("%s: checkpoint saved at step %d in %s; stopping", name, step, checkpoint)
            raise Interrupted(
                f"Training stopped by {name} at step {step}: checkpoint saved in {checkpoint}; a run on the same "
                "output directory resumes there."
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """One optimizer step's numbers (Trainer logs every step; its other logs carry no ``loss``)."""
        if not logs or "loss" not in logs:
            return
        self.meter.seconds += time.perf_counter() - self._mark
        self.meter.steps += 1
        step, loss = state.global_step, float(logs["loss"])
        grad_norm = float(logs.get("grad_norm", math.nan))
        self._warn(self.health.on_step(step, loss, grad_norm, self.fp16 and not math.isfinite(grad_norm)))
        if math.isfinite(loss):
            for key in ("loss", "since_eval"):
                self.run[f"{key}_sum"] += loss
                self.run[f"{key}_count"] += 1
            self.window.append(loss)
        if self.main:  # what the step's `Progress` says if a step outlasts its interval
            set_status(f"step {step}/{state.max_steps}, loss {loss:.4f}, {self.meter.mean_step():.1f} s/step")
        if step % self.args.logging_steps == 0 or self.ticker.due():
            self._progress(step, state, float(logs.get("learning_rate", math.nan)), grad_norm)
        if self._health_stop(control):
            control.should_evaluate = self.last_eval_step != step
        self._mark = time.perf_counter()

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """One evaluation batch: a progress line when one is due (an evaluation may outlast the interval)."""
        self._eval_batches += 1
        if self.main:
            loader = kwargs.get("eval_dataloader")
            total = f"/{len(loader)}" if loader is not None and hasattr(loader, "__len__") else ""
            status = f"evaluating at step {state.global_step}, batch {self._eval_batches}{total}"
            set_status(status)
            self.ticker.tick(status)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
        self._eval_batches = 0
        step, run = state.global_step, self.run
        result = {name: float(metrics[f"eval_{name}"]) for name in METRICS}
        count = run["since_eval_count"]
        train_loss = run["since_eval_sum"] / count if count else math.nan
        run["since_eval_sum"], run["since_eval_count"] = 0.0, 0
        self._warn(self.health.on_evaluation(step, train_loss, result["loss"]))
        entry = {
            "step": step,
            "epoch": round(state.epoch, 4),
            "train_loss": train_loss,
            **{f"eval_{k}": v for k, v in result.items()},
        }
        run["history"].append(entry)
        self.last_eval_step = step
        early = self.early_stopping
        stopped_early = early is not None and early.early_stopping_patience_counter >= early.early_stopping_patience
        if not self._health_stop(control) and not self.stop_reason:
            run["stop_reason"] = "early_stopping" if stopped_early else "completed" if step >= state.max_steps else ""
        if self.main:
            # The metric line a tuning trial reports from (Optuna engine, Katib's StdOut collector): stdout.
            print(trial_metrics.format_line(len(run["history"]), step, result), flush=True)
            log.info("eval at step %d: loss %.4f accuracy %.4f f1_macro %.4f", step, *result.values())
            if self.report:
                self.report({k: v for k, v in entry.items() if k != "step"}, step)
        self._mark = time.perf_counter()

    # --- helpers ------------------------------------------------------------------------------------------

    def _health_stop(self, control: Any) -> bool:
        """Under policy ``stop``, the first firing ends training with a checkpoint."""
        if not self.health.should_stop or self.stop_reason:
            return False
        self.run["stop_reason"] = "health:" + self.health.firings[0].rule
        control.should_training_stop = control.should_save = True
        return True

    def _warn(self, firings: list[Any]) -> None:
        for firing in firings:
            if self.main:
                log.warning("health rule %s fired at step %d: %s", firing.rule, firing.step, firing.message)

    def _progress(self, step: int, state: Any, learning_rate: float, grad_norm: float) -> None:
        """A progress line and the numbers for ``on_log`` (main process only)."""
        window, self.window = self.window, []
        if not self.main:
            return
        metrics = {
            "loss": sum(window) / len(window) if window else math.nan,
            "learning_rate": learning_rate,
            "grad_norm": grad_norm,
            "epoch": state.epoch,
            "samples_per_second": self.meter.samples_per_second(),
            "step_time_s": self.meter.mean_step(),
            **self.health.metrics(),
            **gpu_stats(self.device),
        }
        self.meter.log_line(step, state.max_steps, metrics)
        self.ticker.said()
        if self.report:
            self.report(metrics, step)
