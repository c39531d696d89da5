"""bench quality --tuned: its search (one study of the tune step, the default spec's space, the median rule)
on a tiny random BERT and synthetic reviews; the final fit is the untuned benchmark's own code."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import quality
from tests import testing


@pytest.mark.slow  # about 25-60 s: runs in CI's `-m slow` pass
def test_search_runs_a_study_on_the_train_subset_and_the_validation_split(tmp_path: Path) -> None:
    tiny = testing.tiny_model(tmp_path / "tiny", dropout=0.0)
    texts, labels, facets = testing.synthetic_reviews(90, seed=4)
    frame = testing.features(texts, labels, 24, facets=facets).assign(
        split=["train"] * 60 + ["validation"] * 15 + ["test"] * 15
    )
    found = quality.search(
        frame, tmp_path / "search", trials=2, rows=30, eval_steps=1, max_seq_length=24, seed=3, base_model=str(tiny)
    )
    assert found["study"] == "tpe-medianstop"
    assert found["rows"] == {"train": 30, "validation": 15}  # the test split is not searched on
    assert found["search"]["lr_min"] == 5e-5 and found["search"]["lr_max"] == 2e-4  # the default spec's space
    assert tuple(found["search"]["batch_sizes"]) == (16, 32)
    assert len(found["curve"]) == 2 and found["counts"]["fail"] == 0
    assert set(found["best_params"]) == {"learning_rate", "per_device_train_batch_size"}
    assert 5e-5 <= found["best_params"]["learning_rate"] <= 2e-4
    assert found["best_value"] == max(c["value"] for c in found["curve"] if c["state"] == "COMPLETE")


def test_tuned_needs_the_course_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIEWS_CSV", raising=False)
    with pytest.raises(SystemExit, match="REVIEWS_CSV"):
        quality.main(["--tuned", "--trials", "2"])
