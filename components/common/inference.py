"""One loader of a trained classifier for inference, whatever runs it: PyTorch, or ONNX Runtime (fp32 or int8).

Train writes the classifier as a `save_pretrained` directory and, beside its weights, the same model exported to
ONNX (`components.common.onnx_export`): ``onnx/model.onnx`` (fp32) and, where its labels agree with PyTorch's,
``onnx/model_int8.onnx`` (dynamically quantised int8 weights).  `load` picks a backend for such a directory:

- ``auto`` (the default): the int8 model when the directory has it, else the fp32 ONNX model, else PyTorch —
  so a directory without ``onnx/`` (a model trained before the export, a champion logged then) still serves;
- ``pytorch``, ``onnx`` (fp32) or ``onnx-int8``: that one, or a clear error when the directory lacks it.

The model server (`serving.classifier`) and evaluate (`components.evaluate.predictions`) both load through
here, so the deploy gate and the smoke check judge the variant that users get.  The ONNX backends need
neither torch nor transformers' models: only onnxruntime and the tokenizer.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedTokenizerBase

#: Where the exported models lie inside a model directory (the same in KServe's and SageMaker's paths).
ONNX_DIR = "onnx"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model_int8.onnx"
#: The backends `load` takes; ``auto`` picks from the directory's files.
BACKENDS = ("auto", "pytorch", "onnx", "onnx-int8")
#: The name each backend reports (logs, the evaluation report, the benchmark).
VARIANTS = {"pytorch": "pytorch-fp32", "onnx": "onnx-fp32", "onnx-int8": "onnx-int8"}


def onnx_path(model_dir: str | Path, int8: bool = False) -> Path:
    return Path(model_dir) / ONNX_DIR / (ONNX_INT8 if int8 else ONNX_FP32)


def choose(model_dir: str | Path, backend: str = "auto") -> str:
    """The backend `load` uses for ``model_dir``: ``pytorch``, ``onnx`` or ``onnx-int8``.

    Raises:
        ValueError: An unknown backend, or a forced ONNX one whose file the directory lacks.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown inference backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        if onnx_path(model_dir, int8=True).is_file():
            return "onnx-int8"
        return "onnx" if onnx_path(model_dir).is_file() else "pytorch"
    if backend != "pytorch" and not onnx_path(model_dir, int8=backend == "onnx-int8").is_file():
        raise ValueError(
            f"Backend {backend!r} needs {onnx_path(model_dir, int8=backend == 'onnx-int8')}, which model directory "
            f"{str(model_dir)!r} lacks (train writes it; components.common.onnx_export adds it to an older "
            "directory); use backend auto or pytorch."
        )
    return backend


