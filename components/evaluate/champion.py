"""The deploy gate (`decide`): a healthy training, enough test reviews, skill beyond the no-skill baseline of
this test split (`no_skill`), ``min_accuracy`` as a floor, and not below the current champion.

The champion is the registered model version behind alias ``champion``.  How its accuracy on this test
split is found:

1. **Recorded**, when the champion's version tag ``test_split_hash`` equals this split's hash: the hash
   covers the test reviews and their labels (sorted `review_id`, `label_id`), so the recorded accuracy
   was measured on exactly these reviews.  A model's predictions are deterministic, so re-running it
   would give the same number; re-using it costs nothing and needs no download.  It also holds when the
   champion used another tokenizer or max length: each model is scored on the same reviews through its
   own pipeline.
2. **Re-evaluated**, when the split differs (new data, another seed) but the champion's tokenizer gives
   the same token ids as the candidate's (same vocabulary fingerprint): the champion's files are fetched
   from the registry and scored on this very split.
3. Otherwise the two cannot be compared on the same test split (another split *and* another tokenizer;
   the features hold token ids, not text), so the candidate is **not** deployed and the reason says
   so; move the alias by hand (`tracking.promote`) to override.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.common import batching as D
from components.common import schema
from components.common.inference import predict_classes

if TYPE_CHECKING:  # pragma: no cover - typing only
    from components.common.tracking import RegisteredVersion


def tokenizer_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 of the tokenizer's vocabulary (token → id): equal fingerprints give equal token ids."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()
    return hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()


@dataclass
class Champion:
    """The current champion and how its accuracy on this test split was obtained."""

    version: str
    accuracy: float | None
    method: str  # recorded | re-evaluated | incomparable
    note: str = ""


def champion_accuracy(
    champion: RegisteredVersion | None,
    test_hash: str,
    candidate_fingerprint: str,
    examples: D.Examples,
    fetch: Callable[[RegisteredVersion], str | Path],
) -> Champion | None:
    """The champion's accuracy on this test split (see the module docstring for the three cases).

    Args:
        champion: The version behind alias champion, or None.
        test_hash: `core.split_hash` of this test split.
        candidate_fingerprint: `tokenizer_fingerprint` of the candidate model.
        examples: The test split.
        fetch: Callable giving a local directory with the champion's files (called only when needed).
    """
    if champion is None:
        return None
    recorded = champion.tags.get("test_accuracy")
    if champion.tags.get("test_split_hash") == test_hash and recorded is not None:
        return Champion(champion.version, float(recorded), "recorded", "recorded on this same test split")
    try:
        local = Path(fetch(champion))
        same_tokenizer = tokenizer_fingerprint(local) == candidate_fingerprint
    except Exception as error:
        reason = " ".join(str(error).split())[:200]
        note = f"the champion was tested on another split and its files could not be read ({reason})"
        return Champion(champion.version, None, "incomparable", note)
    if not same_tokenizer:
        return Champion(
            champion.version,
            None,
            "incomparable",
            "the champion was tested on another split and uses another tokenizer, so it cannot be scored on "
            "these features",
        )
    predictions = predict_classes(local, examples)
    accuracy = float((predictions == examples.labels).mean())
    return Champion(champion.version, accuracy, "re-evaluated", "scored on this test split now")


#: One-sided z of the skill margin: a model that has no skill beats the no-skill rate by this many standard
#: errors only 5 % of the time (normal approximation of the binomial).
SKILL_Z = 1.645
#: A recorded accuracy is a tag with 6 decimals (`EvaluationReport.registry_tags`): equal within its rounding.
RECORDED_PRECISION = 5e-7
#: Fewer test reviews than this cannot be judged: one review moves the accuracy by more than 10 points.
MIN_TEST_REVIEWS = 10
#: Fewer test reviews than this decide the gate with a warning: one review moves the accuracy by more than a
#: point, and the no-skill margin is wide (0.08 for 100 balanced reviews).
FEW_TEST_REVIEWS = 100


@dataclass(frozen=True)
class Quality:
    """What the gate judges of the candidate: its test accuracy, macro-F1 and confusion matrix."""

    accuracy: float
    f1_macro: float
    #: Rows: true class id, columns: predicted class id (`components.common.metrics`).
    confusion_matrix: list[list[int]]

    @property
    def rows(self) -> int:
        return int(np.asarray(self.confusion_matrix).sum())

    @property
    def predicted_classes(self) -> list[int]:
        """The class ids the model predicted at least once."""
        return [int(i) for i in np.flatnonzero(np.asarray(self.confusion_matrix).sum(axis=0))]


@dataclass(frozen=True)
class NoSkill:
    """What a model without skill scores on this test split, and what the candidate must score to count as
    better (see `no_skill`)."""

    rows: int
    #: The most frequent true class (several when tied) and its share: the accuracy of always predicting it.
    majority_classes: list[str]
    majority_rate: float
    #: Macro-F1 of always predicting the majority class (the best constant predictor).
    constant_f1_macro: float
    #: z · sqrt(p(1 − p) / n): the one-sided 95 % margin of an accuracy measured on n reviews.
    margin: float

    @property
    def always(self) -> str:
        """The constant predictor in words: ``always 'positive'``, or ``always one of 'negative', 'neutral'``."""
        names = ", ".join(repr(name) for name in self.majority_classes)
        return f"always {names}" if len(self.majority_classes) == 1 else f"always one of {names}"

    @property
    def accuracy_needed(self) -> float:
        return self.majority_rate + self.margin

    @property
    def f1_macro_needed(self) -> float:
        return self.constant_f1_macro + self.margin


def no_skill(confusion_matrix: list[list[int]], z: float = SKILL_Z) -> NoSkill:
    """The no-skill baseline of the test split whose true class counts are the rows of ``confusion_matrix``.

    The rule: with n test reviews and p the share of the most frequent class, predicting that class for every
    review scores accuracy p and macro-F1 2p / (1 + p) / k (k classes; its class's F1 is 2p / (1 + p), the
    others' 0), the best any constant predictor scores.  The candidate must beat both by the margin
    z · sqrt(p(1 − p) / n), z = 1.645: the one-sided 95 % normal bound of a binomial accuracy on n reviews,
    so a split of 15 balanced reviews needs 0.333 + 0.200, one of 300 needs 0.333 + 0.045.
    """
    true = np.asarray(confusion_matrix, dtype=np.int64).sum(axis=1)
    n = int(true.sum())
    majority = int(true.argmax())
    p = float(true[majority] / n) if n else 0.0
    return NoSkill(
        rows=n,
        majority_classes=[D.CLASS_NAMES[i] for i in np.flatnonzero(true == true[majority])],
        majority_rate=p,
        constant_f1_macro=2 * p / (1 + p) / len(true) if n else 0.0,
        margin=z * math.sqrt(p * (1 - p) / n) if n else 0.0,
    )


@dataclass(frozen=True)
class TrainingOutcome:
    """How training ended, as train records it beside the model (`schema.TRAINING_OUTCOME_FILE`)."""

    stop_reason: str
    #: Health rule → the first message of each rule that fired.
    fired: dict[str, str]
    policy: str = "report"

    @classmethod
    def read(cls, model_dir: str | Path) -> TrainingOutcome | None:
        """The outcome in ``model_dir``, or None when the model was not written by train (no such file)."""
        path = Path(model_dir) / schema.TRAINING_OUTCOME_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(str(data.get("stop_reason", "")), dict(data.get("fired", {})), str(data.get("policy", "report")))

    def unhealthy(self) -> str | None:
        """Why the model must not be deployed: training was stopped by a health rule, or diverged; else None."""
        if self.stop_reason.startswith("health:"):
            rule = self.stop_reason.removeprefix("health:")
            return f"training was stopped by health rule {rule} ({self.fired.get(rule, 'no message')})"
        if DIVERGED in self.fired:
            return f"training diverged ({self.fired[DIVERGED]})"
        return None


#: The health rule that marks divergence (`components.train.health`), whatever the health policy.
DIVERGED = "loss_diverged"


@dataclass
class Decision:
    """Deploy or not, and why."""

    deploy: bool
    reason: str
    min_accuracy: float
    accuracy: float
    f1_macro: float | None = None
    test_rows: int | None = None
    no_skill: dict | None = None
    champion_version: str | None = None
    champion_accuracy: float | None = None
    champion_method: str | None = None


def warnings(
    test_rows: int, data_hash: str = "", champion: RegisteredVersion | None = None, champion_data_hash: str = ""
) -> list[str]:
    """What the user should know about how far the gate's decision can be trusted (it decides all the same):

    - fewer than `FEW_TEST_REVIEWS` test reviews decided it;
    - the champion it was compared with was trained on other data: its ``data_hash`` (SHA-256 of the input
      file, `components.common.tracking.lineage_tags`) differs from this run's.  The registry is shared by
      every run and checkout, so the champion may come from another data set; its accuracy was measured on,
      or re-scored on, this run's test split (`champion_accuracy`), but it learnt from other reviews.
    """
    found = []
    if test_rows < FEW_TEST_REVIEWS:
        found.append(
            f"only {test_rows} test reviews decide the deploy gate (fewer than {FEW_TEST_REVIEWS}): one review moves "
            f"the accuracy by {100 / max(test_rows, 1):.1f} points; more data, --max-rows or a larger "
            "--test-fraction give a decision to trust"
        )
    if champion is not None and data_hash and champion_data_hash and champion_data_hash != data_hash:
        found.append(
            f"the champion (version {champion.version} of {champion.name}) was trained on other data: its "
            f"data_hash {champion_data_hash[:12]} differs from this run's {data_hash[:12]}, so the comparison "
            "is between models of different data sets"
        )
    return found


def _refusals(quality: Quality, min_accuracy: float, baseline: NoSkill, training: TrainingOutcome | None) -> list[str]:
    """Every reason the candidate is not deployable on its own (before any champion comparison)."""
    found = []
    unhealthy = training.unhealthy() if training is not None else None
    if unhealthy:
        found.append(unhealthy)
    if quality.rows < MIN_TEST_REVIEWS:
        found.append(
            f"only {quality.rows} test reviews: the gate needs at least {MIN_TEST_REVIEWS} to judge a model (more "
            "data, a larger --test-fraction or --max-rows, or fewer rows dropped in prepare)"
        )
    predicted = quality.predicted_classes
    if len(predicted) == 1:
        found.append(f"the model predicts {D.CLASS_NAMES[predicted[0]]!r} for all {quality.rows} test reviews")
    if quality.accuracy < min_accuracy:
        found.append(f"test accuracy {quality.accuracy:.4f} is below --min-accuracy {min_accuracy:.4f}")
    if quality.accuracy < baseline.accuracy_needed or quality.f1_macro < baseline.f1_macro_needed:
        found.append(
            f"no better than no skill on these {baseline.rows} test reviews: accuracy {quality.accuracy:.4f} and "
            f"macro-F1 {quality.f1_macro:.4f} must reach {baseline.accuracy_needed:.4f} and "
            f"{baseline.f1_macro_needed:.4f} ({baseline.always} scores {baseline.majority_rate:.4f} "
            f"and {baseline.constant_f1_macro:.4f}; margin {baseline.margin:.4f})"
        )
    return found


def decide(
    quality: Quality, min_accuracy: float, champion: Champion | None, training: TrainingOutcome | None = None
) -> Decision:
    """The gate.  Deploy only when every one of these holds:

    1. training ended healthy: not stopped by a health rule (``--health-policy stop``) and not diverged
       (health rule ``loss_diverged``, under either policy);
    2. at least `MIN_TEST_REVIEWS` test reviews;
    3. the model predicts more than one class;
    4. test accuracy ≥ ``min_accuracy`` (the floor, 0.33 by default);
    5. accuracy **and** macro-F1 each at least the no-skill baseline of this test split plus the margin
       z · sqrt(p(1 − p) / n) (`no_skill`), whatever ``min_accuracy`` says;
    6. accuracy not below the champion's on the same test split (`champion_accuracy`).

    A refused model's reason lists every one of 1–5 that failed, with the figures.
    """
    baseline = no_skill(quality.confusion_matrix)
    base: dict = {
        "min_accuracy": min_accuracy,
        "accuracy": quality.accuracy,
        "f1_macro": quality.f1_macro,
        "test_rows": quality.rows,
        "no_skill": {
            **asdict(baseline),
            "accuracy_needed": baseline.accuracy_needed,
            "f1_macro_needed": baseline.f1_macro_needed,
        },
    }
    if champion is not None:
        base.update(
            champion_version=champion.version, champion_accuracy=champion.accuracy, champion_method=champion.method
        )
    refusals = _refusals(quality, min_accuracy, baseline, training)
    if refusals:
        return Decision(False, "; ".join(refusals), **base)
    passed = (
        f"test accuracy {quality.accuracy:.4f} and macro-F1 {quality.f1_macro:.4f} on {quality.rows} reviews beat "
        f"no skill ({baseline.majority_rate:.4f} and {baseline.constant_f1_macro:.4f}) by at least the margin "
        f"{baseline.margin:.4f}, and accuracy ≥ --min-accuracy {min_accuracy:.4f}"
    )
    if champion is None:
        return Decision(True, f"{passed}; no champion yet", **base)
    if champion.accuracy is None:
        return Decision(
            False,
            f"cannot compare with champion version {champion.version}: {champion.note}. Re-run the pipeline with "
            "the champion's base model and split, or promote this version by hand",
            **base,
        )
    if quality.accuracy < champion.accuracy - RECORDED_PRECISION:
        return Decision(
            False,
            f"test accuracy {quality.accuracy:.4f} is below champion version {champion.version}'s "
            f"{champion.accuracy:.4f} ({champion.note})",
            **base,
        )
    return Decision(
        True,
        f"{passed}, and ≥ champion version {champion.version}'s {champion.accuracy:.4f} ({champion.note})",
        **base,
    )
