"""Evaluate a trained classifier on the test split and decide whether it may be deployed.

Quality: accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix.  Post-training bias:
accuracy per facet value (product category), each value's accuracy difference to the rest (Clarify's
post-training metric AD = acc(rest) − acc(value)), and the gap between the best and worst facet value
among values with at least ``min_facet_rows`` test rows.

The deploy gate (`components.evaluate.champion.decide`): training ended healthy (its outcome file beside the
model), enough test reviews, more than one class predicted, accuracy ≥ ``min_accuracy``, accuracy and
macro-F1 above what no skill scores on this test split by a margin for its size, **and** not below the
current champion (the registered model version behind alias ``champion``) on the same test split —
`components.evaluate.champion` explains the rule and how the champion's accuracy is found.  The metrics are
`components.common.metrics` (scikit-learn), the same as train's validation metrics; the page is
`components.common.report_html`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D
from components.common import report_html, schema
from components.common.inference import predict_classes as predict  # noqa: F401 (bench train calls it from here)
from components.common.metrics import classification_scores
from components.evaluate import champion as gate
from components.evaluate.champion import Quality, TrainingOutcome, champion_accuracy, decide, tokenizer_fingerprint
from components.evaluate.config import EvaluateConfig
from components.evaluate.predictions import predict_probabilities, prediction_table, write_predictions

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from components.common.tracking import RegisteredVersion

#: The deploy gate's accuracy floor (the course's value); declared in `EvaluateConfig`. See `champion.decide`.
DEFAULT_MIN_ACCURACY = EvaluateConfig().min_accuracy
#: Facet values with fewer test rows are shown but left out of the gap (their accuracy is noise).
DEFAULT_MIN_FACET_ROWS = EvaluateConfig().min_facet_test_rows
#: Tokens per review when the caller does not say (featurize's and the model server's default).
DEFAULT_MAX_SEQ_LENGTH = schema.MAX_SEQ_LENGTH


# --- metrics ----------------------------------------------------------------------------------------


def split_hash(review_ids: list[str], labels: np.ndarray) -> str:
    """SHA-256 of the sorted (review_id, label_id) pairs: which reviews, with which labels."""
    digest = hashlib.sha256()
    for rid, label in sorted(zip(review_ids, (int(v) for v in labels), strict=True)):
        digest.update(f"{rid}\t{label}\n".encode())
    return digest.hexdigest()


def facet_metrics(
    labels: np.ndarray, predictions: np.ndarray, facets: list[str], min_rows: int = DEFAULT_MIN_FACET_ROWS
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Accuracy per facet value with its difference to the rest, and the best-minus-worst gap.

    Returns:
        (per value: rows, accuracy, accuracy_difference = acc(rest) − acc(value);
        gap: value, best/worst facet value and their accuracies, over values with ≥ ``min_rows`` rows).
    """
    correct = np.asarray(labels) == np.asarray(predictions)
    values = np.asarray(facets, dtype=object)
    per: dict[str, dict[str, float]] = {}
    for value in sorted(set(facets)):
        mine = values == value
        rest = ~mine
        accuracy = float(correct[mine].mean())
        per[value] = {
            "rows": int(mine.sum()),
            "accuracy": accuracy,
            "accuracy_difference": float(correct[rest].mean()) - accuracy if rest.any() else 0.0,
        }
    counted = {v: m for v, m in per.items() if m["rows"] >= min_rows}
    gap: dict[str, Any] = {"min_rows": min_rows, "values_counted": len(counted)}
    if len(counted) >= 2:
        best = max(counted, key=lambda v: counted[v]["accuracy"])
        worst = min(counted, key=lambda v: counted[v]["accuracy"])
        gap.update(
            value=counted[best]["accuracy"] - counted[worst]["accuracy"],
            best=best,
            best_accuracy=counted[best]["accuracy"],
            worst=worst,
            worst_accuracy=counted[worst]["accuracy"],
        )
    else:
        gap["value"] = None
    return per, gap


