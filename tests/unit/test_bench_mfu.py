"""`python -m bench mfu`: peak lookup, steady-state timing, and the whole benchmark on CPU with a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import mfu
from tests import testing


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("Tesla T4", None),
    ],
)
def test_peak_is_looked_up_by_gpu_name(name: str, peak: float | None) -> None:
    assert mfu.peak_tflops(name) == peak


def test_steady_rate_leaves_out_the_warm_up() -> None:
    # 8 samples a step; the first 10 steps take 10 s (warm-up), each later step 0.5 s.
    seconds = {10: 10.0, 20: 15.0, 30: 20.0}
    log = [(step, step * 8 / s) for step, s in seconds.items()]
    assert mfu.steady_rate(log, 8, after_step=10) == pytest.approx(20 * 8 / 10.0)
    with pytest.raises(ValueError, match="raise --steps"):
        mfu.steady_rate(log, 8, after_step=30)


def test_benchmark_runs_the_train_loop_on_cpu(tmp_path: Path) -> None:
    model = testing.tiny_model(tmp_path / "tiny")
    out = mfu.main(
        ["--base-model", str(model), "--allow-cpu", "--precision", "fp32", "--peak-tflops", "1", "--batch-size", "4",
         "--seq-length", "16", "--steps", "4", "--warmup-steps", "2", "--log-every", "2"]
    )  # fmt: skip
    params, _ = mfu.model_size(str(model))
    assert out["name"] == "mfu" and out["value"] > 0
    assert out["gflop_per_sample"] == round(6 * params * 16 / 1e9, 2)
    assert out["baseline"] == pytest.approx(1e12 / (6 * params * 16), rel=1e-3)
    assert out["mfu"] == pytest.approx(out["value"] / out["baseline"], abs=1e-4)
