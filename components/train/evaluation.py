"""Evaluation on the validation split during training, and the early-stopping rule.

The metrics are `components.common.metrics` (the same numbers evaluate reports on the test split).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from components.common import batching as D
from components.common.metrics import classification_scores
from components.common.modeling import predict

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from components.train.checkpoints import TrainerState
    from components.train.runtime import Distributed


def evaluate_split(
    model: torch.nn.Module,
    examples: D.Examples,
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    dist: Distributed,
) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1; under DDP each process scores a share of the batches and the
    shares are added up (a process's logits are zero outside its share)."""
    batches = D.eval_batches(examples.lengths, batch_size)
    mine = batches[dist.rank :: dist.world_size]
    logits, loss_sum = predict(model, examples, pad_token_id, batch_size, device, autocast_dtype, mine)
    if dist.enabled:
        import torch

        packed = torch.tensor(np.append(logits.ravel(), loss_sum), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(packed)
        values = packed.cpu().numpy()
        logits, loss_sum = values[:-1].reshape(logits.shape), float(values[-1])
    scores = classification_scores(examples.labels, logits.argmax(1))
    return {"loss": loss_sum / len(examples), "accuracy": scores.accuracy, "f1_macro": scores.f1_macro}


def record_evaluation(state: TrainerState, value: float, metric: str, threshold: float, patience: int) -> bool:
    """Count an evaluation's ``value`` of ``metric`` (lower is better for loss) in ``state``: a new best model,
    or one more evaluation without improvement (more than ``threshold``), which after ``patience`` of them
    (0: never) stops training with reason ``early_stopping``.  Returns whether it is a new best."""
    sign = -1.0 if metric == "loss" else 1.0
    improved = state.best_metric is None or sign * (value - state.best_metric) > threshold
    if improved:
        state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
    else:
        state.evals_without_improvement += 1
    state.last_eval_step = state.global_step
    if patience and state.evals_without_improvement >= patience and not state.stop_reason:
        state.stop_reason = "early_stopping"
    return improved
