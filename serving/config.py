"""The model server's options, declared once: `python -m serving`'s flags and their checks come from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from components.common import modeling, options, schema, tracking


@dataclass
class ServeConfig:
    """What `python -m serving` serves, where, and how it batches and limits requests."""

    model_dir: str = field(
        default="", metadata={"help": "Model directory written by train (save_pretrained: weights, config, tokenizer)."}
    )
    champion: bool = field(
        default=False,
        metadata={"help": "Serve the MLflow registry's champion (alias champion of --registered-model)."},
    )
    registered_model: str = field(
        default=tracking.DEFAULT_REGISTERED_MODEL,
        metadata={"help": "Registered model whose champion --champion serves."},
    )
    mlflow_tracking_uri: str = field(default="", metadata={"help": tracking.TRACKING_URI_HELP})
    port: int = field(default=8080, metadata={"help": "HTTP port.", "min": 1, "max": 65535})
    host: str = field(
        default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface, as in a container)."}
    )
    model_name: str = field(
        default=schema.MODEL_NAME,
        metadata={"help": "Name in the routes: /v1/models/<name>:predict, /v2/models/<name>/infer."},
    )
    max_batch_size: int = field(
        default=32, metadata={"help": "Texts per forward pass at most (1: no batching across requests).", "min": 1}
    )
    max_latency_ms: float = field(
        default=0.0,
        metadata={
            "help": "How long a batch waits for more requests after its first one, in ms (0: it takes the requests "
            "already waiting — those that arrived during the previous forward pass — and starts).",
            "min": 0,
            "max": 10000,
        },
    )
    max_texts: int = field(default=64, metadata={"help": "Texts per request at most (more: HTTP 413).", "min": 1})
    max_text_chars: int = field(
        default=5000, metadata={"help": "Characters per text at most (longer: HTTP 413).", "min": 1}
    )
    torch_threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads of one forward pass (0: the runtime's default, one per core); int8: passes run at "
            "a time, one thread each (0: one per usable CPU).",
            "min": 0,
        },
    )
    backend: Literal["auto", "pytorch", "onnx", "onnx-int8"] = field(
        default="auto",
        metadata={
            "help": "What runs the model: auto (the model directory's onnx/model_int8.onnx, else onnx/model.onnx, "
            "else PyTorch: what evaluate scored), pytorch, onnx (fp32) or onnx-int8.",
        },
    )
    max_seq_length: int = field(
        default=schema.MAX_SEQ_LENGTH,
        metadata={"help": "Tokens per text at most (longer texts are cut, as in training).", "min": 3},
    )
    feature_store: str = field(
        default="",
        metadata={
            "help": "Feast store directory (a run's feature_store/, or a PVC with the cluster configuration): "
            'serve by review id too, {"instances": [{"review_id": "..."}]}, reading its online store. '
            "Empty: texts only."
        },
    )
    feast_config: str = field(
        default="local",
        metadata={"help": "--feature-store's configuration: `local`, `cluster` or a feature_store.yaml."},
    )

    def validate(self) -> None:
        """Check every option.

        Raises:
            ValueError: An option out of bounds, an empty model name, no model directory, one without
                config.json or tokenizer files (whether the weights load, `SentimentClassifier.load` finds out),
                a ``max_seq_length`` above the model's position limit, or a --feature-store that is no
                directory (whether it holds a store, `serving.features.OnlineFeatures` finds out).
        """
        options.check_fields(self)
        if self.feature_store.strip() and not Path(self.feature_store).expanduser().is_dir():
            raise ValueError(
                f"--feature-store {self.feature_store}: no such directory; pass a run's feature_store/ directory "
                "(the Feast repository feast_ingest wrote)."
            )
        if not self.model_name.strip() or "/" in self.model_name or ":" in self.model_name:
            raise ValueError(f"--model-name must be a non-empty name without '/' or ':', got {self.model_name!r}.")
        if self.champion:
            if self.model_dir.strip():
                raise ValueError("Pass --model-dir or --champion, not both.")
            return
        if not self.model_dir.strip():
            raise ValueError("--model-dir is required (the model directory written by train), or --champion.")
        if not Path(self.model_dir).expanduser().is_dir():
            raise ValueError(f"--model-dir {self.model_dir}: no such directory; pass a directory written by train.")
        modeling.resolve_base_model(self.model_dir)  # config.json and tokenizer files are there (cheap, no torch)
        modeling.check_max_seq_length(self.model_dir, self.max_seq_length)  # else HTTP 500 on every long text
