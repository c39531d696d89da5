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
from tests import testing


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
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier with skill (`testing.skilled_classifier`: 0.67 on `test_split`, where no skill scores 1/3),
    so the gate lets it through."""
    return testing.skilled_classifier(tmp_path_factory.mktemp("trained"))


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


def test_softmax_of_large_logits_is_finite_and_sums_to_one() -> None:
    """One softmax for evaluate's predictions and the model server (float32 logits of 1000 would overflow exp)."""
    probabilities = modeling.softmax(np.array([[1000.0, 1000.0, 999.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert probabilities.dtype == np.float64
    e = np.exp(-1.0)
    np.testing.assert_allclose(probabilities[0], [1 / (2 + e), 1 / (2 + e), e / (2 + e)])
    np.testing.assert_allclose(probabilities[1], [1 / 3, 1 / 3, 1 / 3])


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


def _quality(matrix: list[list[int]]) -> champion.Quality:
    """The quality of a confusion matrix: accuracy and macro-F1 (every class counted, an undefined F1 is 0)."""
    counts = np.asarray(matrix, dtype=np.float64)
    hits, true, predicted = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    f1 = np.divide(2 * hits, true + predicted, out=np.zeros_like(hits), where=(true + predicted) > 0)
    return champion.Quality(float(hits.sum() / counts.sum()), float(f1.mean()), matrix)


def _balanced(correct: int, per_class: int = 100) -> champion.Quality:
    """A balanced 3-class test split of ``3 * per_class`` reviews, ``correct`` right in each class (the errors
    split between the two other classes)."""
    wrong = per_class - correct
    matrix = [[0] * 3 for _ in range(3)]
    for i in range(3):
        matrix[i][i] = correct
        matrix[i][(i + 1) % 3] += wrong // 2
        matrix[i][(i + 2) % 3] += wrong - wrong // 2
    return _quality(matrix)


@pytest.mark.parametrize(
    ("correct", "found", "deploy", "reason"),
    [
        (30, None, False, "below --min-accuracy"),
        (50, None, True, "no champion yet"),
        (70, champion.Champion("3", 0.72, "recorded"), False, "below champion version 3's 0.7200"),
        (72, champion.Champion("3", 0.72, "recorded"), True, "≥ champion version 3's 0.7200"),
        (90, champion.Champion("3", None, "incomparable", "x"), False, "cannot compare with champion version 3"),
    ],
)
def test_deploy_gate(correct: int, found: champion.Champion | None, deploy: bool, reason: str) -> None:
    decision = champion.decide(_balanced(correct), 0.33, found)
    assert decision.accuracy == pytest.approx(correct / 100)
    assert decision.deploy is deploy
    assert reason in decision.reason


def test_no_skill_baseline_of_a_balanced_and_a_skewed_split() -> None:
    """Always the majority class: accuracy p, macro-F1 2p/(1+p)/3; margin 1.645·sqrt(p(1-p)/n)."""
    balanced = champion.no_skill([[5, 0, 0], [0, 5, 0], [0, 0, 5]])
    assert balanced.rows == 15 and balanced.majority_rate == pytest.approx(1 / 3)
    assert balanced.always == "always one of 'negative', 'neutral', 'positive'"
    assert balanced.constant_f1_macro == pytest.approx(1 / 6)  # F1 of "positive": 2·(1/3)/(4/3) = 1/2, over 3
    assert balanced.margin == pytest.approx(1.645 * np.sqrt(2 / 9 / 15))  # 0.2002
    assert balanced.accuracy_needed == pytest.approx(0.5336, abs=1e-4)
    skewed = champion.no_skill([[10, 0, 0], [0, 10, 0], [0, 0, 80]])
    assert skewed.majority_classes == ["positive"] and skewed.majority_rate == pytest.approx(0.8)
    assert skewed.constant_f1_macro == pytest.approx(2 * 0.8 / 1.8 / 3)
    assert skewed.margin == pytest.approx(1.645 * np.sqrt(0.8 * 0.2 / 100))
    # The constant predictor's scores are what `_quality` gives it.
    constant = _quality([[0, 0, 10], [0, 0, 10], [0, 0, 80]])
    assert (constant.accuracy, constant.f1_macro) == pytest.approx((0.8, skewed.constant_f1_macro))


def test_a_model_that_predicts_one_class_is_skipped_whatever_min_accuracy_says() -> None:
    """Issue 19: on a balanced test split a one-class model scores exactly 1/3 ≥ the old gate's 0.33."""
    quality = _quality([[0, 0, 5], [0, 0, 5], [0, 0, 5]])
    assert quality.accuracy == pytest.approx(1 / 3) and quality.f1_macro == pytest.approx(1 / 6)
    for min_accuracy in (0.33, 0.0):
        decision = champion.decide(quality, min_accuracy, None)
        assert decision.deploy is False
        assert "the model predicts 'positive' for all 15 test reviews" in decision.reason
        assert "no better than no skill on these 15 test reviews" in decision.reason
        assert "must reach 0.5336 and 0.3669" in decision.reason and "margin 0.2002" in decision.reason
    assert decision.no_skill["majority_rate"] == pytest.approx(1 / 3) and decision.test_rows == 15
    # The same on a skewed split: always "positive" scores 0.8 there, far above --min-accuracy.
    skewed = champion.decide(_quality([[0, 0, 10], [0, 0, 10], [0, 0, 80]]), 0.33, None)
    assert not skewed.deploy and "always 'positive' scores 0.8000" in skewed.reason


def test_a_score_within_the_margin_of_no_skill_is_skipped() -> None:
    """7 of 15 right (0.467 ≥ 0.33) is within what luck gives on 15 reviews; 9 of 15 is not."""
    lucky = champion.decide(_quality([[3, 1, 1], [1, 2, 2], [1, 2, 2]]), 0.33, None)
    assert lucky.accuracy == pytest.approx(7 / 15) and not lucky.deploy
    assert "no better than no skill" in lucky.reason and "predicts" not in lucky.reason
    skilled = champion.decide(_quality([[3, 1, 1], [1, 3, 1], [0, 1, 4]]), 0.33, None)
    assert skilled.accuracy == pytest.approx(10 / 15) and skilled.deploy, skilled.reason
    assert "beat no skill (0.3333 and 0.1667) by at least the margin 0.2002" in skilled.reason


def test_macro_f1_is_judged_on_its_own() -> None:
    """The rule asks accuracy and macro-F1 each to clear their baseline: a macro-F1 below it refuses even a
    high accuracy (figures given directly; on real confusion matrices the accuracy rule is nearly always the
    stricter one)."""
    matrix = _balanced(90).confusion_matrix
    decision = champion.decide(champion.Quality(0.9, 0.20, matrix), 0.33, None)
    assert not decision.deploy and "macro-F1 0.2000 must reach 0.3781 and 0.2114" in decision.reason
    assert champion.decide(champion.Quality(0.9, 0.22, matrix), 0.33, None).deploy


def test_too_few_test_reviews_are_not_judged() -> None:
    """6 test reviews, all right: a facet column mostly empty can leave that few; the gate says so."""
    decision = champion.decide(_quality([[2, 0, 0], [0, 2, 0], [0, 0, 2]]), 0.33, None)
    assert not decision.deploy
    assert "only 6 test reviews: the gate needs at least 10 to judge a model" in decision.reason


@pytest.mark.parametrize(
    ("outcome", "deploy", "reason"),
    [
        (champion.TrainingOutcome("completed", {}), True, "no champion yet"),
        # A rule that fired under --health-policy report (the best checkpoint is the model): not a refusal.
        (champion.TrainingOutcome("completed", {"overfitting": "validation loss rose"}), True, "no champion yet"),
        (
            champion.TrainingOutcome("completed", {"loss_diverged": "validation loss 508 at step 9 is 462.0×"}),
            False,
            "training diverged (validation loss 508 at step 9 is 462.0×)",
        ),
        (
            champion.TrainingOutcome(
                "health:exploding_gradient", {"exploding_gradient": "gradient norm 2e+03"}, "stop"
            ),
            False,
            "training was stopped by health rule exploding_gradient (gradient norm 2e+03)",
        ),
    ],
)
def test_a_model_whose_training_ended_unhealthy_is_never_deployed(
    outcome: champion.TrainingOutcome, deploy: bool, reason: str
) -> None:
    decision = champion.decide(_balanced(90), 0.33, None, outcome)
    assert decision.deploy is deploy and reason in decision.reason


def test_training_outcome_is_read_from_the_model_directory(tmp_path: Path) -> None:
    assert champion.TrainingOutcome.read(tmp_path) is None  # a model not written by train: nothing to judge
    (tmp_path / "training_outcome.json").write_text(
        json.dumps({"stop_reason": "completed", "policy": "report", "fired": {"loss_diverged": "loss is nan"}})
    )
    outcome = champion.TrainingOutcome.read(tmp_path)
    assert outcome == champion.TrainingOutcome("completed", {"loss_diverged": "loss is nan"}, "report")
    assert outcome.unhealthy() == "training diverged (loss is nan)"


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
    assert not champion.decide(_balanced(90), 0.33, found).deploy


def test_report_outputs(tmp_path: Path, trained: Path, test_split: pd.DataFrame) -> None:
    report = core.run(test_split, trained, tmp_path / "r.json", tmp_path / "r.html", 0.33, tracking_uri=None)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["rows"] == 90 and set(saved["per_facet_accuracy"]) == {"Blouses", "Dresses", "Knits"}
    assert saved["decision"]["deploy"] is True, saved["decision"]["reason"]
    assert saved["decision"]["no_skill"]["majority_rate"] == pytest.approx(1 / 3)
    assert saved["decision"]["no_skill"]["margin"] == pytest.approx(1.645 * np.sqrt(2 / 9 / 90))
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 2 and "Blouses" in page and "no champion yet" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    assert report.headline()["accuracy"] == report.accuracy


def test_a_model_that_says_positive_to_everything_is_skipped(
    tmp_path: Path, always_positive: Path, test_split: pd.DataFrame
) -> None:
    """The issue's quick runs: a real model that answers one class scores 1/3 on a balanced split, which the old
    gate (accuracy ≥ 0.33) deployed; now it is skipped, the reason naming the figures."""
    report = core.run(test_split, always_positive, tmp_path / "r.json", tmp_path / "r.html", 0.33, tracking_uri=None)
    assert report.accuracy == pytest.approx(1 / 3) and report.confusion_matrix == [[0, 0, 30]] * 3
    assert report.decision["deploy"] is False
    assert "the model predicts 'positive' for all 90 test reviews" in report.decision["reason"]
    assert "accuracy 0.3333 and macro-F1 0.1667 must reach 0.4151 and 0.2484" in report.decision["reason"]
    assert "do not deploy" in (tmp_path / "r.html").read_text()


def test_page_escapes_what_comes_from_the_data() -> None:
    labels, predictions = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0])
    facets = ["<script>x</script>"] * 2 + ["A & B"] * 2
    examples = D.Examples([np.array([101, 102])] * 4, labels, ["a", "b", "c", "d"], facets)
    report = core.build_report(examples, predictions, "/models/<m>", "fp", min_facet_rows=1)
    report.decision = {"deploy": False, "reason": "below <champion>"}
    page = core.render_html(report)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "A &amp; B" in page
    assert "below &lt;champion&gt;" in page and "do not deploy" in page
    assert "model <code>&lt;m&gt;</code>" in page and "/models/" not in page  # the directory's name, not a path
    text = " ".join(page.split())  # as a browser shows it: any run of white space is one space
    assert "Gap: 0.500 between &lt;script&gt;x&lt;/script&gt; (1.000) and A &amp; B (0.500), over 2 values" in text
    assert "1.000 (n=2)" in page and "0.500 (n=2)" in page
    from xml.etree import ElementTree

    for svg in page.split("<svg")[1:]:  # both charts are well-formed XML
        ElementTree.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")


def test_registry_round_trip(tmp_path: Path, trained: Path, test_split: pd.DataFrame) -> None:
    """First candidate: no champion, deployed, registered as challenger; promoted; then a candidate scored on
    the same split is compared with the champion's recorded accuracy."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    classifier = trained
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
