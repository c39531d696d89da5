"""Classification quality of the 3-class sentiment model: what train (validation) and evaluate (test) report.

The numbers come from `sklearn.metrics` with every class counted, also one that never occurs
(``labels=[0, 1, 2]``) and a precision, recall or F1 that is undefined is 0 (``zero_division=0``).  Macro-F1
is the plain mean of the three per-class F1 values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.common import batching as D


@dataclass(frozen=True)
class ClassificationScores:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix of one split."""

    accuracy: float
    f1_macro: float
    #: Class name (`batching.CLASS_NAMES`) → precision, recall, f1, support.
    per_class: dict[str, dict[str, float]]
    #: Rows: true class id, columns: predicted class id.
    confusion_matrix: list[list[int]]


def classification_scores(labels: np.ndarray, predictions: np.ndarray) -> ClassificationScores:
    """Scores of ``predictions`` against ``labels`` (class ids 0..2, at least one row)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = list(range(D.NUM_LABELS))
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    matrix = confusion_matrix(labels, predictions, labels=classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(D.CLASS_NAMES)
    }
    return ClassificationScores(
        accuracy=float(accuracy_score(labels, predictions)),
        f1_macro=float(np.mean(f1)),
        per_class=per_class,
        confusion_matrix=matrix.tolist(),
    )
