"""The steps' Markdown summaries (KFP `Markdown` outputs): what the KFP dashboard shows of a step at a glance.

Every step writes one the same way: a heading, a line or two on what happened, its headline figures as a table,
and optionally a small table of its own (the bias check's facet values)::

    report_md.write(path, "Prepare data", figures={"rows out": 240}, notes=["Balanced to 80 rows per class."])

Strings from the data (facet values, model names, reasons) are escaped, so a ``|`` or ``*`` in them cannot break
the table or the emphasis; numbers are written with four significant digits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Characters that start or end markup anywhere in a line (emphasis, code, links, HTML, table cells).  Those that
#: mean something only at a line's start (``#``, ``+``, ``-``, ``1.``) are left: a note is a sentence the steps
#: write, with the data's strings inside it, and a table cell never starts a line.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def escape(text: object) -> str:
    """``text`` as Markdown shows it literally (on one line)."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def figure(value: Any) -> str:
    """A number as a table shows it: integers whole, other floats with four significant digits; else escaped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return "—" if value is None else escape(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(figure(cell) for cell in row) + " |" for row in rows]
    return lines


def render(
    title: str,
    figures: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
    notes: Sequence[str] = (),
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None,
) -> str:
    """The summary's Markdown.

    Args:
        title: The heading (the step's name as the dashboard shows it).
        figures: (name, value) of the headline figures, in order: a two-column table.
        notes: Sentences under the heading (escaped; one paragraph each).
        table: (header, rows) of one more table, under the figures.
    """
    items = list(figures.items()) if isinstance(figures, Mapping) else list(figures)
    lines = [f"## {escape(title)}", ""]
    for note in notes:
        lines += [escape(note), ""]
    if items:
        lines += [*_table(("figure", "value"), items), ""]
    if table is not None and table[1]:
        lines += [*_table(*table), ""]
    return "\n".join(lines)


def write(
    path: str | Path,
    title: str,
    figures: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
    notes: Sequence[str] = (),
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None,
) -> None:
    """Write `render`'s Markdown to ``path`` (a KFP `Markdown` output's path), making its directory."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render(title, figures, notes, table), encoding="utf-8")
