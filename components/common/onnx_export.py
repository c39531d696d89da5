"""Export a trained classifier to ONNX, with an int8 dynamically quantised variant, inside its model directory.

Train calls `export` on the directory it has just written (so the KServe and SageMaker paths, which both
serve the train step's directory, get the same layout; see `components.common.inference`)::

    model_dir/onnx/model.onnx        fp32, torch.onnx.export (TorchScript exporter), dynamic batch and length
    model_dir/onnx/model_int8.onnx   onnxruntime.quantization.quantize_dynamic: int8 weights of MatMul/Gemm,
                                     per output channel and 7-bit (reduce_range: no saturation on CPUs
                                     without VNNI); labels equal PyTorch's on 99.5 % of 400 course reviews
                                     (MiniLM with a linear-probe head), 98.5 % per tensor

Each variant is kept only where its labels equal PyTorch's on the reviews it is checked on (train: the
validation split): fp32 on every one of them, int8 on at least ``min_int8_agreement`` (99 %).  A variant that
fails is removed and the report says so; `inference.load`'s ``auto`` then serves the next one (int8 → fp32 ONNX
→ PyTorch).  ``python -m components.common.onnx_export MODEL_DIR`` adds the files to an older directory.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from components.common import batching as D
from components.common import inference

#: The least share of checked reviews whose int8 label equals PyTorch's for the int8 model to be kept.
MIN_INT8_AGREEMENT = 0.99
#: The least share for the fp32 ONNX model (the same graph: every label equal, ties aside).
MIN_FP32_AGREEMENT = 1.0
#: Reviews the check runs on at most (the first ones; inference of 3 variants on CPU).
MAX_CHECK_REVIEWS = 1000
OPSET = 17


def export_fp32(model_dir: Path, path: Path) -> None:
    """``model_dir``'s classifier as an fp32 ONNX model at ``path`` (logits from ids and mask, dynamic axes)."""
    import torch

    from components.common import modeling

    model, tokenizer = modeling.load_trained_classifier(model_dir)
    model = model.to("cpu").eval()

    class Logits(torch.nn.Module):  # the classifier's logits from ids and mask only (token types: all 0)
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    sample = tokenizer(["a review", "a longer review of a product"], padding=True, return_tensors="pt")
    axes = {"batch": 0, "sequence": 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            Logits(),
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {v: k for k, v in axes.items()},
                "attention_mask": {v: k for k, v in axes.items()},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


#: `quantize_dynamic`'s settings of the int8 model: int8 weights per output channel, 7-bit (see the module docstring).
INT8_SETTINGS: dict[str, Any] = {"per_channel": True, "reduce_range": True}


def quantize(source: Path, target: Path, **settings: Any) -> None:
    """The int8 dynamically quantised model of ``source`` at ``target`` (`INT8_SETTINGS`, overridden by
    ``settings``: any other `quantize_dynamic` argument, e.g. ``nodes_to_exclude``)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing": a hint for static quantisation
    try:
        quantize_dynamic(str(source), str(target), **{"weight_type": QuantType.QInt8, **INT8_SETTINGS, **settings})
    finally:
        root.setLevel(level)


def agreement(model_dir: Path, backend: str, reference: np.ndarray, examples: D.Examples) -> float:
    """Share of ``examples`` whose label by ``backend`` equals ``reference`` (PyTorch's labels)."""
    labels = inference.load(model_dir, backend).logits(examples).argmax(axis=1)
    return float(np.mean(labels == reference))


def export(
    model_dir: str | Path,
    int8: bool = True,
    check: D.Examples | None = None,
    min_int8_agreement: float = MIN_INT8_AGREEMENT,
) -> dict[str, Any]:
    """Write ``onnx/model.onnx`` (and, with ``int8``, ``onnx/model_int8.onnx``) into ``model_dir``; with
    ``check``, keep each only where its labels agree with PyTorch's (see the module docstring).

    Returns:
        What was kept and measured: ``variants`` (kept, best first), ``checked_reviews``, ``agreement``
        (per variant), ``dropped`` (variant → reason).
    """
    path = Path(model_dir)
    fp32, q8 = inference.onnx_path(path), inference.onnx_path(path, int8=True)
    shutil.rmtree(fp32.parent, ignore_errors=True)
    export_fp32(path, fp32)
    if int8:
        quantize(fp32, q8)
    report: dict[str, Any] = {"variants": [], "checked_reviews": 0, "agreement": {}, "dropped": {}}
    if check is not None and len(check):
        rows = min(len(check), MAX_CHECK_REVIEWS)
        sample = D.Examples(input_ids=check.input_ids[:rows], labels=check.labels[:rows])
        # fp32 on the CPU, as the ONNX models run: a GPU's bf16 autocast would differ from both
        reference = inference.load(path, "pytorch", cpu=True).logits(sample).argmax(axis=1)
        report["checked_reviews"] = rows
        for backend, file, least in (("onnx-int8", q8, min_int8_agreement), ("onnx", fp32, MIN_FP32_AGREEMENT)):
            if not file.is_file():
                continue
            share = agreement(path, backend, reference, sample)
            report["agreement"][inference.VARIANTS[backend]] = round(share, 4)
            if share < least:
                report["dropped"][inference.VARIANTS[backend]] = (
                    f"labels equal PyTorch's on {share:.2%} of {rows} reviews, less than {least:.0%}"
                )
                file.unlink()
        if not fp32.is_file() and q8.is_file():  # int8 without its fp32 source: keep the rule simple
            q8.unlink()
            report["dropped"].setdefault("onnx-int8", "the fp32 model it was quantised from was dropped")
    report["variants"] = [
        inference.VARIANTS[b] for b in ("onnx-int8", "onnx") if inference.onnx_path(path, b != "onnx").is_file()
    ]
    if not report["variants"]:
        shutil.rmtree(fp32.parent, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m components.common.onnx_export",
        description="Add onnx/model.onnx and onnx/model_int8.onnx to a model directory written by train.",
    )
    cli.add_argument("model_dir")
    cli.add_argument("--no-int8", action="store_true", help="export the fp32 model only")
    args = cli.parse_args(argv)
    try:
        from components.common import modeling

        if not Path(args.model_dir).is_dir():
            raise ValueError(f"Model directory {args.model_dir!r} does not exist; pass a directory written by train.")
        modeling.resolve_base_model(args.model_dir)
        report = export(args.model_dir, int8=not args.no_int8)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(report['variants'])} into {Path(args.model_dir) / inference.ONNX_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