# --- the report -------------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """Everything evaluate found, for summary.json (`evaluation`), KFP outputs, MLflow and the HTML page."""

    rows: int
    accuracy: float
    f1_macro: float
    per_class: dict[str, dict[str, float]]
    categories: list[str]
    confusion_matrix: list[list[int]]
    per_facet_accuracy: dict[str, dict[str, float]]
    facet_accuracy_gap: dict[str, Any]
    test_split_hash: str
    tokenizer_fingerprint: str
    model: str
    decision: dict[str, Any] = field(default_factory=dict)
    registered_version: str | None = None
    #: The registered model that version belongs to.
    registered_model: str | None = None
    #: SHA-256 of the input file the model learnt from (prepare's ``data_sha256``), and the champion's.
    data_hash: str = ""
    champion_data_hash: str | None = None
    #: What to know about the decision (`champion.warnings`): few test reviews, a champion of other data.
    warnings: list[str] = field(default_factory=list)
    #: The logged MLflow model (``models:/m-...``) and the pipeline's MLflow run (ids, UI link; summary.json's
    #: ``mlflow_run``).
    model_uri: str | None = None
    mlflow_run: dict[str, str] | None = None
    #: Each test review's prediction (`components.evaluate.predictions`); not part of the JSON report.
    predictions: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, predictions=None))
        data.pop("predictions")
        return data

    def headline(self) -> dict[str, float]:
        """Numbers for KFP Metrics and MLflow."""
        out = {"accuracy": self.accuracy, "f1_macro": self.f1_macro, "rows": float(self.rows)}
        for name, values in self.per_class.items():
            out[f"precision_{name}"] = values["precision"]
            out[f"recall_{name}"] = values["recall"]
        if self.facet_accuracy_gap.get("value") is not None:
            out["facet_accuracy_gap"] = self.facet_accuracy_gap["value"]
        if self.decision:
            out["deploy"] = float(self.decision["deploy"])
            if self.decision.get("champion_accuracy") is not None:
                out["champion_accuracy"] = self.decision["champion_accuracy"]
        return out

    def registry_tags(self) -> dict[str, str]:
        """Tags a registered version gets, so a later evaluate can compare with it."""
        return {
            "test_accuracy": f"{self.accuracy:.6f}",
            "test_f1_macro": f"{self.f1_macro:.6f}",
            "test_rows": str(self.rows),
            "test_split_hash": self.test_split_hash,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "deploy_decision": "deploy" if self.decision.get("deploy") else "skip",
            **({"data_hash": self.data_hash} if self.data_hash else {}),
        }


def build_report(
    examples: D.Examples, predictions: np.ndarray, model: str, fingerprint: str, min_facet_rows: int
) -> EvaluationReport:
    """Quality and per-facet metrics of ``predictions`` on ``examples`` (decision filled in later)."""
    scores = classification_scores(examples.labels, predictions)
    facets = examples.facets or ["(all)"] * len(examples)
    per_facet, gap = facet_metrics(examples.labels, predictions, facets, min_facet_rows)
    return EvaluationReport(
        rows=len(examples),
        accuracy=scores.accuracy,
        f1_macro=scores.f1_macro,
        per_class=scores.per_class,
        categories=list(D.CLASS_NAMES),
        confusion_matrix=scores.confusion_matrix,
        per_facet_accuracy=per_facet,
        facet_accuracy_gap=gap,
        test_split_hash=split_hash(examples.review_ids or [], examples.labels),
        tokenizer_fingerprint=fingerprint,
        model=model,
    )


