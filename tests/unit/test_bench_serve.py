"""`python -m bench serve`: the three backends behind the same load generator, on a tiny model with small settings
(the figures themselves are for a quiet machine; this checks what the benchmark measures and reports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import serve
from tests import testing


def test_bench_serve_compares_the_backends_and_their_in_process_limits(tmp_path: Path) -> None:
    from serving.testing import untrained_classifier

    model = untrained_classifier(testing.tiny_model(tmp_path / "base", dropout=0.0), tmp_path / "model")
    flags = ["--concurrency", "3", "--requests", "12", "--overhead-requests", "3", "--repeat", "1"]
    out = serve.main(["--model-dir", str(model), *flags, "--max-seconds", "20"])
    assert set(out["backends"]) == {"pytorch-fp32", "onnx-fp32", "onnx-int8"}
    assert (out["value_backend"], out["baseline_backend"]) == ("onnx-int8", "pytorch-fp32")
    assert out["value"] == out["backends"]["onnx-int8"]["requests_per_s"]
    assert out["baseline"] == out["backends"]["pytorch-fp32"]["requests_per_s"]
    for figures in out["backends"].values():
        assert figures["requests_per_s"] > 0 and figures["in_process_reviews_per_s"] > 0
        assert figures["server_share"] == pytest.approx(
            figures["requests_per_s"] / figures["in_process_reviews_per_s"], abs=0.01
        )
        assert figures["single_request_p50_ms"] > 0 and figures["bare_forward_p50_ms"] > 0
    assert not (model / "onnx").exists()  # exported into a copy: the given directory is left as it was


def test_bench_serve_refuses_an_unknown_backend() -> None:
    with pytest.raises(SystemExit, match="--backends"):
        serve.main(["--backends", "pytorch,tensorrt"])
