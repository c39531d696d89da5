"""Review ids → model inputs, read from the Feast online store: the model server's serving by review id.

This is the preprocessing of KServe's Feast transformer sample (kserve/kserve,
docs/samples/v1beta1/transformer/feast/driver_transformer/driver_transformer/driver_transformer.py:
``DriverTransformer.preprocess`` turns ``{"instances": [...entity ids...]}`` into the predictor's inputs by
reading the entities' online features), done in the model server itself (`python -m serving
--feature-store DIR`) rather than in a transformer container in front of it: the sample calls Feast's
feature server over HTTP (``/get-online-features``); here the server opens the store with Feast's public
`FeatureStore` and reads with `FeatureStore.get_online_features` (`components.common.features`), so the
same `feature_store.yaml` (SQLite locally, Redis on a cluster) serves training's features to the model.

The online view holds each review's token ids as featurize made them (truncated, not padded, special tokens
included) — what training and evaluation fed the model — and no label or split (their view is offline only).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from kserve.errors import InvalidInput

from components.common import features as F
from components.common import schema

#: How many unknown ids an error message names before it counts the rest.
_NAMED = 10


class UnknownReviews(InvalidInput):
    """Review ids the online store holds no features for: HTTP 404 naming them (see `serving.server`)."""

    def __init__(self, review_ids: Sequence[str], store: str) -> None:
        named = ", ".join(repr(r) for r in review_ids[:_NAMED])
        more = f" and {len(review_ids) - _NAMED} more" if len(review_ids) > _NAMED else ""
        super().__init__(
            f"Unknown review id(s) {named}{more}: the feature store at {store} holds no features for them. "
            "Ingest them (the pipeline's feast_ingest step) or send the review texts instead."
        )
        self.review_ids = list(review_ids)


class OnlineFeatures:
    """The model inputs of reviews by id, from a Feast store's online store (what `feast_ingest` wrote)."""

    def __init__(self, store_dir: str | Path, feast_config: str = "local") -> None:
        """Open the store (`components.common.features.open_store`).

        Raises:
            ValueError: No registry or feature view there (nothing ingested), or a configuration that does
                not load (a missing variable, an unknown online store type).
        """
        self.where = str(Path(store_dir).expanduser().resolve())
        self.store = F.open_store(store_dir, feast_config)
        self._lock = threading.Lock()  # one Feast read at a time: FeatureStore is not documented thread-safe

    def token_ids(self, review_ids: Sequence[str]) -> list[np.ndarray]:
        """Each review's token ids, in the order given (one `get_online_features` call; blocks).

        Raises:
            UnknownReviews: Ids the online store holds nothing for (all of them, named).
        """
        with self._lock:
            frame = F.get_online_features(self.store, list(dict.fromkeys(review_ids)), [F.INPUT_IDS])
        found = dict(zip(frame[schema.REVIEW_ID], frame[F.INPUT_IDS], strict=True))
        unknown = [rid for rid, ids in found.items() if not ids]
        if unknown:
            raise UnknownReviews(unknown, self.where)
        return [np.asarray(found[rid], dtype=np.int64) for rid in review_ids]