#: The evaluation page (see `components.common.report_html`; every string is escaped).
_PAGE = """{% extends "page.html" %}
{% block title %}Evaluation: {{ "%.3f"|format(r.accuracy) }} accuracy{% endblock %}
{% block style %}.decision{border-left:6px solid {{ colour }};padding:.4em .8em;background:#fafafa}
.warning{border-left:6px solid #ef6c00;padding:.4em .8em;background:#fff8e1}{% endblock %}
{% block body %}
<h2>Test-split evaluation</h2>
<p class="decision"><b>{{ verdict }}</b>: {{ reason }}</p>
{% for w in r.warnings %}<p class="warning">⚠ {{ w }}</p>
{% endfor %}<p>{{ r.rows }} test reviews · accuracy <b>{{ "%.4f"|format(r.accuracy) }}</b> ·
macro-F1 <b>{{ "%.4f"|format(r.f1_macro) }}</b> · model <code>{{ model }}</code> ·
test split <code>{{ r.test_split_hash[:12] }}</code></p>
<h3>Confusion matrix</h3>
{{ confusion }}
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for name, c in r.per_class.items() %}
<tr><td>{{ name }}</td><td>{{ "%.3f"|format(c["precision"]) }}</td><td>{{ "%.3f"|format(c["recall"]) }}</td>
<td>{{ "%.3f"|format(c["f1"]) }}</td><td>{{ c["support"] }}</td></tr>
{% endfor %}
</table>
<h3>Accuracy per facet value (post-training bias)</h3>
<p>Gap: {% if gap.value is not none %}{{ "%.3f"|format(gap.value) }} between {{ gap.best }}
({{ "%.3f"|format(gap.best_accuracy) }}) and {{ gap.worst }} ({{ "%.3f"|format(gap.worst_accuracy) }}), over
{{ gap.values_counted }} values with ≥ {{ gap.min_rows }} test rows
{%- else %}not computed: fewer than two facet values with ≥ {{ gap.min_rows }} test rows{% endif %}.
AD = accuracy of the other rows − accuracy of the value (Clarify's post-training metric).</p>
{{ facet_chart }}
<table><tr><th>facet value</th><th>rows</th><th>accuracy</th><th>AD</th></tr>
{% for v in facets %}
{% set m = r.per_facet_accuracy[v] %}
<tr><td>{{ v }}</td><td>{{ m["rows"] }}</td><td>{{ "%.3f"|format(m["accuracy"]) }}</td>
<td>{{ "%+.3f"|format(m["accuracy_difference"]) }}</td></tr>
{% endfor %}
</table>
{% endblock %}
"""


def model_name(report: EvaluationReport) -> str:
    """The model as the page names it: its registered name and version, else its directory's name (not a path
    of the machine that evaluated it)."""
    if report.registered_version:
        return f"{report.registered_model or 'registered model'} version {report.registered_version}"
    return Path(report.model).name or report.model


def render_html(report: EvaluationReport) -> str:
    """A self-contained page: decision, headline numbers, confusion matrix, per-class table, per-facet chart."""
    decision = report.decision or {}
    facets = sorted(report.per_facet_accuracy, key=lambda v: -report.per_facet_accuracy[v]["rows"])
    rows = []
    for value in facets:
        m = report.per_facet_accuracy[value]
        bar = report_html.Bar(m["accuracy"], "#4e79a7", f"{value}: accuracy {m['accuracy']:.3f} on {m['rows']} rows")
        rows.append(report_html.BarRow(value, [bar], note=f"{m['accuracy']:.3f} (n={m['rows']})"))
    return report_html.render_page(
        _PAGE,
        r=report,
        model=model_name(report),
        verdict="deploy" if decision.get("deploy") else "do not deploy",
        colour="#2e7d32" if decision.get("deploy") else "#c62828",
        reason=str(decision.get("reason", "")),
        gap=report.facet_accuracy_gap,
        facets=facets,
        confusion=report_html.heatmap(report.confusion_matrix, report.categories, "predicted", "true"),
        facet_chart=report_html.bar_chart(
            rows, [(0.0, "0"), (1.0, "1")], reference=(report.accuracy, f"overall accuracy {report.accuracy:.3f}")
        ),
    )


def write_outputs(
    report: EvaluationReport, json_path: str | Path, html_path: str | Path, predictions_path: str | Path | None = None
) -> None:
    """The report as JSON and as the dashboard's HTML page; the test reviews' predictions as Parquet."""
    for path in (json_path, html_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report.to_dict(), indent=1))
    Path(html_path).write_text(render_html(report))
    if predictions_path is not None and report.predictions is not None:
        write_predictions(report.predictions, predictions_path)


# --- the step ---------------------------------------------------------------------------------------


