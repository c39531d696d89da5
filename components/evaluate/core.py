"""Evaluate a trained classifier on the test split and decide whether it may be deployed.

Quality: accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix.  Post-training bias:
accuracy per facet value (product category), each value's accuracy difference to the rest (Clarify's
post-training metric AD = acc(rest) − acc(value)), and the gap between the best and worst facet value
among values with at least ``min_facet_rows`` test rows.

The deploy gate: accuracy ≥ ``min_accuracy`` **and** not below the current champion (the registered
model version behind alias ``champion``) on the same test split.  How the champion's accuracy is found:

1. **Recorded**, when the champion's version tag ``test_split_hash`` equals this split's hash: the hash
   covers the test reviews and their labels (sorted `review_id`, `label_id`), so the recorded accuracy
   was measured on exactly these reviews.  A model's predictions are deterministic, so re-running it
   would give the same number; re-using it costs nothing and needs no download.  It also holds when the
   champion used another tokenizer or max length: each model is scored on the same reviews through its
   own pipeline.
2. **Re-evaluated**, when the split differs (new data, another seed) but the champion's tokenizer gives
   the same token ids as the candidate's (same vocabulary fingerprint): the champion's files are fetched
   from the registry and scored on this very split.
3. Otherwise the two cannot be compared on the same test split (another split *and* another tokenizer;
   the features hold token ids, not text), so the candidate is **not** deployed and the reason says
   so; move the alias by hand (`tracking.promote`) to override.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D
from components.common import modeling

if TYPE_CHECKING:  # pragma: no cover - typing only
    from components.common.tracking import RegisteredVersion

#: Default deploy gate: better than chance on 3 classes (the course's value).
DEFAULT_MIN_ACCURACY = 0.33
#: Facet values with fewer test rows are shown but left out of the gap (their accuracy is noise).
DEFAULT_MIN_FACET_ROWS = 10


# --- metrics ----------------------------------------------------------------------------------------


def split_hash(review_ids: list[str], labels: np.ndarray) -> str:
    """SHA-256 of the sorted (review_id, label_id) pairs: which reviews, with which labels."""
    digest = hashlib.sha256()
    for rid, label in sorted(zip(review_ids, (int(v) for v in labels), strict=True)):
        digest.update(f"{rid}\t{label}\n".encode())
    return digest.hexdigest()


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Counts with rows = true class id, columns = predicted class id."""
    matrix = np.zeros((D.NUM_LABELS, D.NUM_LABELS), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def per_class(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class (0 where undefined, as scikit-learn's zero_division=0)."""
    out = {}
    for i, name in enumerate(D.CLASS_NAMES):
        tp, predicted, actual = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(actual)}
    return out


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


# --- models -----------------------------------------------------------------------------------------


def tokenizer_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 of the tokenizer's vocabulary (token → id): equal fingerprints give equal token ids."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()
    return hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()


def load_model(model_dir: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained classifier directory, checked to have our 3 labels.

    Raises:
        ValueError: Not a model directory, no tokenizer, or other labels.
    """
    from transformers import AutoModelForSequenceClassification

    name = modeling.resolve_base_model(str(model_dir))
    tokenizer = modeling.load_tokenizer(name)
    with modeling.quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(name)
    labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    if labels != D.CLASS_NAMES:
        raise ValueError(
            f"Model {name!r} predicts labels {list(labels)}, not {list(D.CLASS_NAMES)}: it was not trained by the "
            "train step of this pipeline. Evaluate a model directory written by train."
        )
    return model, tokenizer


def predict(model_dir: str | Path, examples: D.Examples, batch_size: int = 64) -> np.ndarray:
    """Predicted class ids of ``examples`` (input order), on the GPU when there is one.

    Raises:
        ValueError: See `load_model`; or token ids the model's tokenizer cannot have produced.
    """
    import torch

    model, tokenizer = load_model(model_dir)
    D.check_vocabulary(
        examples,
        "test",
        model.get_input_embeddings().num_embeddings,
        modeling.first_token_id(tokenizer),
        str(model_dir),
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = modeling.pick_precision("auto", device)
    logits, _ = modeling.predict(model.to(device), examples, tokenizer.pad_token_id, batch_size, device, dtype)
    return logits.argmax(axis=1)


# --- champion and decision ---------------------------------------------------------------------------


@dataclass
class Champion:
    """The current champion and how its accuracy on this test split was obtained."""

    version: str
    accuracy: float | None
    method: str  # recorded | re-evaluated | incomparable
    note: str = ""


def champion_accuracy(
    champion: RegisteredVersion | None,
    test_hash: str,
    candidate_fingerprint: str,
    examples: D.Examples,
    fetch: Any,
) -> Champion | None:
    """The champion's accuracy on this test split (see the module docstring for the three cases).

    Args:
        champion: The version behind alias champion, or None.
        test_hash: `split_hash` of this test split.
        candidate_fingerprint: `tokenizer_fingerprint` of the candidate model.
        examples: The test split.
        fetch: Callable giving a local directory with the champion's files (called only when needed).
    """
    if champion is None:
        return None
    recorded = champion.tags.get("test_accuracy")
    if champion.tags.get("test_split_hash") == test_hash and recorded is not None:
        return Champion(champion.version, float(recorded), "recorded", "recorded on this same test split")
    try:
        local = Path(fetch(champion))
        same_tokenizer = tokenizer_fingerprint(local) == candidate_fingerprint
    except Exception as error:
        reason = " ".join(str(error).split())[:200]
        note = f"the champion was tested on another split and its files could not be read ({reason})"
        return Champion(champion.version, None, "incomparable", note)
    if not same_tokenizer:
        return Champion(
            champion.version,
            None,
            "incomparable",
            "the champion was tested on another split and uses another tokenizer, so it cannot be scored on "
            "these features",
        )
    predictions = predict(local, examples)
    accuracy = float((predictions == examples.labels).mean())
    return Champion(champion.version, accuracy, "re-evaluated", "scored on this test split now")


@dataclass
class Decision:
    """Deploy or not, and why."""

    deploy: bool
    reason: str
    min_accuracy: float
    accuracy: float
    champion_version: str | None = None
    champion_accuracy: float | None = None
    champion_method: str | None = None


def decide(accuracy: float, min_accuracy: float, champion: Champion | None) -> Decision:
    """The gate: accuracy ≥ min_accuracy and ≥ the champion's accuracy on the same test split."""
    base = {"min_accuracy": min_accuracy, "accuracy": accuracy}
    if champion is not None:
        base.update(
            champion_version=champion.version, champion_accuracy=champion.accuracy, champion_method=champion.method
        )
    if accuracy < min_accuracy:
        return Decision(False, f"test accuracy {accuracy:.4f} is below --min-accuracy {min_accuracy:.4f}", **base)
    if champion is None:
        return Decision(
            True, f"test accuracy {accuracy:.4f} ≥ --min-accuracy {min_accuracy:.4f}; no champion yet", **base
        )
    if champion.accuracy is None:
        return Decision(
            False,
            f"cannot compare with champion version {champion.version}: {champion.note}. Re-run the pipeline with "
            "the champion's base model and split, or promote this version by hand",
            **base,
        )
    if accuracy < champion.accuracy:
        return Decision(
            False,
            f"test accuracy {accuracy:.4f} is below champion version {champion.version}'s {champion.accuracy:.4f} "
            f"({champion.note})",
            **base,
        )
    return Decision(
        True,
        f"test accuracy {accuracy:.4f} ≥ --min-accuracy {min_accuracy:.4f} and ≥ champion version "
        f"{champion.version}'s {champion.accuracy:.4f} ({champion.note})",
        **base,
    )


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        }


def build_report(
    examples: D.Examples, predictions: np.ndarray, model: str, fingerprint: str, min_facet_rows: int
) -> EvaluationReport:
    """Quality and per-facet metrics of ``predictions`` on ``examples`` (decision filled in later)."""
    matrix = confusion_matrix(examples.labels, predictions)
    classes = per_class(matrix)
    facets = examples.facets or ["(all)"] * len(examples)
    per_facet, gap = facet_metrics(examples.labels, predictions, facets, min_facet_rows)
    return EvaluationReport(
        rows=len(examples),
        accuracy=float(np.trace(matrix) / matrix.sum()),
        f1_macro=float(np.mean([c["f1"] for c in classes.values()])),
        per_class=classes,
        categories=list(D.CLASS_NAMES),
        confusion_matrix=matrix.tolist(),
        per_facet_accuracy=per_facet,
        facet_accuracy_gap=gap,
        test_split_hash=split_hash(examples.review_ids or [], examples.labels),
        tokenizer_fingerprint=fingerprint,
        model=model,
    )


def _confusion_svg(report: EvaluationReport) -> str:
    cell, left, top = 70, 90, 40
    matrix = np.asarray(report.confusion_matrix)
    peak = max(int(matrix.max()), 1)
    n = len(report.categories)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + n * cell + 10}" height="{top + n * cell + 40}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{left + n * cell / 2}" y="14" text-anchor="middle">predicted</text>',
        f'<text x="12" y="{top + n * cell / 2}" transform="rotate(-90 12 {top + n * cell / 2})" '
        'text-anchor="middle">true</text>',
    ]
    for j, name in enumerate(report.categories):
        parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 6}" text-anchor="middle">{name}</text>')
        parts.append(f'<text x="{left - 6}" y="{top + j * cell + cell / 2 + 4}" text-anchor="end">{name}</text>')
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            shade = int(245 - 170 * value / peak)
            colour = f"rgb({shade},{shade},255)" if i != j else f"rgb({shade},255,{shade})"
            text = "#000" if shade > 140 else "#fff"
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 2}" height="{cell - 2}" '
                f'fill="{colour}"/><text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" '
                f'text-anchor="middle" fill="{text}">{value}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _facet_svg(report: EvaluationReport) -> str:
    values = sorted(report.per_facet_accuracy, key=lambda v: -report.per_facet_accuracy[v]["rows"])
    bar_h, label_w, width = 18, 170, 320
    height = len(values) * (bar_h + 4) + 30
    x_overall = label_w + report.accuracy * width
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{label_w}" y="12">0</text><text x="{label_w + width - 8}" y="12">1</text>',
    ]
    for i, value in enumerate(values):
        m = report.per_facet_accuracy[value]
        y = 18 + i * (bar_h + 4)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{html.escape(value)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{m["accuracy"] * width:.1f}" height="{bar_h}" fill="#4e79a7">'
            f"<title>{html.escape(value)}: accuracy {m['accuracy']:.3f} on {m['rows']} rows</title></rect>"
            f'<text x="{label_w + width + 6}" y="{y + bar_h - 5}">{m["accuracy"]:.3f} (n={m["rows"]})</text>'
        )
    parts.append(
        f'<line x1="{x_overall:.1f}" y1="16" x2="{x_overall:.1f}" y2="{height - 4}" stroke="#e15759" '
        'stroke-dasharray="4 3"><title>overall accuracy</title></line></svg>'
    )
    return "".join(parts)


