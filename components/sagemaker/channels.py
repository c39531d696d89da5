"""Data in and out of S3: the training job's channels from Feast, and the model it wrote.

- `read_splits`: the train and validation splits read back from the Feast store point-in-time correct, as the
  kfp target's training does (`components.common.features.get_training_features`).
- `upload_channels`: each split as one Parquet file under its channel's prefix (``<s3_prefix>/<run>/channels/
  <train|validation>/<split>.parquet``): the job's ``train`` and ``validation`` channels, which SageMaker copies
  to ``/opt/ml/input/data/<channel>/``.  Objects are encrypted with the profile's KMS key when it has one.
- `download_model`: the job's ``model.tar.gz`` unpacked into the step's Model artifact directory, so evaluate
  reads the same directory layout (``training.model_dir``) as on the kfp target.  Unpacking refuses links,
  absolute paths and ``..`` (``tarfile``'s ``data`` filter).

Every S3 request is checked against botocore's model first (`components.sagemaker.limits`).
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.sagemaker.jobs import call

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd


def read_splits(feature_store: str, feast_config: str) -> dict[str, pd.DataFrame]:
    """The train and validation splits from the Feast store (review_id and every feature).

    Raises:
        ValueError: No store there, or a split without rows.
    """
    from components.common import features as F

    every = F.get_training_features(F.open_store(feature_store, feast_config))
    splits = {name: every[name] for name in ("train", "validation")}
    for name, frame in splits.items():
        if frame.empty:
            raise ValueError(f"The feature store at {feature_store} has no {name} rows: run featurize and feast_ingest")
    return splits


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI.

    Raises:
        ValueError: Not an s3:// URI.
    """
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def upload_channels(
    s3: Any, frames: Mapping[str, pd.DataFrame], uris: Mapping[str, str], kms_key_id: str = ""
) -> dict[str, dict[str, Any]]:
    """Write each frame as ``<uri><channel>.parquet``; per channel its object URI, rows and bytes."""
    written: dict[str, dict[str, Any]] = {}
    for channel, frame in frames.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        body = buffer.getvalue()
        bucket, key = split_uri(uris[channel] + f"{channel}.parquet")
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body, "ContentType": "application/x-parquet"}
        if kms_key_id:
            params.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id)
        call(s3, "s3", "PutObject", params)
        written[channel] = {"uri": f"s3://{bucket}/{key}", "rows": len(frame), "bytes": len(body)}
    return written


def download_model(s3: Any, model_data: str, destination: str | Path) -> list[str]:
    """Unpack the job's ``model.tar.gz`` (``model_data``: its S3 URI) into ``destination``; the files' names.

    Raises:
        ValueError: Not an s3:// URI, or an archive member that would land outside ``destination``.
    """
    bucket, key = split_uri(model_data)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as archive:
        body = call(s3, "s3", "GetObject", {"Bucket": bucket, "Key": key})["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            archive.write(chunk)
        archive.seek(0)
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            try:
                tar.extractall(destination, filter="data")
            except tarfile.FilterError as error:
                raise ValueError(f"{model_data}: refusing to unpack {error}") from None
            return sorted(m.name for m in tar.getmembers() if m.isfile())
