"""Shared fixtures: the real course data (when present) and small in-memory review tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _components_logging_as_a_new_process() -> Iterator[None]:
    """Each test sees the ``components`` logger as a fresh process does: a CLI run in-process by one test
    (`components.common.logs.configure_logging`) would otherwise print the progress lines and warnings of every
    later test on stderr, and a later test of one-error-line stderr would count them."""
    logger = logging.getLogger("components")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(scope="session")
def reviews_csv() -> Path:
    """The course CSV named by $REVIEWS_CSV (`.ci/run` sets it); skipped where it is not available."""
    value = os.environ.get("REVIEWS_CSV")
    if not value:
        pytest.skip("REVIEWS_CSV is not set: point it at ../shared/data/womens_clothing_ecommerce_reviews.csv")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"REVIEWS_CSV={value} does not exist")
    return path


@pytest.fixture(scope="session")
def clarify_unbalanced(reviews_csv: Path) -> Path:
    """Real SageMaker Clarify output of the course's bias job, beside the course CSV."""
    path = reviews_csv.parent / "clarify" / "course_analysis_unbalanced.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def make_reviews(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small table in the course CSV's schema with every rating and three facet values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "Review Text": [f"review number {i} is {'good' if i % 3 else 'bad'}" for i in range(rows)],
            "Rating": rng.integers(1, 6, size=rows),
            "Class Name": rng.choice(["Dresses", "Knits", "Blouses"], size=rows),
            "Age": rng.integers(18, 80, size=rows),
        }
    )


@pytest.fixture
def small_reviews() -> pd.DataFrame:
    return make_reviews()