def render_html(report: EvaluationReport) -> str:
    """A self-contained page: decision, headline numbers, confusion matrix, per-class table, per-facet chart."""
    decision = report.decision or {}
    verdict = "deploy" if decision.get("deploy") else "do not deploy"
    colour = "#2e7d32" if decision.get("deploy") else "#c62828"
    classes = "".join(
        f"<tr><td>{n}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>"
        f"<td>{c['support']}</td></tr>"
        for n, c in report.per_class.items()
    )
    facets = "".join(
        f"<tr><td>{html.escape(v)}</td><td>{m['rows']}</td><td>{m['accuracy']:.3f}</td>"
        f"<td>{m['accuracy_difference']:+.3f}</td></tr>"
        for v, m in sorted(report.per_facet_accuracy.items(), key=lambda kv: -kv[1]["rows"])
    )
    gap = report.facet_accuracy_gap
    gap_text = (
        f"{gap['value']:.3f} between {html.escape(str(gap['best']))} ({gap['best_accuracy']:.3f}) and "
        f"{html.escape(str(gap['worst']))} ({gap['worst_accuracy']:.3f}), over {gap['values_counted']} values with "
        f"≥ {gap['min_rows']} test rows"
        if gap.get("value") is not None
        else f"not computed: fewer than two facet values with ≥ {gap['min_rows']} test rows"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation: {report.accuracy:.3f} accuracy</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}
