"""KFP component: read, clean, label and balance the reviews."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Markdown, Metrics, Output

from components.common.image import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def prepare_reviews(
    data: str,
    text_column: str,
    rating_column: str,
    label_column: str,
    facet_column: str,
    group_column: str,
    min_facet_rows: int,
    balance: bool,
    max_rows: int,
    seed: int,
    cleaned_reviews: Output[Dataset],
    reviews: Output[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> NamedTuple("PrepareOutputs", [("data_hash", str)]):
    """Read reviews (CSV/TSV/Parquet, local path or fsspec URI), derive sentiment, clean and balance them.

    Args:
        data: Path or URI of the reviews file.
        text_column: Column with the review text.
        rating_column: Column with 1–5 star ratings (used when label_column is empty).
        label_column: Column with categorical labels (negative/neutral/positive or -1/0/1); empty to use ratings.
        facet_column: Column whose values the bias check compares (e.g. product category).
        group_column: Optional column for the conditional bias metric CDDL; empty for none.
        min_facet_rows: Facet values with fewer rows are dropped.
        balance: Down-sample every sentiment class to the smallest one.
        max_rows: Seeded cap on the rows passed on to featurization (0: no cap).
        seed: Seed for balancing and the cap.
        cleaned_reviews: Every usable row, before balancing (what the bias check reads).
        reviews: Balanced and capped rows for featurization.
        report: Row and class counts as JSON.
        metrics: Row and class counts.
        summary_md: The counts and the data's hash, for the dashboard.

    Returns:
        data_hash: SHA-256 of the input file (lineage of the model trained on it).
    """
    parameters = dict(locals())  # the step's options are handed on by name
    from components.common import options, report_md
    from components.prepare_data import core

    config = options.from_mapping(core.PrepareConfig, parameters, ignore_unknown=True)
    result = core.run(data, config, cleaned_reviews.path, reviews.path, report.path)
    items = core.metric_items(result)
    for name, value in items:
        metrics.log_metric(name, value)
    notes = [
        f"{result.rows_in} rows read from {result.source}; {result.rows_out} passed on"
        + (" (classes balanced)." if result.balanced else "."),
        f"Data SHA-256: {result.data_sha256}",
        *result.warnings,
    ]
    report_md.write(summary_md.path, "Prepare data", items, notes)
    outputs = NamedTuple("PrepareOutputs", [("data_hash", str)])  # noqa: UP014
    return outputs(result.data_sha256)
