"""components.common.metrics on small cases worked out by hand (not against scikit-learn, which computes them)."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.metrics import classification_scores


@pytest.mark.parametrize(
    ("labels", "predictions", "confusion", "accuracy", "per_class", "f1_macro"),
    [
        pytest.param(
            [0, 0, 0, 1, 1, 2],
            [0, 0, 1, 1, 2, 2],
            [[2, 1, 0], [0, 1, 1], [0, 0, 1]],
            4 / 6,
            # (precision, recall, F1, support): F1 = 2PR / (P + R)
            [(1.0, 2 / 3, 0.8, 3), (0.5, 0.5, 0.5, 2), (0.5, 1.0, 2 / 3, 1)],
            (0.8 + 0.5 + 2 / 3) / 3,
            id="every class",
        ),
        pytest.param(
            [0, 0, 1, 1],
            [0, 0, 0, 0],
            [[2, 0, 0], [2, 0, 0], [0, 0, 0]],
            0.5,
            # neutral is never predicted, positive never occurs: undefined precision/recall/F1 count as 0
            [(0.5, 1.0, 2 / 3, 2), (0.0, 0.0, 0.0, 2), (0.0, 0.0, 0.0, 0)],
            (2 / 3) / 3,
            id="class never predicted and class absent",
        ),
        pytest.param(
            [2, 2, 2],
            [2, 2, 2],
            [[0, 0, 0], [0, 0, 0], [0, 0, 3]],
            1.0,
            [(0.0, 0.0, 0.0, 0), (0.0, 0.0, 0.0, 0), (1.0, 1.0, 1.0, 3)],
            1 / 3,  # macro-F1 averages all three classes
            id="one class, all right",
        ),
    ],
)
def test_scores(labels, predictions, confusion, accuracy, per_class, f1_macro) -> None:
    scores = classification_scores(np.array(labels), np.array(predictions))
    assert scores.confusion_matrix == confusion
    assert scores.accuracy == pytest.approx(accuracy)
    assert scores.f1_macro == pytest.approx(f1_macro)
    for name, (precision, recall, f1, support) in zip(("negative", "neutral", "positive"), per_class, strict=True):
        assert scores.per_class[name] == pytest.approx(
            {"precision": precision, "recall": recall, "f1": f1, "support": support}
        ), name


def test_scores_are_plain_python_numbers() -> None:
    """They go to JSON (summary.json) and KFP metrics as they are."""
    scores = classification_scores(np.array([0, 1]), np.array([0, 2]))
    assert type(scores.accuracy) is float and type(scores.confusion_matrix[0][0]) is int
    assert type(scores.per_class["negative"]["support"]) is int
