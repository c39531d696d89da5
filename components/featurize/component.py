"""KFP component: tokenize the reviews for BERT and split them into train/validation/test."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from components.common.image import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def featurize_reviews(
    reviews: Input[Dataset],
    base_model: str,
    max_seq_length: int,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    event_timestamp: str,
    features: Output[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> None:
    """Tokenize reviews with the base model's fast tokenizer (unpadded ids) and make a stratified split.

    Args:
        reviews: Prepared reviews (Parquet) from prepare_reviews.
        base_model: Hugging Face model id (local cache) or model directory; empty for the bundled MiniLM.
        max_seq_length: Token ids are truncated to this many (special tokens included).
        validation_fraction: Share of each class in the validation split.
        test_fraction: Share of each class in the test split.
        seed: Seed of the split.
        event_timestamp: ISO-8601 event time of these features in the feature store; empty for now.
        features: review_id, input_ids, label_id, split, product_category, event_timestamp (Parquet).
        report: Rows per split and class, token-length statistics, tokenizer (JSON; summary `features`).
        metrics: Rows per split and token-length statistics.
        summary_md: Rows per split and token lengths, for the dashboard.
    """
    parameters = dict(locals())  # the step's options are handed on by name
    from components.common import options, report_md
    from components.featurize import core

    config = options.from_mapping(core.FeaturizeConfig, parameters, ignore_unknown=True)
    result = core.run(reviews.path, features.path, config, report.path, core.parse_timestamp(event_timestamp))
    items = core.metric_items(result)
    for name, value in items:
        metrics.log_metric(name, value)
    tokenizer = f"{result.tokenizer.get('base_model')}'s {result.tokenizer.get('class')}"
    notes = [f"{result.rows} reviews tokenized with {tokenizer}, cut to {result.max_seq_length} tokens."]
    report_md.write(summary_md.path, "Featurize", items, notes)
