"""The smoke test of a deployed model: held-out reviews whose answers evaluate already knows.

The features hold token ids, not text, so the reviews come from two hand-offs: evaluate's `predictions`
(each test review's id, predicted label and class probabilities) and prepare's `reviews` (id and text, the
very rows featurize tokenized).  `smoke_set` joins them and picks up to N reviews, taking the predicted
classes in turn (by review id within each class), so every class the model predicts is exercised and the
choice is the same on every run.  `compare` checks the server's labels against evaluate's.

A label may differ only where evaluate's two most probable classes lie within `TIE_TOLERANCE` of each
other: the server pads each request's texts to their own longest one, evaluate batched reviews of other
lengths, and float arithmetic in another order can flip an exact tie — never a clear answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common import schema

#: Largest gap between evaluate's top two class probabilities under which a differing label counts as a tie.
TIE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SmokeReview:
    """One held-out review: its text and what evaluate's model answered."""

    review_id: str
    text: str
    label: str
    probabilities: dict[str, float]

    @property
    def margin(self) -> float:
        """Evaluate's top class probability minus its second."""
        top = sorted(self.probabilities.values(), reverse=True)
        return top[0] - top[1] if len(top) > 1 else top[0]


def _read(path: str | Path, what: str, columns: list[str]) -> Any:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError...
        raise ValueError(f"Cannot read {what} {str(path)!r}: {' '.join(str(error).split())[:200]}") from error
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} {str(path)!r} lacks column(s) {missing} (has {list(frame.columns)}); pass the output of the "
            "step that writes it."
        )
    return frame


def smoke_set(predictions_path: str | Path, reviews_path: str | Path, count: int) -> list[SmokeReview]:
    """Up to ``count`` test reviews with their texts and evaluate's answers (see the module docstring).

    Args:
        predictions_path: Evaluate's `predictions` (Parquet).
        reviews_path: Prepare's `reviews` (Parquet with `review_id` and the review text).
        count: How many reviews at most.

    Raises:
        ValueError: A file that cannot be read or lacks its columns, no predictions, or predicted reviews whose
            text is not in ``reviews_path`` (the two come from different runs).
    """
    if count < 1:
        raise ValueError(f"--smoke-reviews must be at least 1, got {count}.")
    predictions = _read(predictions_path, "evaluate's predictions", [schema.REVIEW_ID, schema.PREDICTED_LABEL])
    reviews = _read(reviews_path, "prepare's reviews", [schema.REVIEW_ID, schema.TEXT])
    if predictions.empty:
        raise ValueError(f"evaluate's predictions {str(predictions_path)!r} are empty: no review to smoke-test with.")
    prefix = schema.PROBABILITY_PREFIX
    classes = [c[len(prefix) :] for c in predictions.columns if c.startswith(prefix)]
    texts = dict(zip(reviews[schema.REVIEW_ID].astype(str), reviews[schema.TEXT].astype(str), strict=True))
    predictions = predictions.assign(**{schema.REVIEW_ID: predictions[schema.REVIEW_ID].astype(str)})
    missing = sorted(set(predictions[schema.REVIEW_ID]) - set(texts))
    if missing:
        raise ValueError(
            f"{len(missing)} reviews of evaluate's predictions (e.g. {missing[:3]}) are not in prepare's reviews "
            f"{str(reviews_path)!r}: pass the `reviews` output of the same pipeline run."
        )
    by_class = {
        label: rows.sort_values(schema.REVIEW_ID).to_dict("records")
        for label, rows in predictions.groupby(schema.PREDICTED_LABEL, sort=True)
    }
    picked: list[dict[str, Any]] = []
    depth = 0
    while len(picked) < min(count, len(predictions)):
        picked += [rows[depth] for rows in by_class.values() if depth < len(rows)][: count - len(picked)]
        depth += 1
    return [
        SmokeReview(
            review_id=row[schema.REVIEW_ID],
            text=texts[row[schema.REVIEW_ID]],
            label=str(row[schema.PREDICTED_LABEL]),
            probabilities={c: float(row[prefix + c]) for c in classes},
        )
        for row in picked
    ]


@dataclass
class Mismatch:
    """A review the server labelled otherwise than evaluate."""

    review_id: str
    expected: str
    served: str
    margin: float


@dataclass
class SmokeResult:
    """How the served model's answers compare with evaluate's."""

    reviews: int
    matched: int
    ties: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    max_probability_difference: float | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.ok}

    def describe(self) -> str:
        """One line: what matched, and the first mismatches."""
        text = f"{self.matched}/{self.reviews} labels equal evaluate's"
        if self.ties:
            text += f" ({self.ties} near-ties within {TIE_TOLERANCE:g} differ)"
        if self.max_probability_difference is not None:
            text += f", largest probability difference {self.max_probability_difference:.2g}"
        if self.mismatches:
            shown = "; ".join(f"{m.review_id}: evaluate {m.expected}, served {m.served}" for m in self.mismatches[:3])
            text += f"; mismatches: {shown}"
        return text


def v1_predictions(body: bytes) -> list[dict[str, Any]] | None:
    """The ``predictions`` list of a V1 answer's body, or None when it holds none (not JSON, no list)."""
    try:
        predictions = json.loads(body)["predictions"]
    except (ValueError, KeyError, TypeError):
        return None
    return predictions if isinstance(predictions, list) else None


def compare(reviews: list[SmokeReview], answers: list[dict[str, Any]]) -> SmokeResult:
    """Compare the server's V1 answers (``{"label", "score", "probabilities"}`` per review, in order) with evaluate's.

    Raises:
        ValueError: Not one answer per review, or an answer without a label.
    """
    if len(answers) != len(reviews):
        raise ValueError(f"The model server answered {len(answers)} predictions for {len(reviews)} reviews.")
    result = SmokeResult(reviews=len(reviews), matched=0)
    differences: list[float] = []
    for review, answer in zip(reviews, answers, strict=True):
        if not isinstance(answer, dict) or "label" not in answer:
            raise ValueError(f"The model server's answer {str(answer)[:200]!r} has no label.")
        served = answer.get("probabilities") or {}
        differences += [abs(float(served[c]) - p) for c, p in review.probabilities.items() if c in served]
        if answer["label"] == review.label:
            result.matched += 1
        elif review.margin <= TIE_TOLERANCE:
            result.ties += 1
        else:
            result.mismatches.append(Mismatch(review.review_id, review.label, str(answer["label"]), review.margin))
    result.max_probability_difference = max(differences) if differences else None
    return result
