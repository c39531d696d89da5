"""The project's container images (images/Dockerfile targets) and the names they go by.

A component names its image by a placeholder (``base_image=COMPONENTS_IMAGE``): the image's short name,
no registry, no tag. `pin` resolves the placeholders when a pipeline is built (compiled, or run locally),
so the compiled YAML names what `make images` built from the same tree with the same environment:

- registry: ``$BERT_KFP_REGISTRY``, else ``localhost/bert-kfp`` (the local names ``make images`` gives
  without a registry; set the variable to the registry you push to);
- tag: ``$BERT_KFP_IMAGE_TAG``, else ``<package version>-<git commit>``, with ``-dirty`` when the files the
  images are built from differ from that commit.

`pin` also sets ``BERT_KFP_<NAME>_IMAGE`` on every step, so a step in its pod knows the project's images
(`resolve` reads them there: the deploy step the serve image, a TrainJob the train image).

``python -m components.common.image`` prints the names (``make images`` tags with them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ENV_REGISTRY = "BERT_KFP_REGISTRY"
ENV_TAG = "BERT_KFP_IMAGE_TAG"
#: Where `make images` puts the images when no registry is given: podman's prefix for local names.
LOCAL_REGISTRY = "localhost/bert-kfp"
#: The images/Dockerfile targets.
NAMES = ("components", "train", "serve")
#: What the images are built from (images/Dockerfile's COPY lines, the build's own files).
BUILD_INPUTS = ("components", "pipelines", "feature_repo", "serving", "pyproject.toml", "README.md", "images")

#: Placeholders for ``@dsl.component(base_image=...)``; `pin` replaces them when the pipeline is built.
COMPONENTS_IMAGE = "components"  # CPU steps: no torch
TRAIN_IMAGE = "train"  # the torch steps (tune, train, evaluate): PyPI's CUDA torch
SERVE_IMAGE = "serve"  # the model server (python -m serving) and the deploy step

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def env_name(name: str) -> str:
    """The variable that carries image ``name``'s full reference into a step's pod."""
    return f"BERT_KFP_{name.upper()}_IMAGE"


def version() -> str:
    """The installed package's version."""
    try:
        return metadata.version("bert-kfp")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0.dev0"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def tag() -> str:
    """``$BERT_KFP_IMAGE_TAG``, else ``<version>-<commit>[-dirty]`` (just the version outside a git checkout).

    Raises:
        ValueError: ``$BERT_KFP_IMAGE_TAG`` is not a valid image tag, or is ``latest``.
    """
    chosen = os.environ.get(ENV_TAG, "").strip()
    if chosen:
        valid = chosen[0].isalnum() and len(chosen) <= 128 and all(c.isalnum() or c in "_.-" for c in chosen)
        if not valid or chosen == "latest":
            raise ValueError(
                f"{ENV_TAG}={chosen!r} is not a pinned image tag: use letters, digits, '_', '.', '-' (at most 128, "
                "not 'latest'), e.g. 0.1.0-3f2a9c1, or unset it to use the package version and git commit."
            )
        return chosen
    commit = _git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return version()
    changed = _git("status", "--porcelain", "--", *BUILD_INPUTS)
    return f"{version()}-{commit}" + ("-dirty" if changed else "")


def registry() -> str:
    """``$BERT_KFP_REGISTRY`` without a trailing slash, else the local prefix.

    Raises:
        ValueError: the variable holds a tag or digest, spaces, or upper-case letters.
    """
    chosen = os.environ.get(ENV_REGISTRY, "").strip().rstrip("/")
    if not chosen:
        return LOCAL_REGISTRY
    _, _, path = chosen.partition("/")  # a port is fine in the host part
    if "@" in chosen or " " in chosen or ":" in path or chosen != chosen.lower():
        raise ValueError(
            f"{ENV_REGISTRY}={chosen!r} is not a registry path: give host[:port]/path in lower case without a tag, "
            "e.g. registry.example.com:5000/ml."
        )
    return chosen


def image(name: str, *, image_registry: str | None = None, image_tag: str | None = None) -> str:
    """The full reference of image ``name`` (one of `NAMES`).

    Raises:
        ValueError: an unknown name, or a bad registry or tag in the environment.
    """
    if name not in NAMES:
        raise ValueError(f"Unknown image {name!r}; the images are {', '.join(NAMES)} (images/Dockerfile targets).")
    return f"{image_registry or registry()}/{name}:{image_tag or tag()}"


def images() -> dict[str, str]:
    """Every image's full reference, resolved once (one registry, one tag)."""
    chosen_registry, chosen_tag = registry(), tag()
    return {name: image(name, image_registry=chosen_registry, image_tag=chosen_tag) for name in NAMES}


def resolve(name: str) -> str:
    """Image ``name``'s reference as the running step sees it: ``$BERT_KFP_<NAME>_IMAGE`` (set by `pin` on every
    step of a compiled pipeline), else resolved here as `image` does."""
    return os.environ.get(env_name(name), "").strip() or image(name)


def pin(candidates: Iterable[Any]) -> dict[str, str]:
    """Point every component among ``candidates`` whose base image is one of ours at its full reference.

    Call it before a pipeline's tasks are created (its tasks copy the component's image). Works again after
    a change of registry or tag: an image already pinned is re-resolved by its name. Each pinned component's
    steps also get ``BERT_KFP_<NAME>_IMAGE`` for every image. Returns the references used.
    """
    resolved = images()
    for candidate in candidates:
        implementation = getattr(getattr(candidate, "component_spec", None), "implementation", None)
        container = getattr(implementation, "container", None)
        if container is None:
            continue
        name = short_name(container.image)
        if name is None:
            continue
        container.image = resolved[name]
        container.env = {**(container.env or {}), **{env_name(n): ref for n, ref in resolved.items()}}
    return resolved


def short_name(reference: str) -> str | None:
    """Which of our images ``reference`` is (a placeholder or a pinned reference of ours), else None."""
    if reference in NAMES:
        return reference
    path, _, _ = reference.rpartition(":")
    head, _, last = path.rpartition("/")
    return last if last in NAMES and head and "/" not in reference.rpartition(":")[2] else None


def main(argv: list[str] | None = None) -> int:
    """Print ``NAME=REFERENCE`` per image (``--name NAME``: that reference alone)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m components.common.image", description=main.__doc__)
    parser.add_argument("--name", choices=NAMES, help="print this image's reference only")
    args = parser.parse_args(argv)
    try:
        if args.name:
            print(image(args.name))
        else:
            for name, reference in images().items():
                print(f"{name}={reference}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
