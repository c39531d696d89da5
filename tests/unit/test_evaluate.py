"""evaluate core: metrics on a hand-computed case, per-facet accuracy, the champion comparison, the deploy gate,
the report and its page, and bad input.  The MLflow registry is a real embedded SQLite store in a temporary
directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.common import batching as D
from components.common import modeling, tracking
from components.evaluate import champion, core
from components.train import testing


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) classifier directory as train writes it: our 3 labels, weights, tokenizer."""
    base = testing.tiny_model(tmp_path_factory.mktemp("tiny") / "base", dropout=0.0)
    out = tmp_path_factory.mktemp("clf") / "model"
    model = modeling.load_classifier(str(base))
    with modeling.quiet_transformers():
        model.save_pretrained(out)
        modeling.load_tokenizer(str(base)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def test_split() -> pd.DataFrame:
    texts, labels, facets = testing.synthetic_reviews(90, seed=4)
    return testing.features(texts, labels, 32, facets=facets)


def test_report_metrics_on_a_hand_computed_case() -> None:
    """true 0 0 0 1 1 2 / predicted 0 0 1 1 2 2: negative P 2/2 R 2/3, neutral P 1/2 R 1/2, positive P 1/2 R 1/1."""
    labels, predictions = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    examples = D.Examples([np.array([101, 102])] * 6, labels, [f"r{i}" for i in range(6)], ["a"] * 6)
    report = core.build_report(examples, predictions, "m", "fp", min_facet_rows=1)
    assert report.confusion_matrix == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.per_class["negative"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert report.per_class["neutral"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report.per_class["positive"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report.f1_macro == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report.headline()["precision_neutral"] == 0.5 and report.headline()["recall_positive"] == 1.0


def test_facet_accuracy_difference_and_gap() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    predictions = np.array([0, 0, 0, 1, 1, 1, 0, 0, 2, 2])
    facets = ["A", "A", "A", "A", "B", "B", "B", "B", "C", "C"]
    per, gap = core.facet_metrics(labels, predictions, facets, min_rows=3)
    assert per["A"] == {"rows": 4, "accuracy": 0.75, "accuracy_difference": pytest.approx(4 / 6 - 0.75)}
    assert per["B"]["accuracy"] == 0.5 and per["C"]["accuracy"] == 1.0
    assert gap["value"] == 0.25 and gap["best"] == "A" and gap["worst"] == "B"  # C has too few rows
    assert gap["values_counted"] == 2


def test_split_hash_ignores_row_order_but_not_labels() -> None:
    ids, labels = ["a", "b", "c"], np.array([0, 1, 2])
    assert core.split_hash(ids, labels) == core.split_hash(ids[::-1], labels[::-1])
    assert core.split_hash(ids, labels) != core.split_hash(ids, np.array([0, 1, 1]))


def _champion(tags: dict[str, str], version: str = "3") -> tracking.RegisteredVersion:
    return tracking.RegisteredVersion("m", version, "file:///nowhere", "run", tags, ["champion"])


@pytest.mark.parametrize(
    ("accuracy", "found", "deploy", "reason"),
    [
        (0.30, None, False, "below --min-accuracy"),
        (0.50, None, True, "no champion yet"),
        (0.70, champion.Champion("3", 0.72, "recorded"), False, "below champion version 3's 0.7200"),
        (0.72, champion.Champion("3", 0.72, "recorded"), True, "≥ champion version 3's 0.7200"),
        (0.90, champion.Champion("3", None, "incomparable", "x"), False, "cannot compare with champion version 3"),
    ],
)
def test_deploy_gate(accuracy: float, found: champion.Champion | None, deploy: bool, reason: str) -> None:
    decision = champion.decide(accuracy, 0.33, found)
    assert decision.deploy is deploy
    assert reason in decision.reason


def test_champion_accuracy_is_reused_on_the_same_split(classifier: Path, test_split: pd.DataFrame) -> None:
    examples = D.to_examples(test_split, "test")
    test_hash = core.split_hash(examples.review_ids, examples.labels)

    def fetch(version: tracking.RegisteredVersion) -> Path:
        raise AssertionError("the recorded accuracy should have been used")

    found = champion.champion_accuracy(
        _champion({"test_split_hash": test_hash, "test_accuracy": "0.81"}), test_hash, "fp", examples, fetch
    )
    assert found == champion.Champion("3", 0.81, "recorded", "recorded on this same test split")


@pytest.fixture(scope="module")
def always_positive(tmp_path_factory: pytest.TempPathFactory, classifier: Path) -> Path:
    """The classifier with its head set to say "positive" for every review (zero weights, biases 0, 0, 5)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("positive") / "model"
    shutil.copytree(classifier, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    model.save_pretrained(out)
    return out


def test_champion_is_re_evaluated_on_another_split(
    classifier: Path, always_positive: Path, test_split: pd.DataFrame
) -> None:
    """The champion's files are scored on this split: one that always says "positive" is right exactly on the
    positive reviews."""
    examples = D.to_examples(test_split, "test")
    found = champion.champion_accuracy(
        _champion({"test_split_hash": "other", "test_accuracy": "0.99"}),
        core.split_hash(examples.review_ids, examples.labels),
        champion.tokenizer_fingerprint(classifier),
        examples,
        lambda version: always_positive,
    )
    positive_share = float((test_split["label_id"] == 2).mean())
    assert 0 < positive_share < 1
    assert found is not None and found.method == "re-evaluated" and found.accuracy == pytest.approx(positive_share)


def test_champion_with_another_tokenizer_on_another_split_is_incomparable(
    tmp_path: Path, classifier: Path, test_split: pd.DataFrame
) -> None:
    other = tmp_path / "other"
    shutil.copytree(classifier, other)
    tokenizer = modeling.load_tokenizer(str(other))
    tokenizer.add_tokens(["frock"])
    tokenizer.save_pretrained(other)
    examples = D.to_examples(test_split, "test")
    found = champion.champion_accuracy(
        _champion({}), "hash", champion.tokenizer_fingerprint(classifier), examples, lambda version: other
    )
    assert found is not None and found.accuracy is None and found.method == "incomparable"
    assert not champion.decide(0.9, 0.33, found).deploy


def test_report_outputs(tmp_path: Path, classifier: Path, test_split: pd.DataFrame) -> None:
    report = core.run(test_split, classifier, tmp_path / "r.json", tmp_path / "r.html", 0.0, tracking_uri=None)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["rows"] == 90 and set(saved["per_facet_accuracy"]) == {"Blouses", "Dresses", "Knits"}
    assert saved["decision"]["deploy"] is True
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 2 and "Blouses" in page and "no champion yet" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    assert report.headline()["accuracy"] == report.accuracy


def test_page_escapes_what_comes_from_the_data() -> None:
    labels, predictions = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0])
    facets = ["<script>x</script>"] * 2 + ["A & B"] * 2
    examples = D.Examples([np.array([101, 102])] * 4, labels, ["a", "b", "c", "d"], facets)
    report = core.build_report(examples, predictions, "/models/<m>", "fp", min_facet_rows=1)
    report.decision = {"deploy": False, "reason": "below <champion>"}
    page = core.render_html(report)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "A &amp; B" in page
    assert "/models/&lt;m&gt;" in page and "below &lt;champion&gt;" in page and "do not deploy" in page
    text = " ".join(page.split())  # as a browser shows it: any run of white space is one space
    assert "Gap: 0.500 between &lt;script&gt;x&lt;/script&gt; (1.000) and A &amp; B (0.500), over 2 values" in text
    assert "1.000 (n=2)" in page and "0.500 (n=2)" in page
    from xml.etree import ElementTree

    for svg in page.split("<svg")[1:]:  # both charts are well-formed XML
        ElementTree.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")


def test_registry_round_trip(tmp_path: Path, classifier: Path, test_split: pd.DataFrame) -> None:
    """First candidate: no champion, deployed, registered as challenger; promoted; then a candidate scored on
    the same split is compared with the champion's recorded accuracy."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = core.run(test_split, classifier, tmp_path / "1.json", tmp_path / "1.html", 0.0, uri, "clf", "run-1")
    assert first.decision["deploy"] and first.registered_version == "1"
    assert tracking.get_alias(uri, "clf", "challenger").version == "1"
    tracking.promote(uri, "clf", "1")
    second = core.run(test_split, classifier, tmp_path / "2.json", tmp_path / "2.html", 0.0, uri, "clf", "run-2")
    assert second.decision["champion_method"] == "recorded"
    assert second.decision["champion_accuracy"] == pytest.approx(first.accuracy, abs=1e-6)
    assert second.decision["deploy"]  # same model, same split: not worse
    assert second.registered_version == "2"
    champion = tracking.get_alias(uri, "clf", "champion")
    assert champion.version == "1" and champion.tags["test_split_hash"] == first.test_split_hash


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.iloc[:0], "The test split is empty"),
        (lambda f: f.assign(label_id=7), "label_id outside 0..2"),
        (lambda f: f.drop(columns=["product_category"]), r"lacks column\(s\) \['product_category'\]"),
    ],
)
def test_bad_test_split(tmp_path: Path, classifier: Path, test_split: pd.DataFrame, mutate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        core.run(mutate(test_split), classifier, tmp_path / "r.json", tmp_path / "r.html", tracking_uri=None)
    assert not (tmp_path / "r.json").exists()


def test_model_without_tokenizer_or_with_other_labels(tmp_path: Path, classifier: Path, test_split) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(classifier / "config.json", bare)
    with pytest.raises(ValueError, match="has no tokenizer"):
        core.run(test_split, bare, tmp_path / "r.json", tmp_path / "r.html", tracking_uri=None)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(classifier, relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "ok", "2": "good"}
    (relabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"predicts labels \['bad', 'ok', 'good'\]"):
        core.run(test_split, relabelled, tmp_path / "r.json", tmp_path / "r.html", tracking_uri=None)


def test_unreachable_mlflow_fails_before_evaluating(tmp_path: Path, classifier: Path, test_split) -> None:
    with pytest.raises(ValueError, match="is unreachable"):
        core.run(test_split, classifier, tmp_path / "r.json", tmp_path / "r.html", tracking_uri="http://127.0.0.1:9")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_min_accuracy_outside_0_1(tmp_path: Path, classifier: Path, test_split, bad: float) -> None:
    with pytest.raises(ValueError, match="--min-accuracy must be between 0 and 1"):
        core.run(test_split, classifier, tmp_path / "r.json", tmp_path / "r.html", bad, tracking_uri=None)
