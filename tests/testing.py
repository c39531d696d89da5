"""Helpers for tests and benchmarks (not shipped in an image): a tiny random BERT with the bundled tokenizer,
features from texts, synthetic reviews, a tiny classifier with skill.

Hugging Face's own test suites fine-tune tiny random models the same way: the code paths are the real ones,
only the network is small enough to train in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.common import batching as D
from components.common import modeling, schema

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd


def tiny_model(directory: str | Path, hidden: int = 32, layers: int = 2, dropout: float = 0.1) -> Path:
    """Save a randomly initialised small BERT with the bundled model's tokenizer under ``directory``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(modeling.bundled_model_path())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    with modeling.quiet_transformers():
        BertModel(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def features(
    texts: Sequence[str],
    label_ids: Sequence[int],
    max_seq_length: int = schema.MAX_SEQ_LENGTH,
    base_model: str = "",
    facets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Feature rows as featurize writes them (`review_id`, `input_ids`, `label_id`, `product_category`)."""
    import pandas as pd

    tokenizer = modeling.load_tokenizer(modeling.resolve_base_model(base_model))
    ids = tokenizer(list(texts), truncation=True, max_length=max_seq_length)["input_ids"]
    return pd.DataFrame(
        {
            schema.REVIEW_ID: [f"r{i:06d}" for i in range(len(texts))],
            D.INPUT_IDS: ids,
            D.LABEL_ID: [int(v) for v in label_ids],
            schema.FACET: list(facets) if facets is not None else ["all"] * len(texts),
        }
    )


_WORDS = {
    0: ["terrible", "awful", "returned", "cheap", "disappointing", "ripped", "worst", "poor"],
    1: ["okay", "average", "fine", "decent", "so-so", "mixed", "acceptable", "plain"],
    2: ["lovely", "perfect", "great", "beautiful", "love", "flattering", "excellent", "gorgeous"],
}
_FILLER = ["the", "dress", "fabric", "fit", "color", "size", "it", "was", "and", "really", "top", "shirt"]


def synthetic_reviews(rows: int, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """Short texts whose class shows in their words (texts, label ids, facets), balanced over classes."""
    rng = np.random.default_rng(seed)
    texts, labels, facets = [], [], []
    for i in range(rows):
        label = i % 3
        words = list(rng.choice(_FILLER, size=int(rng.integers(3, 12))))
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_WORDS[label])))
        texts.append(" ".join(words))
        labels.append(label)
        facets.append(str(rng.choice(["Dresses", "Knits", "Blouses"])))
    return texts, labels, facets


def skilled_classifier(directory: str | Path) -> Path:
    """A tiny classifier fine-tuned for 39 steps (~6 s on a CPU) on synthetic reviews (`synthetic_reviews`, seed
    11), written under ``directory`` as train writes a model (with its training outcome): it has skill (about
    0.67 accuracy on other synthetic reviews, where no skill scores 1/3), so the deploy gate lets it through.
    Returns the model directory."""
    from components.train import core
    from components.train.health import HealthArguments

    work = Path(directory)
    texts, labels, facets = synthetic_reviews(240, seed=11)
    frame = features(texts, labels, 32, facets=facets)
    args = core.TrainingArguments(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=3,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        save_steps=0,
        early_stopping_patience=0,
        warmup_ratio=0.0,
    )
    base = core.ModelArguments(str(tiny_model(work / "tiny", dropout=0.0)))
    result = core.train(
        frame.iloc[:200], frame.iloc[200:], base, core.DataArguments(max_seq_length=32), args, HealthArguments(),
        work / "model",
    )  # fmt: skip
    return Path(result.model_dir)
