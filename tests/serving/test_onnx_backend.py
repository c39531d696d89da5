"""The ONNX backend (components.common.onnx_export, components.common.inference): the bundled MiniLM exported to
ONNX answers with PyTorch's labels on real reviews (fp32: every one; int8: ≥ 99 %); `auto` picks int8, then fp32
ONNX, then PyTorch; evaluate and the real server run the ONNX model when the directory has one and fall back to
PyTorch when it has none.

The classifier is the bundled MiniLM with its 3-label head fitted in closed form (ridge regression of the
labels on the pooled outputs of 200 course reviews, a linear probe): a random head's logits differ by about
0.01 and any rounding flips its labels, which says nothing about a trained model's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from components.common import batching as D
from components.common import inference, onnx_export

REVIEWS = 200
MAX_TOKENS = 64
#: The kind of reviews deploy's smoke check sends (short, long, mixed).
SMOKE = [
    "lovely dress, perfect fit",
    "awful. the seams came apart after one wash and it ran two sizes small.",
    "it was okay I guess, the fabric is fine but the color " * 3,
    "Runs large but the material is soft and I love the pattern.",
]


def course_reviews(csv: Path, count: int) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(csv).dropna(subset=["Review Text"]).head(count)
    return frame["Review Text"].tolist(), np.digitize(frame["Rating"].to_numpy(), [3, 4])  # neg, neu, pos


def probe_classifier(directory: Path, texts: list[str], labels: np.ndarray) -> Path:
    """The bundled MiniLM with a ridge-regression head on its pooled outputs, saved as train saves a model."""
    import torch

    from serving.testing import untrained_classifier

    path = untrained_classifier("", directory)
    engine = inference.load(path, "pytorch")
    model, tokenizer = engine.model, engine.tokenizer
    encoded = tokenizer(texts, truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        pooled = model.bert(**encoded).pooler_output.numpy().astype(np.float64)
    x = np.hstack([pooled, np.ones((len(pooled), 1))])
    y = np.eye(3)[labels] * 2 - 1
    w = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ y)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(w[:-1].T.astype(np.float32)))
        model.classifier.bias.copy_(torch.from_numpy(w[-1].astype(np.float32)))
    model.save_pretrained(path)
    return path


def examples(tokenizer, texts: list[str]) -> D.Examples:
    ids = tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    return D.Examples(input_ids=[np.asarray(i, dtype=np.int64) for i in ids], labels=np.zeros(len(ids), np.int64))


@pytest.fixture(scope="module")
def exported(reviews_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, D.Examples]:
    texts, labels = course_reviews(reviews_csv, REVIEWS)
    path = probe_classifier(tmp_path_factory.mktemp("onnx") / "model", texts, labels)
    tokenizer = inference.load(path, "pytorch").tokenizer
    report = onnx_export.export(path, check=examples(tokenizer, SMOKE))  # the check itself: see the tiny model's test
    return path, report, examples(tokenizer, [*SMOKE, *texts])


def test_export_writes_both_variants_whose_labels_equal_pytorchs(exported) -> None:
    path, report, checked = exported
    assert (path / "onnx" / "model.onnx").is_file() and (path / "onnx" / "model_int8.onnx").is_file()
    assert report["variants"] == ["onnx-int8", "onnx-fp32"] and report["dropped"] == {}
    assert report["checked_reviews"] == len(SMOKE)
    reference = inference.load(path, "pytorch").logits(checked)
    fp32 = inference.load(path, "onnx").logits(checked)
    int8 = inference.load(path, "onnx-int8").logits(checked)
    np.testing.assert_array_equal(fp32.argmax(1), reference.argmax(1))  # every review, smoke ones included
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    assert np.mean(int8.argmax(1) == reference.argmax(1)) >= 0.99
    np.testing.assert_array_equal(int8[: len(SMOKE)].argmax(1), reference[: len(SMOKE)].argmax(1))
    assert report["agreement"] == {"onnx-int8": 1.0, "onnx-fp32": 1.0}


def test_a_variant_whose_labels_differ_from_pytorchs_is_dropped_and_auto_serves_the_next(tmp_path: Path) -> None:
    """The tiny random model (its labels flip under int8 rounding): int8 asked to agree on more than every review
    is dropped, fp32 ONNX kept; auto then runs fp32 ONNX."""
    from serving.testing import untrained_classifier
    from tests import testing

    path = untrained_classifier(testing.tiny_model(tmp_path / "base", dropout=0.0), tmp_path / "model")
    checked = examples(inference.load(path, "pytorch").tokenizer, SMOKE)
    report = onnx_export.export(path, check=checked, min_int8_agreement=1.01)
    assert report["variants"] == ["onnx-fp32"] and list(report["dropped"]) == ["onnx-int8"]
    assert "less than 101%" in report["dropped"]["onnx-int8"]
    assert not (path / "onnx" / "model_int8.onnx").exists()
    assert inference.choose(path) == "onnx"


def test_batches_of_any_size_and_length_match_one_review_at_a_time(exported) -> None:
    """The exported graph takes any batch and length (dynamic axes), padding changes nothing."""
    path, _, checked = exported
    engine = inference.load(path, "onnx")
    rows = checked.input_ids[:5]
    together = engine.batch_logits(rows)
    alone = np.vstack([engine.batch_logits([r]) for r in rows])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_an_int8_answer_does_not_depend_on_the_reviews_batched_with_it(exported) -> None:
    """Dynamic quantisation takes one range per input tensor: in a shared padded pass, a review's int8 logits
    would change with its batch mates and the padding (and the smoke check, comparing the server's answers with
    evaluate's differently batched ones, would fail on clear answers). Each review runs alone: the same logits,
    to the bit, whatever it is batched with."""
    path, _, checked = exported
    engine = inference.load(path, "onnx-int8")
    rows = checked.input_ids[:8]
    alone = np.vstack([engine.batch_logits([r]) for r in rows])
    np.testing.assert_array_equal(engine.batch_logits(rows), alone)
    np.testing.assert_array_equal(engine.batch_logits(rows[::-1])[::-1], alone)
    np.testing.assert_array_equal(engine.logits(D.Examples(input_ids=rows, labels=checked.labels[:8])), alone)
    # one thread a pass, passes in parallel: the server's thread count and evaluate's give the same logits
    for threads in (1, 3):
        np.testing.assert_array_equal(inference.load(path, "onnx-int8", threads=threads).batch_logits(rows), alone)


def test_auto_picks_int8_then_fp32_then_pytorch_and_a_forced_missing_one_is_an_error(tmp_path: Path) -> None:
    assert inference.choose(tmp_path) == "pytorch"
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    assert inference.choose(tmp_path) == "onnx"
    with pytest.raises(ValueError, match=r"onnx-int8.*lacks"):
        inference.choose(tmp_path, "onnx-int8")
    (tmp_path / "onnx" / "model_int8.onnx").write_bytes(b"")
    assert inference.choose(tmp_path) == "onnx-int8"
    assert inference.choose(tmp_path, "pytorch") == "pytorch"
    with pytest.raises(ValueError, match="Unknown inference backend 'tensorrt'"):
        inference.choose(tmp_path, "tensorrt")


def onnx_only(path: Path, target: Path) -> Path:
    """A copy of the model directory without its PyTorch weights: only an ONNX backend can answer from it."""
    shutil.copytree(path, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return target


def test_evaluate_scores_the_onnx_model_when_the_directory_has_one(exported, tmp_path: Path) -> None:
    from components.evaluate.predictions import predict_probabilities

    path, _, checked = exported
    bare = onnx_only(path, tmp_path / "model")
    probabilities = predict_probabilities(bare, checked, batch_size=16)
    served = inference.load(path, "onnx-int8").logits(checked)
    np.testing.assert_array_equal(probabilities.argmax(1), served.argmax(1))
    with pytest.raises(ValueError):  # no weights: PyTorch could not have scored it
        predict_probabilities(bare, checked, backend="pytorch")
    # the champion's re-evaluation on another split (components.evaluate.champion) scores it the same way

    np.testing.assert_array_equal(inference.predict_classes(bare, checked), served.argmax(1))


def test_the_server_runs_onnx_when_present_and_pytorch_when_absent(exported, model_dir: Path, tmp_path: Path) -> None:
    from serving.classifier import SentimentClassifier
    from serving.testing import ServerProcess, request

    path, _, _ = exported
    bare = onnx_only(path, tmp_path / "model")
    expected = SentimentClassifier.load(path).classify(SMOKE)  # auto: int8
    onnx = ServerProcess(bare, tmp_path / "onnx.log")
    fallback = ServerProcess(model_dir, tmp_path / "torch.log")  # the session's tiny model: no onnx/
    try:
        onnx.wait(), fallback.wait()
        answer = request(onnx.v1, {"instances": SMOKE})
        assert answer.status == 200, answer.body
        assert [p["label"] for p in answer.json()["predictions"]] == [p.label for p in expected]
        assert request(fallback.v1, {"instances": SMOKE}).status == 200
    finally:
        onnx.stop(), fallback.stop()
    assert "Inference backend: onnx-int8 (--backend auto)" in onnx.tail(100_000)
    assert "Inference backend: pytorch-fp32 (--backend auto)" in fallback.tail(100_000)


def test_train_writes_the_onnx_models_into_its_model_directory(tmp_path: Path) -> None:
    """The train step's directory (KServe's storage URI, SageMaker's /opt/ml/model) carries onnx/, checked on the
    validation split: what auto serves and evaluate scores."""
    from tests import testing

    path = testing.skilled_classifier(tmp_path)
    assert (path / "onnx" / "model.onnx").is_file()
    assert inference.choose(path) in ("onnx", "onnx-int8")
    assert not (tmp_path / "model.tmp").exists()


def test_the_export_command_refuses_a_missing_directory_with_exit_2(tmp_path: Path, capsys) -> None:
    assert onnx_export.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_the_export_check_compares_with_pytorch_in_fp32_on_the_cpu_even_beside_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU node train's PyTorch runs in bf16 there; the check's reference must be fp32 on the CPU as the ONNX
    models run (bf16 labels differ from both). Here torch is told a GPU is present: the check must not use it."""
    import torch

    from serving.testing import untrained_classifier
    from tests import testing

    path = untrained_classifier(testing.tiny_model(tmp_path / "base", dropout=0.0), tmp_path / "model")
    checked = examples(inference.load(path, "pytorch").tokenizer, SMOKE)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    report = onnx_export.export(path, int8=False, check=checked)
    assert report["variants"] == ["onnx-fp32"] and report["agreement"] == {"onnx-fp32": 1.0}
