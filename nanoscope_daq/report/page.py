"""The study report: one self-contained HTML page of tables and the figures beside it (relative links)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Table:
    """A titled table of text cells (the first row is the header)."""

    title: str
    rows: Sequence[Sequence[str]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG beside the page and its caption."""

    path: Path
    caption: str


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}figure{margin:1em 0 2em}
img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:0.9em}.note{color:#555;font-size:0.9em}"""


def write_report(path: Path, title: str, intro: str, tables: Sequence[Table], figures: Sequence[Figure]) -> Path:
    """Write the page at ``path`` (figures linked relative to it); returns ``path``."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    for table in tables:
        header, *body = table.rows
        parts.append(f"<h2>{html.escape(table.title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(str(c))}</th>" for c in header) + "</tr>")
        parts.extend("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
        parts.append("</table>" + (f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""))
    parts.append("<h2>Figures</h2>")
    for figure in figures:
        link = html.escape(figure.path.relative_to(path.parent).as_posix())
        parts.append(f"<figure><img src='{link}' alt='{html.escape(figure.caption)}'>"
                     f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def text_table(table: Table) -> str:
    """The table for a terminal: columns padded to their widest cell."""
    widths = [max(len(str(row[i])) for row in table.rows) for i in range(len(table.rows[0]))]
    lines = [table.title]
    for row in table.rows:
        lines.append("  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                      for i, (c, w) in enumerate(zip(row, widths))))
    if table.note:
        lines.append("  " + table.note)
    return "\n".join(lines)
