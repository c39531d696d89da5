"""Int8 quantisation of a fine-tuned classifier: which settings keep its labels, and what each costs.

Train keeps ``onnx/model_int8.onnx`` only where its labels equal PyTorch's on at least 99 % of the validation
split (`components.common.onnx_export`); otherwise the server runs the fp32 ONNX model.  This benchmark takes a
model directory train wrote (``--model-dir``, required: e.g. ``python -m bench quality --keep-model DIR``),
the course's balanced validation and test splits (``$REVIEWS_CSV``, tokenized at ``--max-seq-length``, the
model's), and for each `quantize_dynamic` setting below, and ONNX Runtime's block-wise 8-bit ``MatMulNBits``
(`BLOCKS`), quantises the model's fp32 ONNX model (exported into a copy when it has none) and reports: the
share of reviews whose label equals PyTorch fp32's, the accuracy beside PyTorch's, the milliseconds per review
of one padded pass of 16 reviews on one thread (fp32 ONNX and PyTorch alongside), and the largest PyTorch
margin (gap between the two largest logits) of a review whose label changed, to read beside the quantiles of
PyTorch's margins: how far quantisation moves the logits against how close the model's labels are to a tie.
*value*: the share of train's setting (`onnx_export.INT8_SETTINGS`); *baseline*: train's rule, 0.99.

    python -m bench quantize --model-dir DIR [--max-seq-length 64] [--csv CSV]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._course import course_csv, course_features
from bench._util import label_scores, result


def _ffn_outputs(path: Path) -> list[str]:
    """The MatMul nodes of each layer's feed-forward output (``…/layer.N/output/dense/MatMul``)."""
    import onnx

    nodes = onnx.load(str(path)).graph.node
    return [n.name for n in nodes if n.op_type == "MatMul" and "/output/dense/" in n.name and "attention" not in n.name]


def settings(fp32: Path) -> dict[str, dict[str, Any]]:
    """The `quantize_dynamic` settings compared: train's, and variations that keep more of the model in fp32 or
    use all 8 bits (per-tensor activations, the whole batch's range, in all of them)."""
    ffn = _ffn_outputs(fp32)
    return {
        "train (per channel, 7-bit)": {},
        "MatMul only (pooler and head fp32)": {"op_types_to_quantize": ["MatMul"]},
        "feed-forward outputs fp32": {"nodes_to_exclude": ffn},
        "8-bit": {"reduce_range": False},
        "8-bit, feed-forward outputs fp32": {"reduce_range": False, "nodes_to_exclude": ffn},
    }


#: Block sizes of the block-wise variants: 8-bit weights in blocks of this many input channels, and activations
#: quantised to int8 per block of each row too (``accuracy_level`` 4), instead of one range for the whole batch.
BLOCKS = (64, 128)


def quantize_blockwise(source: Path, target: Path, block_size: int) -> None:
    """``source``'s MatMuls as ONNX Runtime's ``MatMulNBits`` (8 bits, ``block_size``, int8 compute) at ``target``."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), False)


def margins(logits: np.ndarray) -> np.ndarray:
    """Each review's gap between its two largest logits (how far its label is from changing)."""
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]


def ms_per_review(classifier: Any, rows: list[np.ndarray], repeat: int = 9) -> float:
    classifier.batch_logits(rows)  # warm-up
    runs = []
    for _ in range(repeat):
        begin = time.perf_counter()
        classifier.batch_logits(rows)
        runs.append(time.perf_counter() - begin)
    return 1000 * statistics.median(runs) / len(rows)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench quantize")
    parser.add_argument("--model-dir", required=True, help="a model directory train wrote")
    parser.add_argument("--csv", default="")
    parser.add_argument("--max-seq-length", type=int, default=64, help="the model's (bench quality: 64)")
    parser.add_argument("--seed", type=int, default=42, help="the split's seed (bench quality: 42)")
    args = parser.parse_args(argv)
    if not (Path(args.model_dir) / "config.json").is_file():
        raise SystemExit(f"error: --model-dir {args.model_dir!r} is not a model directory train wrote")

    from components.common import batching as D
    from components.common import inference, onnx_export

    frame, _ = course_features(course_csv(args.csv), args.max_seq_length, args.seed)
    held = frame[frame["split"] != "train"].reset_index(drop=True)
    examples = D.to_examples(held, "validation+test", args.max_seq_length)
    rows = [examples.input_ids[i] for i in range(16)]
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        model = Path(tmp) / "model"
        shutil.copytree(args.model_dir, model)
        fp32, q8 = inference.onnx_path(model), inference.onnx_path(model, int8=True)
        if not fp32.is_file():
            onnx_export.export_fp32(model, fp32)
        pytorch = inference.load(model, "pytorch", threads=1, cpu=True)
        logits = pytorch.logits(examples)
        reference, margin = logits.argmax(axis=1), margins(logits)
        figures: dict[str, dict[str, float]] = {
            "pytorch fp32": {
                "accuracy": label_scores(reference, reference, examples.labels)["accuracy"],
                "ms_per_review": round(ms_per_review(pytorch, rows), 2),
            },
        }

        def scored(backend: str) -> dict[str, float]:
            classifier = inference.load(model, backend, threads=1)
            labels = classifier.logits(examples).argmax(axis=1)
            changed = margin[labels != reference]
            return label_scores(labels, reference, examples.labels) | {
                "ms_per_review": round(ms_per_review(classifier, rows), 2),
                "largest_margin_changed": round(float(changed.max()), 4) if len(changed) else 0.0,
            }

        figures["onnx fp32"] = scored("onnx")
        for name, override in settings(fp32).items():
            q8.unlink(missing_ok=True)
            onnx_export.quantize(fp32, q8, **override)
            figures[f"onnx int8, {name}"] = scored("onnx-int8")
        for block in BLOCKS:
            q8.unlink(missing_ok=True)
            quantize_blockwise(fp32, q8, block)
            figures[f"onnx int8, block-wise ({block})"] = scored("onnx-int8")
    trains = figures["onnx int8, train (per channel, 7-bit)"]["equal_to_pytorch"]
    return result(
        "quantize",
        trains,
        onnx_export.MIN_INT8_AGREEMENT,
        "share of labels equal to PyTorch fp32's",
        reviews=len(examples),
        max_seq_length=args.max_seq_length,
        threads=1,
        pytorch_margin_quantiles={f"{q:.0%}": round(float(np.quantile(margin, q)), 4) for q in (0.01, 0.02, 0.05)},
        variants=figures,
    )
