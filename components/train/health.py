"""Training health rules in the spirit of SageMaker Debugger's built-in rules, computed while training.

- `vanishing_gradient` (Debugger's VanishingGradient): the global gradient norm before clipping stays
  below `vanishing_grad_norm` for `gradient_patience` optimizer steps in a row.
- `exploding_gradient` (ExplodingTensor): the gradient norm exceeds `exploding_grad_norm`, or is not
  finite, for `gradient_patience` steps in a row; a non-finite training loss fires at once.
- `loss_not_decreasing` (LossNotDecreasing): the mean training loss over a window of steps is not
  `loss_min_decrease` (relative) below the best earlier window, `loss_patience` windows in a row.  The window
  is `loss_window` steps, shortened for a short run so that `loss_patience` + 1 windows fit in it (but never
  below `MIN_LOSS_WINDOW` steps, the fewest whose mean is more than one batch's noise): a 40-step run has
  windows of 10 steps; a 9-step run has one window of 5, too few for the rule to fire.
- `loss_diverged`: training diverged.  The training loss is not finite (fires at once), or stays above
  `divergence_factor` times the loss of the first step for `gradient_patience` steps in a row; or a
  validation loss is not finite or above that.  It needs no window, so it works on the shortest run.
  Whatever the policy, a diverged model is never deployed (evaluate's gate reads `outcome`).
- `overfitting` (Overfit): the validation loss rose while the training loss (mean since the previous
  evaluation) fell, `overfit_patience` evaluations in a row.

fp16 mixed precision skips steps whose scaled gradients overflow (the loss scale then shrinks): such
steps are counted as `skipped_steps`, not as exploding gradients.  The monitor's state is plain data, so
a resumed run continues with the counts it had at its checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from components.common.training_options import RULES, HealthArguments

#: The shortest loss window a short run's `loss_not_decreasing` uses.
MIN_LOSS_WINDOW = 5


@dataclass
class Firing:
    """One time a rule fired."""

    rule: str
    step: int
    value: float
    message: str


@dataclass
class HealthMonitor:
    """Evaluates the rules on per-step gradient norms and losses and on evaluations."""

    config: HealthArguments
    #: The run's optimizer steps (0: unknown): short runs get shorter loss windows.
    total_steps: int = 0
    firings: list[Firing] = field(default_factory=list)
    skipped_steps: int = 0
    _vanishing_run: int = 0
    _exploding_run: int = 0
    _window: list[float] = field(default_factory=list)
    _best_window: float = math.inf
    _stalled_windows: int = 0
    _last_eval: tuple[float, float] | None = None
    _overfit_run: int = 0
    _start_loss: float | None = None
    _diverged_run: int = 0

    @property
    def loss_window(self) -> int:
        """Steps per loss window: `loss_window`, or fewer on a short run (see the module docstring)."""
        if self.total_steps <= 0:
            return self.config.loss_window
        fitting = self.total_steps // (self.config.loss_patience + 1)
        return min(self.config.loss_window, max(MIN_LOSS_WINDOW, fitting))

    # --- inputs ---------------------------------------------------------------------------------------

    def on_step(self, step: int, loss: float, grad_norm: float, overflow_skipped: bool = False) -> list[Firing]:
        """Check the gradient and loss rules after one optimizer step; return what fired at it."""
        rules = self.config.rules()
        fired: list[Firing] = []
        if overflow_skipped:
            self.skipped_steps += 1
        elif "exploding_gradient" in rules:
            fired += self._exploding(step, loss, grad_norm)
        if not overflow_skipped and "vanishing_gradient" in rules and math.isfinite(grad_norm):
            self._vanishing_run = self._vanishing_run + 1 if grad_norm < self.config.vanishing_grad_norm else 0
            if self._vanishing_run == self.config.gradient_patience:
                why = (
                    f"gradient norm {grad_norm:.3g} below {self.config.vanishing_grad_norm:g} for "
                    f"{self.config.gradient_patience} steps: the model has stopped learning (learning rate "
                    "too small, saturated activations, or a frozen network)"
                )
                fired.append(Firing("vanishing_gradient", step, grad_norm, why))
        if "loss_diverged" in rules and not overflow_skipped:
            fired += self._diverged_step(step, loss)
        if "loss_not_decreasing" in rules and math.isfinite(loss):
            fired += self._loss(step, loss)
        self.firings += fired
        return fired

    def _divergence(self, step: int, value: float, what: str) -> Firing:
        start = self._start_loss
        if not math.isfinite(value):
            detail = f"{what} is {value} at step {step}"
        else:
            detail = f"{what} {value:.4g} at step {step} is {value / start:.1f}× the first step's {start:.4g}"
        why = f"{detail}: training diverged (lower --learning-rate, keep warm-up and --max-grad-norm, check the data)"
        return Firing("loss_diverged", step, value, why)

    def _diverged_step(self, step: int, loss: float) -> list[Firing]:
        if self.fired("loss_diverged"):
            return []
        if self._start_loss is None and math.isfinite(loss):
            self._start_loss = loss
        high = self._start_loss is not None and loss > self.config.divergence_factor * self._start_loss
        self._diverged_run = self._diverged_run + 1 if high else 0
        if not math.isfinite(loss) or self._diverged_run >= self.config.gradient_patience:
            return [self._divergence(step, loss, "training loss")]
        return []

    def _exploding(self, step: int, loss: float, grad_norm: float) -> list[Firing]:
        """A non-finite loss fires at once; a gradient norm above the limit (or not finite) after a run of steps."""
        patience, loss_ok = self.config.gradient_patience, math.isfinite(loss)
        bad = not loss_ok or not math.isfinite(grad_norm) or grad_norm > self.config.exploding_grad_norm
        was = self._exploding_run
        self._exploding_run = (was + 1 if loss_ok else max(was + 1, patience)) if bad else 0
        if not bad or not was < patience <= self._exploding_run:
            return []
        if not loss_ok:
            why = (
                f"training loss is {loss} at step {step}: training diverged (lower the learning rate, "
                "keep --max-grad-norm, check the data)"
            )
            return [Firing("exploding_gradient", step, loss, why)]
        why = (
            f"gradient norm {grad_norm:.3g} above {self.config.exploding_grad_norm:g} for {patience} steps: "
            "training is unstable (lower the learning rate, add warm-up, keep --max-grad-norm)"
        )
        return [Firing("exploding_gradient", step, grad_norm, why)]

    def _loss(self, step: int, loss: float) -> list[Firing]:
        self._window.append(loss)
        window = self.loss_window
        if len(self._window) < window:
            return []
        mean = sum(self._window) / len(self._window)
        self._window = []
        if mean < self._best_window * (1.0 - self.config.loss_min_decrease):
            self._best_window, self._stalled_windows = mean, 0
            return []
        self._stalled_windows += 1
        if self._stalled_windows != self.config.loss_patience:
            return []
        why = (
            f"mean training loss {mean:.4f} over the last {window} steps has not fallen "
            f"{self.config.loss_min_decrease:.2%} below its best window ({self._best_window:.4f}) for "
            f"{self.config.loss_patience} windows (learning rate too low or too high, or labels unrelated to the text)"
        )
        return [Firing("loss_not_decreasing", step, mean, why)]

    def on_evaluation(self, step: int, train_loss: float, val_loss: float) -> list[Firing]:
        """Check the overfitting rule after an evaluation; ``train_loss`` is the mean since the last one."""
        fired: list[Firing] = []
        if "loss_diverged" in self.config.rules() and not self.fired("loss_diverged"):
            limit = None if self._start_loss is None else self.config.divergence_factor * self._start_loss
            if not math.isfinite(val_loss) or (limit is not None and val_loss > limit):
                fired.append(self._divergence(step, val_loss, "validation loss"))
        if "overfitting" in self.config.rules() and self._last_eval is not None:
            last_train, last_val = self._last_eval
            self._overfit_run = self._overfit_run + 1 if val_loss > last_val and train_loss < last_train else 0
            if self._overfit_run == self.config.overfit_patience:
                why = (
                    f"validation loss rose to {val_loss:.4f} while training loss fell to {train_loss:.4f}, "
                    f"{self.config.overfit_patience} evaluations in a row: the model memorises the training "
                    "split (fewer epochs, early stopping, more data or weight decay)"
                )
                fired.append(Firing("overfitting", step, val_loss, why))
        self._last_eval = (train_loss, val_loss)
        self.firings += fired
        return fired

    # --- outputs --------------------------------------------------------------------------------------

    @property
    def should_stop(self) -> bool:
        return self.config.health_policy == "stop" and bool(self.firings)

    def fired(self, rule: str) -> bool:
        return any(f.rule == rule for f in self.firings)

    def report(self) -> dict[str, Any]:
        """Per rule: whether it fired, at which step first, how often, and the first message."""
        rules: dict[str, Any] = {}
        for rule in RULES:
            mine = [f for f in self.firings if f.rule == rule]
            rules[rule] = {
                "checked": rule in self.config.rules(),
                "fired": bool(mine),
                "first_step": mine[0].step if mine else None,
                "times": len(mine),
                "message": mine[0].message if mine else "",
            }
        return {
            "policy": self.config.health_policy,
            "skipped_steps": self.skipped_steps,
            "loss_window": self.loss_window,
            "start_loss": self._start_loss,
            "rules": rules,
        }

    def outcome(self, stop_reason: str) -> dict[str, Any]:
        """How training ended, for the file beside the model that evaluate's gate reads
        (`schema.TRAINING_OUTCOME_FILE`): stop reason, policy, and each fired rule's first message."""
        fired = {rule: v["message"] for rule, v in self.report()["rules"].items() if v["fired"]}
        return {"stop_reason": stop_reason, "policy": self.config.health_policy, "fired": fired}

    def metrics(self) -> dict[str, float]:
        """Flat numbers for KFP Metrics and MLflow: health_<rule> is 1.0 when the rule fired."""
        out = {f"health_{rule}": float(self.fired(rule)) for rule in RULES}
        out["health_skipped_steps"] = float(self.skipped_steps)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The counters as plain data (for a checkpoint's trainer state)."""
        state = {k: v for k, v in asdict(self).items() if k not in ("config", "total_steps")}
        state["_best_window"] = None if math.isinf(self._best_window) else self._best_window
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self.firings = [Firing(**f) for f in state["firings"]]
        self._best_window = math.inf if state["_best_window"] is None else state["_best_window"]
        self._last_eval = None if state["_last_eval"] is None else tuple(state["_last_eval"])  # type: ignore[assignment]
