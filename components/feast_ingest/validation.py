"""Validation of the features table before anything is written (every row, with the offending review ids)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common import features as F
from components.common import schema

#: The features table as ingest expects it (what featurize writes).
FEATURES_SCHEMA = F.FEATURES_SCHEMA
_NUM_CLASSES = len(schema.LABEL_TO_ID)


def _examples(values: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return shown + (", ..." if len(values) > limit else "")


def read_features(path: str | Path) -> pa.Table:
    """The features Parquet written by featurize, validated (see `validate_features`)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"Cannot read features {str(path)!r} as Parquet: {error}") from error
    return validate_features(table, str(path))


def validate_features(table: pa.Table, source: str = "features") -> pa.Table:
    """Check every row before anything is written; returns the table cast to `FEATURES_SCHEMA`.

    Raises:
        ValueError: Missing columns or wrong types, no rows, missing or duplicate review ids, empty or
            negative token ids, label ids outside 0-2, unknown splits, missing timestamps or facet values.
            The message names the column and some offending review ids.
    """
    missing = [c for c in FEATURES_SCHEMA.names if c not in table.column_names]
    if missing:
        raise ValueError(
            f"Features {source!r} lack column(s) {missing} (have {table.column_names}); "
            "ingest reads featurize's output."
        )
    if table.num_rows == 0:
        raise ValueError(f"Features {source!r} hold no rows; nothing to ingest.")
    columns = {}
    for column in FEATURES_SCHEMA:
        try:
            columns[column.name] = table[column.name].cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(
                f"Column {column.name!r} of {source!r} is {table[column.name].type}, expected {column.type}: {error}"
            ) from error
    table = pa.table(columns, schema=FEATURES_SCHEMA).combine_chunks()
    ids = table[schema.REVIEW_ID]

    def fail(mask: pa.ChunkedArray | pa.Array, what: str) -> None:
        mask = pc.fill_null(mask, True)
        if pc.any(mask).as_py():
            bad = ids.filter(mask).to_pylist()
            raise ValueError(
                f"{len(bad)} row(s) of {source!r} {what} (review_id {_examples(bad)}); nothing was written. "
                "Re-run featurize on clean input."
            )

    if ids.null_count:
        raise ValueError(f"{ids.null_count} row(s) of {source!r} have no review_id; nothing was written.")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        dupes = [v["values"] for v in pc.value_counts(ids).to_pylist() if v["counts"] > 1]
        raise ValueError(f"review_id is not unique in {source!r}: {_examples(dupes)}; nothing was written.")
    token_ids = table[F.INPUT_IDS]
    fail(pc.less_equal(pc.list_value_length(token_ids), 0), "have no token ids")
    flat = pc.list_flatten(token_ids)
    if flat.null_count or (len(flat) and pc.min(flat).as_py() < 0):
        parents = pc.list_parent_indices(token_ids)
        bad_rows = pc.unique(parents.filter(pc.fill_null(pc.less(flat, 0), True)))
        mask = pc.is_in(pa.array(range(table.num_rows)), value_set=bad_rows)
        fail(mask, "have missing or negative token ids")
    fail(
        pc.invert(pc.and_(pc.greater_equal(table[F.LABEL_ID], 0), pc.less(table[F.LABEL_ID], _NUM_CLASSES))),
        f"have a label_id outside 0-{_NUM_CLASSES - 1}",
    )
    fail(pc.invert(pc.is_in(table[F.SPLIT], value_set=pa.array(F.SPLITS))), f"have a split other than {F.SPLITS}")
    fail(pc.is_null(table[F.EVENT_TIMESTAMP]), "have no event_timestamp")
    fail(pc.is_null(table[schema.FACET]), f"have no {schema.FACET}")
    return table.sort_by([(schema.REVIEW_ID, "ascending")])
