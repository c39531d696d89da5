"""The pipeline: prepare the reviews, then check them for bias (later steps extend this graph)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact

from components.bias_check.component import check_bias
from components.prepare_data.component import prepare_reviews
from components.prepare_data.core import PrepareConfig

PIPELINE_NAME = "bert-review-sentiment"
_PREP = PrepareConfig()


class PipelineOutputs(NamedTuple):
    data_report: Artifact
    bias_report: Artifact


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Product reviews → Clarify bias check → BERT features → Feast → tuning → training → "
    "evaluation → conditional KServe canary.",
)
def review_sentiment_pipeline(
    data: str,
    text_column: str = _PREP.text_column,
    rating_column: str = _PREP.rating_column,
    label_column: str = "",
    facet_column: str = _PREP.facet_column,
    group_column: str = "",
    min_facet_rows: int = _PREP.min_facet_rows,
    balance: bool = _PREP.balance,
    max_rows: int = 0,
    seed: int = _PREP.seed,
    max_abs_ci: float = 1.0,
    max_abs_dpl: float = 1.0,
) -> PipelineOutputs:
    """Build, train and deploy a BERT review-sentiment classifier.

    Args:
        data: Path or URI (s3://, gs://, minio via s3://) of the reviews: CSV, TSV or Parquet.
        text_column: Column with the review text.
        rating_column: Column with 1–5 star ratings.
        label_column: Column with categorical labels instead of ratings; empty to use ratings.
        facet_column: Column the bias check compares across (e.g. product category).
        group_column: Optional column for the conditional bias metric CDDL.
        min_facet_rows: Facet values with fewer rows are dropped.
        balance: Down-sample every sentiment class to the smallest.
        max_rows: Seeded cap on the rows featurized and trained on (0: no cap).
        seed: Seed of every random choice.
        max_abs_ci: Bias gate: fail when a facet value's |CI| exceeds this (1.0: off).
        max_abs_dpl: Bias gate: fail when a facet value's |DPL| exceeds this (1.0: off).
    """
    prepared = prepare_reviews(
        data=data,
        text_column=text_column,
        rating_column=rating_column,
        label_column=label_column,
        facet_column=facet_column,
        group_column=group_column,
        min_facet_rows=min_facet_rows,
        balance=balance,
        max_rows=max_rows,
        seed=seed,
    ).set_display_name("prepare data")
    bias = check_bias(
        cleaned_reviews=prepared.outputs["cleaned_reviews"], max_abs_ci=max_abs_ci, max_abs_dpl=max_abs_dpl
    ).set_display_name("bias check")
    return PipelineOutputs(data_report=prepared.outputs["report"], bias_report=bias.outputs["report_json"])
