"""bench quantize on a small random classifier: every setting quantises, scores and times the same reviews."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import quantize
from serving.testing import untrained_classifier
from tests import testing


def test_each_setting_is_scored_against_pytorch(tmp_path: Path, reviews_csv: Path, monkeypatch) -> None:
    monkeypatch.setenv("REVIEWS_CSV", str(reviews_csv))
    model = untrained_classifier(str(testing.tiny_model(tmp_path / "tiny")), tmp_path / "model")
    found = quantize.main(["--model-dir", str(model), "--max-seq-length", "32"])
    variants = found["variants"]
    assert found["reviews"] == 708 and found["baseline"] == 0.99  # the balanced validation + test splits
    assert len(variants) == 2 + 5 + len(quantize.BLOCKS) and variants["onnx fp32"]["equal_to_pytorch"] == 1.0
    for name, figures in variants.items():
        assert figures["ms_per_review"] > 0 and 0 <= figures["accuracy"] <= 1, name
        changed = figures.get("largest_margin_changed", 0.0)  # 0 where no label changed
        assert (changed == 0.0) == (figures.get("equal_to_pytorch", 1.0) == 1.0), name
    quantiles = found["pytorch_margin_quantiles"]
    assert list(quantiles) == ["1%", "2%", "5%"] and 0 <= quantiles["1%"] <= quantiles["2%"] <= quantiles["5%"]
    assert found["value"] == variants["onnx int8, train (per channel, 7-bit)"]["equal_to_pytorch"]
    assert not (model / "onnx").exists()  # quantised in a copy: the model directory is left as it was


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a model directory"):
        quantize.main(["--model-dir", str(tmp_path)])


def test_the_command_refuses_bad_input_with_exit_2_and_one_line(tmp_path: Path, capsys) -> None:
    from bench.__main__ import main

    assert main(["quantize", "--model-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [
        f"error: --model-dir {str(tmp_path)!r} is not a model directory train wrote"
    ]
