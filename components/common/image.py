"""The container images the components run in; their tag comes from the package version only."""

from __future__ import annotations

from importlib import metadata

REGISTRY = "ghcr.io/bert-kfp"


def _version() -> str:
    try:
        return metadata.version("bert-kfp")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0.dev0"


VERSION = _version()
COMPONENTS_IMAGE = f"{REGISTRY}/components:{VERSION}"
TRAIN_IMAGE = f"{REGISTRY}/train:{VERSION}"
SERVE_IMAGE = f"{REGISTRY}/serve:{VERSION}"