def evaluate(
    test_rows: Any,
    model_dir: str | Path,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    champion: RegisteredVersion | None = None,
    fetch_champion: Any = None,
    min_facet_rows: int = DEFAULT_MIN_FACET_ROWS,
    batch_size: int = 64,
    data_hash: str = "",
    champion_data_hash: str = "",
) -> EvaluationReport:
    """Score ``model_dir`` on the test split, compare with ``champion`` and decide.

    Args:
        test_rows: Test split feature rows (`review_id`, `input_ids`, `label_id`, `product_category`).
        model_dir: The trained model (save_pretrained directory with tokenizer).
        min_accuracy: The gate's floor.
        champion: The registry's champion version, or None.
        fetch_champion: Callable(RegisteredVersion) → local directory of its files (needed only to re-evaluate).
        min_facet_rows: Facet values with fewer test rows are left out of the gap.
        batch_size: Reviews per inference batch.
        data_hash: SHA-256 of the input file this model learnt from; ``champion_data_hash``: the champion's
            (either empty: unknown).  They differ: a warning (`champion.warnings`).

    Raises:
        ValueError: Bad split, bad model directory, or a min_accuracy outside [0, 1].
    """
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"--min-accuracy must be between 0 and 1, got {min_accuracy}.")

    examples = D.to_examples(test_rows, "test", require=(schema.REVIEW_ID, D.INPUT_IDS, D.LABEL_ID, schema.FACET))
    probabilities = predict_probabilities(model_dir, examples, batch_size)
    fingerprint = tokenizer_fingerprint(model_dir)
    report = build_report(examples, probabilities.argmax(axis=1), str(model_dir), fingerprint, min_facet_rows)
    report.predictions = prediction_table(examples.review_ids or [], probabilities)
    found = champion_accuracy(champion, report.test_split_hash, fingerprint, examples, fetch_champion)
    quality = Quality(report.accuracy, report.f1_macro, report.confusion_matrix)
    report.decision = asdict(decide(quality, min_accuracy, found, TrainingOutcome.read(model_dir)))
    report.data_hash = data_hash
    report.champion_data_hash = champion_data_hash or None
    report.warnings = gate.warnings(report.rows, data_hash, champion, champion_data_hash)
    return report


@dataclass(frozen=True)
class InputData:
    """The data the model learnt from, as prepare reported it (its `report`): logged to MLflow as the run's
    dataset, its hash compared with the champion's."""

    #: prepare's report (``source``, ``data_sha256``, row and class counts, ``balanced``, ``max_rows``).
    report: Mapping[str, Any]
    #: The rows prepare passed on (its ``reviews`` output); None: not at hand (nothing logged as a dataset).
    reviews: pd.DataFrame | None = None

    @property
    def data_hash(self) -> str:
        return str(self.report.get("data_sha256") or "")

    def params(self) -> dict[str, Any]:
        """The data's MLflow params (``data.`` prefix)."""
        keys = ("source", "balanced", "max_rows", "data_sha256")
        return {("balance" if k == "balanced" else k): self.report[k] for k in keys if k in self.report}

    def counts(self) -> dict[str, float]:
        """Row counts as MLflow metrics (``data/`` prefix): rows in, clean, out, dropped, per class."""
        out = {k: float(v) for k, v in self.report.items() if k.startswith(("rows_", "dropped_")) and _number(v)}
        for name, n in (self.report.get("class_counts_out") or {}).items():
            out[f"class_{name}"] = float(n)
        return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_input_data(report_path: str | Path, reviews_path: str | Path | None = None) -> InputData:
    """prepare's report JSON and its ``reviews`` Parquet (when given)."""
    import pandas as pd

    reviews = pd.read_parquet(reviews_path) if reviews_path else None
    return InputData(json.loads(Path(report_path).read_text()), reviews)


def log_input_data(mlflow_run: Any, data: InputData) -> None:
    """The data as the run's MLflow dataset (source URI, digest, rows), its params and row counts."""
    mlflow_run.log_params(data.params(), prefix="data.")
    mlflow_run.log_metrics(data.counts(), prefix="data/")
    if data.reviews is not None:
        tags = {k: v for k, v in data.params().items() if k in ("balance", "max_rows")}
        tags |= {k: int(v) for k, v in data.counts().items() if k.startswith("rows_")}
        source = str(data.report.get("source") or "")
        mlflow_run.log_dataset(data.reviews, source, data.data_hash, Path(source).name or "reviews", tags)


def _warn(report: EvaluationReport) -> None:
    """Each of the report's warnings as one line on stderr (the step's log)."""
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr, flush=True)


def read_test_split(feature_store: str, feast_config: str = "local") -> Any:
    """The test split from the Feast store that feast_ingest wrote."""
    from components.common import features as F

    return F.get_split_features(F.open_store(feature_store, feast_config), "test")


