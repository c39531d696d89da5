"""The deploy gate: the candidate's test accuracy against ``min_accuracy`` and against the current champion.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.common import batching as D
from components.common.modeling import predict_classes

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


@dataclass
class Decision:
    """Deploy or not, and why."""

    deploy: bool
    reason: str
    min_accuracy: float
    accuracy: float
    champion_version: str | None = None
    champion_accuracy: float | None = None
    champion_method: str | None = None


def decide(accuracy: float, min_accuracy: float, champion: Champion | None) -> Decision:
    """The gate: accuracy ≥ min_accuracy and ≥ the champion's accuracy on the same test split."""
    base = {"min_accuracy": min_accuracy, "accuracy": accuracy}
    if champion is not None:
        base.update(
            champion_version=champion.version, champion_accuracy=champion.accuracy, champion_method=champion.method
        )
    if accuracy < min_accuracy:
        return Decision(False, f"test accuracy {accuracy:.4f} is below --min-accuracy {min_accuracy:.4f}", **base)
    if champion is None:
        return Decision(
            True, f"test accuracy {accuracy:.4f} ≥ --min-accuracy {min_accuracy:.4f}; no champion yet", **base
        )
    if champion.accuracy is None:
        return Decision(
            False,
            f"cannot compare with champion version {champion.version}: {champion.note}. Re-run the pipeline with "
            "the champion's base model and split, or promote this version by hand",
            **base,
        )
    if accuracy < champion.accuracy:
        return Decision(
            False,
            f"test accuracy {accuracy:.4f} is below champion version {champion.version}'s {champion.accuracy:.4f} "
            f"({champion.note})",
            **base,
        )
    return Decision(
        True,
        f"test accuracy {accuracy:.4f} ≥ --min-accuracy {min_accuracy:.4f} and ≥ champion version "
        f"{champion.version}'s {champion.accuracy:.4f} ({champion.note})",
        **base,
    )
