"""The pipeline: prepare → bias check → featurize → Feast ingest → train → evaluate (deploy comes next)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact

from components.bias_check.component import check_bias
from components.evaluate.component import evaluate_classifier
from components.feast_ingest.component import ingest_features
from components.featurize.component import featurize_reviews
from components.featurize.core import FeaturizeConfig
from components.prepare_data.component import prepare_reviews
from components.prepare_data.core import PrepareConfig
from components.train.component import train_classifier
from components.train.core import TrainingArguments
from components.train.health import HealthArguments
from pipelines.profiles import Profile, place_on_gpu, use_feature_store

PIPELINE_NAME = "bert-review-sentiment"
_PREP = PrepareConfig()
_FEAT = FeaturizeConfig()
_TRAIN = TrainingArguments()
_HEALTH = HealthArguments()


class PipelineOutputs(NamedTuple):
    data_report: Artifact
    bias_report: Artifact
    features_report: Artifact
    feature_store_report: Artifact
    training_report: Artifact
    evaluation_report: Artifact


def build_pipeline(profile: Profile | None = None):
    """The pipeline, with the cluster placement of ``profile`` applied (None: no placement, for kfp.local)."""

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
        base_model: str = _FEAT.base_model,
        max_seq_length: int = _FEAT.max_seq_length,
        validation_fraction: float = _FEAT.validation_fraction,
        test_fraction: float = _FEAT.test_fraction,
        feature_store_dir: str = "/mnt/feast",
        feast_config: str = "cluster",
        feast_offline_path: str = "",
        epochs: int = _TRAIN.num_train_epochs,
        learning_rate: float = _TRAIN.learning_rate,
        batch_size: int = _TRAIN.per_device_train_batch_size,
        health_policy: str = _HEALTH.health_policy,
        checkpoint_root: str = "",
        mlflow_tracking_uri: str = "",
        registered_model_name: str = "",
        min_accuracy: float = 0.33,
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
            base_model: Hugging Face model id or directory (empty: the bundled MiniLM; `roberta-base` on clusters).
            max_seq_length: Tokens per review at most (longer reviews are truncated).
            validation_fraction: Share of each class held out for validation.
            test_fraction: Share of each class held out for the test.
            feature_store_dir: Feast store directory (a PVC mount on a cluster, the run directory locally).
            feast_config: `cluster` (Redis + PVC/S3), `local` (SQLite + Parquet) or a feature_store.yaml path.
            feast_offline_path: Offline Parquet location (relative to feature_store_dir, or s3://); empty: default.
            epochs: Passes over the training split (early stopping may end sooner).
            learning_rate: Peak AdamW learning rate.
            batch_size: Reviews per batch and GPU.
            health_policy: `report` firing training-health rules, or `stop` training when one fires.
            checkpoint_root: Persistent directory (a PVC) for checkpoints, so a retried training resumes.
            mlflow_tracking_uri: MLflow tracking URI; empty: $MLFLOW_TRACKING_URI of the pod, else embedded.
            registered_model_name: MLflow registered model (champion/challenger aliases); empty: default.
            min_accuracy: Deploy gate: test accuracy at least this and not below the champion's.
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
        features = featurize_reviews(
            reviews=prepared.outputs["reviews"],
            base_model=base_model,
            max_seq_length=max_seq_length,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
            event_timestamp="",
        ).set_display_name("featurize")
        features.after(bias)  # featurize only data that passed the bias gate
        stored = ingest_features(
            features=features.outputs["features"],
            store_dir=feature_store_dir,
            feast_config=feast_config,
            offline_path=feast_offline_path,
        ).set_display_name("feast ingest")
        use_feature_store(stored, profile)
        trained = train_classifier(
            feature_store=stored.outputs["store"],
            feast_config=feast_config,
            base_model=base_model,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            seed=seed,
            hyperparameters={},
            health_policy=health_policy,
            checkpoint_root=checkpoint_root,
            mlflow_tracking_uri=mlflow_tracking_uri,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            data_hash=prepared.outputs["data_hash"],
        ).set_display_name("train")
        place_on_gpu(use_feature_store(trained, profile), profile)
        evaluated = evaluate_classifier(
            feature_store=stored.outputs["store"],
            feast_config=feast_config,
            model=trained.outputs["model"],
            min_accuracy=min_accuracy,
            mlflow_tracking_uri=mlflow_tracking_uri,
            registered_model_name=registered_model_name,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("evaluate")
        use_feature_store(evaluated, profile)
        return PipelineOutputs(
            data_report=prepared.outputs["report"],
            bias_report=bias.outputs["report_json"],
            features_report=features.outputs["report"],
            feature_store_report=stored.outputs["report"],
            training_report=trained.outputs["report"],
            evaluation_report=evaluated.outputs["report_json"],
        )

    return review_sentiment_pipeline
