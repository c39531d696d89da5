"""The evaluate step's options, declared once (see `components.common.options`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common import tracking


@dataclass(frozen=True)
class EvaluateConfig:
    """The deploy gate and the MLflow registry the challenger is compared in."""

    min_accuracy: float = field(
        default=0.33,
        metadata={
            "help": "Deploy gate's floor: test accuracy at least this (course: 0.33). The model must also beat "
            "the test split's no-skill baseline (majority-class accuracy and macro-F1) by a margin for its size, "
            "and not be below the MLflow champion's.",
            "min": 0,
            "max": 1,
        },
    )
    registered_model_name: str = field(
        default="",
        metadata={"help": "MLflow registered model (champion/challenger aliases); empty: review-sentiment-classifier."},
    )
    mlflow_tracking_uri: str = field(default="", metadata={"help": tracking.TRACKING_URI_HELP})
    min_facet_test_rows: int = field(
        default=10, metadata={"help": "Facet values with fewer test rows are left out of the accuracy gap.", "min": 1}
    )
