"""Fixtures for the model server's tests: a servable tiny classifier directory, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with the bundled tokenizer and the pipeline's 3-label head, saved as train saves a
    model (`save_pretrained`: weights, config with id2label, tokenizer)."""
    from serving.testing import untrained_classifier
    from tests import testing

    root = tmp_path_factory.mktemp("serving-model")
    base = testing.tiny_model(root / "base", dropout=0.0)
    return untrained_classifier(base, root / "model")


@pytest.fixture(scope="session")
def classifier(model_dir: Path):  # -> SentimentClassifier
    """The model of `model_dir`, loaded in this process (what the server's answers are compared with)."""
    from serving.classifier import SentimentClassifier

    return SentimentClassifier.load(model_dir)
