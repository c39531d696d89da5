"""Where and how the training loop runs: the process's place under `torchrun`, the device, seeds and RNG
states, deterministic algorithms, the optimizer and schedule, GPU statistics.

`components.train.core` re-exports `Distributed` (its callers use it from there).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

#: Parameters whose names end like this get no weight decay (biases and normalisation weights).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


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

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for in a single process)."""
        if self.enabled:
            import torch

            torch.distributed.barrier()


def shutdown_distributed() -> None:
    """Destroy the process group `core.train` started under torchrun (nothing when there is none): every rank
    leaves the group before its process ends, as torch.distributed asks."""
    import sys

    if "torch" not in sys.modules:  # nothing was trained in this process (bad input, or the TrainJob path)
        return
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def cuda_wanted(use_cpu: bool) -> bool:
    import torch

    return torch.cuda.is_available() and not use_cpu


def pick_device(use_cpu: bool, dist: Distributed) -> torch.device:
    import torch

    if cuda_wanted(use_cpu):
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def auto_pad(device: torch.device) -> int:
    """Pad to a multiple of 8 on GPU (tensor-core friendly shapes); exactly to the longest review on CPU."""
    return 8 if device.type == "cuda" else 0


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


@contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms (warn-only) while inside, when ``enabled``; the previous setting afterwards."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def build_optimizer(
    model: torch.nn.Module, args: Any, total_steps: int, device: torch.device
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no weight decay on biases and norms) and the warm-up-then-decay learning-rate schedule.

    ``args`` is a `core.TrainingArguments` (typed `Any`: `core` imports this module, not the other way round).
    """
    import torch
    from transformers import get_scheduler

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=device.type in ("cuda", "cpu"),  # one kernel over all parameters, not one per tensor
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return optimizer, scheduler


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
