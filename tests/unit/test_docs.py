"""The README and docs/ are true to the repository: every relative link names a file in it (none points outside,
as `../shared/docs/DESIGN.md` did), and the README's options table names every option of `python -m pipelines run`
(it lacked `--registered-model-name` and `--seed`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines import parameters

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_name_files_in_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "../shared/docs" not in text, f"{page.name} points outside the repository for its docs"
    for target in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} is outside the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"


def test_the_readme_options_table_names_every_run_option(capsys: pytest.CaptureFixture[str]) -> None:
    from components.common import options
    from pipelines.__main__ import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", capsys.readouterr().out))
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `--"))
    missing = []
    for cls, field in parameters.DECLARED_IN.values():
        flags = [flag for flag in options.flags(cls, field) if flag in shown]
        if flags and not any(f"`{flag}`" in table for flag in flags):
            missing.append(flags)
    assert len(shown) > 30 and missing == [], f"README's options table lacks {missing}"