.decision{{border-left:6px solid {colour};padding:.4em .8em;background:#fafafa}}</style></head><body>
<h2>Test-split evaluation</h2>
<p class="decision"><b>{verdict}</b>: {html.escape(str(decision.get("reason", "")))}</p>
<p>{report.rows} test reviews · accuracy <b>{report.accuracy:.4f}</b> · macro-F1 <b>{report.f1_macro:.4f}</b> ·
model <code>{html.escape(report.model)}</code> · test split <code>{report.test_split_hash[:12]}</code></p>
<h3>Confusion matrix</h3>{_confusion_svg(report)}
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{classes}</table>
<h3>Accuracy per facet value (post-training bias)</h3>
<p>Gap: {gap_text}. AD = accuracy of the other rows − accuracy of the value (Clarify's post-training metric).</p>
{_facet_svg(report)}
<table><tr><th>facet value</th><th>rows</th><th>accuracy</th><th>AD</th></tr>{facets}</table>
</body></html>
"""


def write_outputs(report: EvaluationReport, json_path: str | Path, html_path: str | Path) -> None:
    """The report as JSON and as the dashboard's HTML page."""
    for path in (json_path, html_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report.to_dict(), indent=1))
    Path(html_path).write_text(render_html(report))


# --- the step ---------------------------------------------------------------------------------------


def evaluate(
    test_rows: Any,
    model_dir: str | Path,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    champion: RegisteredVersion | None = None,
    fetch_champion: Any = None,
    min_facet_rows: int = DEFAULT_MIN_FACET_ROWS,
    batch_size: int = 64,
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

    Raises:
        ValueError: Bad split, bad model directory, or a min_accuracy outside [0, 1].
    """
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"--min-accuracy must be between 0 and 1, got {min_accuracy}.")
    from components.common import schema

    examples = D.to_examples(test_rows, "test", require=(schema.REVIEW_ID, D.INPUT_IDS, D.LABEL_ID, schema.FACET))
    predictions = predict(model_dir, examples, batch_size)
    fingerprint = tokenizer_fingerprint(model_dir)
    report = build_report(examples, predictions, str(model_dir), fingerprint, min_facet_rows)
    found = champion_accuracy(champion, report.test_split_hash, fingerprint, examples, fetch_champion)
    report.decision = asdict(decide(report.accuracy, min_accuracy, found))
    return report


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
) -> EvaluationReport:
    """The step: check MLflow, evaluate, compare with the champion, log, register the challenger, write outputs.

    Args:
        tracking_uri: MLflow tracking URI ("" → $MLFLOW_TRACKING_URI or the embedded default; None → no
            MLflow: no champion comparison, nothing registered).
        registered_model_name: Registered model in the MLflow registry (default `tracking.DEFAULT_REGISTERED_MODEL`).
        pipeline_run_id: Logs go to this pipeline run's MLflow run.
        experiment: MLflow experiment (default `tracking.DEFAULT_EXPERIMENT`).

    Raises:
        ValueError: Unreachable MLflow (checked first), bad split, bad model.
    """
    from components.common import tracking

    if tracking_uri is None:
        report = evaluate(test_rows, model_dir, min_accuracy, None, None, min_facet_rows)
        write_outputs(report, json_path, html_path)
        return report
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking_uri(uri)
    name = registered_model_name or tracking.DEFAULT_REGISTERED_MODEL
    champion = tracking.get_alias(uri, name, tracking.CHAMPION)
    report = evaluate(
        test_rows, model_dir, min_accuracy, champion, lambda v: tracking.download(uri, v.source), min_facet_rows
    )
    mlflow_run = tracking.PipelineRun(
        uri, experiment or tracking.DEFAULT_EXPERIMENT, pipeline_run_id, tracking.lineage_tags(pipeline_run_id)
    )
    mlflow_run.log_metrics(report.headline(), prefix="eval/")
    logged = mlflow_run.client.list_artifacts(mlflow_run.run_id, "model")
    source = mlflow_run.artifact_uri("model") if logged else mlflow_run.log_artifacts(model_dir, "model")
    version = tracking.register_version(
        uri, name, source, mlflow_run.run_id, {**report.registry_tags(), "pipeline_run_id": pipeline_run_id}
    )
    report.registered_version = version.version
    mlflow_run.set_tags(
        {
            "eval.deploy": str(report.decision["deploy"]).lower(),
            "eval.reason": report.decision["reason"][:5000],
            "eval.registered_version": version.version,
            "eval.test_split_hash": report.test_split_hash,
        }
    )
    write_outputs(report, json_path, html_path)
    mlflow_run.log_text(json.dumps(report.to_dict(), indent=1), "eval/evaluation_report.json")
    mlflow_run.log_text(render_html(report), "eval/evaluation_report.html")
    mlflow_run.end()
    return report