def run(
    test_rows: Any,
    model_dir: str | Path,
    json_path: str | Path,
    html_path: str | Path,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    tracking_uri: str | None = "",
    registered_model_name: str = "",
    pipeline_run_id: str = "",
    experiment: str = "",
    min_facet_rows: int = DEFAULT_MIN_FACET_ROWS,
    predictions_path: str | Path | None = None,
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    data: InputData | None = None,
) -> EvaluationReport:
    """The step: check MLflow, evaluate, compare with the champion, log, register the challenger, write outputs.

    Args:
        tracking_uri: MLflow tracking URI ("" → $MLFLOW_TRACKING_URI or the embedded default; None → no
            MLflow: no champion comparison, nothing registered).
        registered_model_name: Registered model in the MLflow registry (default `tracking.DEFAULT_REGISTERED_MODEL`).
        pipeline_run_id: Logs go to this pipeline run's MLflow run.
        experiment: MLflow experiment (default `tracking.DEFAULT_EXPERIMENT`).
        predictions_path: Where the test reviews' predictions go (Parquet, for deploy's smoke test); None: nowhere.
        max_seq_length: Tokens per review in training (the logged MLflow model cuts texts to it).
        data: The data the model learnt from (prepare's report and rows): logged as the run's MLflow dataset,
            its hash compared with the champion's; None: neither.

    Raises:
        ValueError: Unreachable MLflow (checked first), bad split, bad model.
    """
    from components.common import tracking

    data_hash = data.data_hash if data is not None else ""
    if tracking_uri is None:
        report = evaluate(test_rows, model_dir, min_accuracy, None, None, min_facet_rows, data_hash=data_hash)
        _warn(report)
        write_outputs(report, json_path, html_path, predictions_path)
        return report
    uri = tracking.usable_tracking_uri(tracking_uri)
    name = registered_model_name or tracking.DEFAULT_REGISTERED_MODEL
    champion = tracking.get_alias(uri, name, tracking.CHAMPION)
    mlflow_run = tracking.PipelineRun(
        uri, experiment or tracking.DEFAULT_EXPERIMENT, pipeline_run_id, tracking.lineage_tags(pipeline_run_id)
    )
    if not data_hash and pipeline_run_id:  # (train tags the run with it)
        data_hash = mlflow_run.client.get_run(mlflow_run.run_id).data.tags.get("data_hash", "")
    champion_hash = tracking.version_data_hash(uri, champion) if champion is not None else ""
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        report = evaluate(
            test_rows,
            model_dir,
            min_accuracy,
            champion,
            lambda v: tracking.download_classifier(uri, v.source, tmp),
            min_facet_rows,
            data_hash=data_hash,
            champion_data_hash=champion_hash,
        )
    _warn(report)
    mlflow_run.log_metrics(report.headline(), prefix="eval/")
    mlflow_run.log_params(
        {"min_accuracy": min_accuracy, "max_seq_length": max_seq_length, "registered_model_name": name},
        prefix="eval.",
    )
    if data is not None:
        log_input_data(mlflow_run, data)
    logged = mlflow_run.log_classifier(model_dir, max_seq_length)
    report.model_uri = logged.model_uri
    version = tracking.register_version(
        uri,
        name,
        logged.artifact_location,
        mlflow_run.run_id,
        {**report.registry_tags(), "pipeline_run_id": pipeline_run_id},
        model_id=logged.model_id,
    )
    report.registered_version = version.version
    report.registered_model = name
    mlflow_run.set_tags(
        {
            "eval.deploy": str(report.decision["deploy"]).lower(),
            "eval.reason": report.decision["reason"][:5000],
            "eval.registered_version": version.version,
            "eval.test_split_hash": report.test_split_hash,
            **({"eval.warnings": " | ".join(report.warnings)[:5000]} if report.warnings else {}),
        }
    )
    report.mlflow_run = mlflow_run.link()
    write_outputs(report, json_path, html_path, predictions_path)
    mlflow_run.log_text(json.dumps(report.to_dict(), indent=1), "eval/evaluation_report.json")
    mlflow_run.log_text(render_html(report), "eval/evaluation_report.html")
    mlflow_run.end()
    return report
