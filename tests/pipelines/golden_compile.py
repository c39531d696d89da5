"""The golden compiled pipelines: every profile of pipelines/profiles.yaml compiled for target kfp, and for
target sagemaker when the profile has a ``sagemaker`` section, kept under tests/pipelines/golden/ as
``<target>-<profile>.yaml``.

`tests/pipelines/test_golden.py` compiles them again and shows a unified diff when one differs: a change of a
parameter default, an image, a placement or a component's code must be made on purpose.  ``make golden``
(``python -m tests.pipelines.golden_compile``) writes them anew after such a change; commit them with it.

What would differ between two machines is fixed while compiling, not edited afterwards:

- the images' registry and tag (`components.common.image`: ``$BERT_KFP_REGISTRY``, ``$BERT_KFP_IMAGE_TAG``, else
  the git commit and ``-dirty``) are set to `REGISTRY` and `TAG` (an ECR path, which the sagemaker target needs);
- the compiled bytes hold no timestamp, no absolute path and no temporary directory (measured: compiling twice,
  and from a clone at another path, gave identical files); ``sdkVersion`` is the pinned kfp's.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipelines.compile import compile_pipeline
from pipelines.profiles import DEFAULT_FILE, load_profiles

GOLDEN_DIR = Path(__file__).resolve().with_name("golden")
#: The registry and tag every golden compile names its images with (`components.common.image`).
REGISTRY = "111122223333.dkr.ecr.us-east-1.amazonaws.com/bert-kfp"
TAG = "golden"
UPDATE_COMMAND = "make golden"


def cases(profiles_file: str | Path = DEFAULT_FILE) -> list[tuple[str, str]]:
    """``(target, profile)`` for every profile: kfp always, sagemaker for a profile with a sagemaker section."""
    found = []
    for name, profile in sorted(load_profiles(profiles_file).items()):
        found.append(("kfp", name))
        if profile.sagemaker is not None:
            found.append(("sagemaker", name))
    return found


def golden_path(target: str, profile: str) -> Path:
    return GOLDEN_DIR / f"{target}-{profile}.yaml"


@contextlib.contextmanager
def _pinned_images() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in ("BERT_KFP_REGISTRY", "BERT_KFP_IMAGE_TAG")}
    os.environ.update({"BERT_KFP_REGISTRY": REGISTRY, "BERT_KFP_IMAGE_TAG": TAG})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def compiled(target: str, profile: str, profiles_file: str | Path = DEFAULT_FILE) -> str:
    """The compiled YAML of ``profile`` for ``target``, with the golden registry and tag."""
    with tempfile.TemporaryDirectory() as tmp, _pinned_images():
        output = Path(tmp) / "pipeline.yaml"
        return compile_pipeline(output, target=target, profile=profile, profiles_file=profiles_file).read_text()


def diff(expected: str, actual: str, name: str) -> str:
    """A unified diff from the golden file's text to the compiled text ('' when they are equal)."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"golden/{name}",
            tofile=f"compiled {name}",
            n=3,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Write every golden file anew and remove the ones no profile has any more; print what changed."""
    del argv
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    wanted = {golden_path(target, profile): (target, profile) for target, profile in cases()}
    for path, (target, profile) in wanted.items():
        text = compiled(target, profile)
        old = path.read_text() if path.is_file() else None
        if old != text:
            path.write_text(text)
        print(f"{'unchanged' if old == text else 'written  '} {os.path.relpath(path)}")
    for stale in sorted(set(GOLDEN_DIR.glob("*.yaml")) - set(wanted)):
        stale.unlink()
        print(f"removed   {os.path.relpath(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