def pad(rows: list[np.ndarray], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of ``rows`` padded to the longest, int64 — as `batching.Collator` pads."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = r
        mask[j, : len(r)] = 1
    return ids, mask


@dataclass
class Classifier:
    """A loaded classifier: its tokenizer, labels, vocabulary size, and `logits` of token-id rows."""

    backend: str
    tokenizer: PreTrainedTokenizerBase
    labels: tuple[str, ...]
    vocab_size: int
    model_dir: str
    _run: Any  # (list of token-id rows) -> logits
    #: The PyTorch model (backend pytorch), None on ONNX Runtime.
    model: Any = None

    @property
    def variant(self) -> str:
        """``pytorch-fp32``, ``onnx-fp32`` or ``onnx-int8``."""
        return VARIANTS[self.backend]

    def logits(self, examples: D.Examples, batch_size: int = 64) -> np.ndarray:
        """Logits (float32, shape (n, classes)) of every example in input order, in length-sorted batches."""
        out = np.zeros((len(examples), len(self.labels)), dtype=np.float32)
        for batch in D.eval_batches(examples.lengths, batch_size):
            out[batch] = self._run([examples.input_ids[i] for i in batch])
        return out

    def batch_logits(self, rows: list[np.ndarray]) -> np.ndarray:
        """Logits of ``rows`` (the server's batch) in one padded forward pass; int8: a pass per row (see
        `_onnx_runner`)."""
        return self._run(rows)


def _labels(model_dir: Path) -> tuple[tuple[str, ...], int]:
    config = json.loads((model_dir / "config.json").read_text())
    id2label = {int(k): v for k, v in config.get("id2label", {}).items()}
    labels = tuple(id2label[i] for i in range(len(id2label)))
    if labels != D.CLASS_NAMES:
        raise ValueError(
            f"Model {str(model_dir)!r} predicts labels {list(labels)}, not {list(D.CLASS_NAMES)}: it was not trained "
            "by the train step of this pipeline. Use a model directory written by train."
        )
    return labels, int(config["vocab_size"])


def onnx_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of ``path`` (``threads`` intra-op threads; 0: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(path: Path, pad_token_id: int, threads: int, each_alone: bool) -> Any:
    """``rows`` → logits in one padded pass of ``path``'s model, or, with ``each_alone``, a pass per row.

    The int8 model runs each review alone: dynamic quantisation takes one range per input tensor, so in a
    shared padded pass a review's logits would change with its batch mates and the padding (the labels of
    2-3 % of the course's held-out reviews did, with a fine-tuned model), and the server's answers would differ
    from evaluate's, batched otherwise, beyond any tie the smoke check allows.  Each pass runs on one thread,
    ``threads`` passes at a time (0: one per CPU this process may use), so a review's logits are the same to
    the bit whatever the batch and the thread count — the server's and evaluate's alike — and every core is
    busy.  On one and two threads this costs nothing against a padded pass (docs/benchmarks.md, "Serving
    backends")."""
    session = onnx_session(path, 1 if each_alone else threads)
    names = {i.name for i in session.get_inputs()}

    def forward(rows: list[np.ndarray]) -> np.ndarray:
        ids, mask = pad(rows, pad_token_id)
        feed = {"input_ids": ids, "attention_mask": mask}
        return session.run(["logits"], {k: v for k, v in feed.items() if k in names})[0].astype(np.float32)

    if not each_alone:
        return forward
    workers = threads or len(os.sched_getaffinity(0))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="onnx-int8") if workers > 1 else None

    def each(rows: list[np.ndarray]) -> np.ndarray:  # onnxruntime releases the GIL while a pass runs
        alone = [[row] for row in rows]
        parallel = pool is not None and len(rows) > 1
        return np.vstack(list(pool.map(forward, alone) if parallel else map(forward, alone)))

    return each


def _torch_runner(model_dir: Path, pad_token_id: int, threads: int, cpu: bool) -> Any:
    import torch

    from components.common import modeling

    if threads:
        torch.set_num_threads(threads)
    model, _ = modeling.load_trained_classifier(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    dtype = modeling.pick_precision("auto", device)
    model = model.to(device).eval()

    def run(rows: list[np.ndarray]) -> np.ndarray:
        examples = D.Examples(input_ids=rows, labels=np.zeros(len(rows), dtype=np.int64))
        logits, _ = modeling.predict(model, examples, pad_token_id, len(rows), device, dtype)
        return logits

    run.model = model  # type: ignore[attr-defined]
    return run


def load(model_dir: str | Path, backend: str = "auto", threads: int = 0, cpu: bool = False) -> Classifier:
    """The classifier in ``model_dir`` (written by train) on the backend `choose` picks; ``threads``: CPU threads
    of one forward pass (0: the runtime's default).  PyTorch runs on the GPU when there is one (bf16/fp16
    autocast there), unless ``cpu`` (then in fp32); ONNX Runtime runs on the CPU.

    Raises:
        ValueError: No such directory, no config or tokenizer, other labels than the pipeline's three, an
            unknown backend or a forced one the directory lacks, or a model that does not load.
    """
    from components.common import modeling

    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ValueError(f"Model directory {str(model_dir)!r} does not exist; pass a directory written by train.")
    chosen = choose(path, backend)
    name = modeling.resolve_base_model(str(path))
    labels, vocab_size = _labels(path)
    tokenizer = modeling.load_tokenizer(name)
    try:
        if chosen == "pytorch":
            run = _torch_runner(path, tokenizer.pad_token_id, threads, cpu)
        else:
            int8 = chosen == "onnx-int8"
            run = _onnx_runner(onnx_path(path, int8), tokenizer.pad_token_id, threads, each_alone=int8)
    except ValueError:
        raise
    except Exception as error:  # transformers: OSError, RuntimeError...; onnxruntime: its own errors
        reason = " ".join(str(error).split())[:300].rstrip(".")
        raise ValueError(
            f"Cannot load the classifier in {str(model_dir)!r} ({VARIANTS[chosen]}): {reason}. "
            "Pass a directory written by train."
        ) from error
    return Classifier(chosen, tokenizer, labels, vocab_size, os.fspath(path), run, getattr(run, "model", None))


def predict_classes(
    model_dir: str | Path, examples: D.Examples, batch_size: int = 64, split: str = "test"
) -> np.ndarray:
    """Predicted class ids of ``examples`` (input order) by the classifier in ``model_dir``, loaded as the model
    server loads it (`load`: its ONNX model when the directory has one, else
    PyTorch, on the GPU when there is one); ``split`` names the examples in errors.

    Raises:
        ValueError: See `load`; or token ids the model's tokenizer cannot have produced.
    """
    from components.common.modeling import first_token_id

    classifier = load(model_dir)
    D.check_vocabulary(examples, split, classifier.vocab_size, first_token_id(classifier.tokenizer), str(model_dir))
    return classifier.logits(examples, batch_size).argmax(axis=1)
