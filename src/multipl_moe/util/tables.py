"""The one Markdown-table writer: reports, comparisons and benchmark summaries all go through it."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def _cell(value: Any) -> str:
    # A bare "|" inside a cell would start a new column and shift the rest of the row.
    return str(value).replace("|", "\\|")


def markdown_table(head: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table. A row shorter than `head` ends in empty cells (a note such as
    "unavailable: ..." that stands for the rest of the row)."""
    lines = ["| " + " | ".join(map(_cell, head)) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = list(map(_cell, row))
        if len(cells) > len(head):
            raise ValueError(f"a row has {len(cells)} cells for {len(head)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |" + " |" * (len(head) - len(cells)))
    return "\n".join(lines)
