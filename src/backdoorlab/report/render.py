"""Write ``report.md`` and a self-contained ``report.html`` (images embedded, no network) for a run."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.files import write_atomic
from .tables import Table

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #dde2ea}
.meta{color:#5b6475;font-size:.92em}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0} th,td{padding:.35em .7em;border:1px solid #dde2ea;
text-align:right} th{background:#f3f5f9} td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfd} img{max-width:100%;border:1px solid #eee}
.callout{background:#f3f7ff;border-left:4px solid #3b6fd6;padding:.6em 1em;margin:1em 0}
"""


@dataclass
class Section:
    """A report section: a title, paragraphs, tables and figures (PNG files next to the report)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _md(title: str, summary: str, sections: Sequence[Section]) -> str:
    out = [f"# {title}", "", summary, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [t.markdown(), ""]
        for f in s.figures:
            out += [f"![{f.stem}]({f.name})", ""]
    return "\n".join(out)


def _embedded(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _html(title: str, summary: str, sections: Sequence[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", f'<div class="callout">{html.escape(summary)}</div>']
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f'<p class="meta">{html.escape(p)}</p>' for p in s.paragraphs]
        body += [t.html() for t in s.tables]
        body += [_embedded(f) for f in s.figures]
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(directory: Path, title: str, summary: str, sections: Sequence[Section]) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``directory``; returns their paths."""
    md, page = directory / "report.md", directory / "report.html"
    write_atomic(md, _md(title, summary, sections))
    write_atomic(page, _html(title, summary, sections))
    return md, page
