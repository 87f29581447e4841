"""Report sections that belong to one defense method (STRIP's entropy histograms, anomaly bars, curves, ...).

A defense's report code lives in ``report/section_<method>.py`` (imported automatically) and registers a
builder here under the defense's registered name:

    @SECTION_BUILDERS.register("strip")
    def strip_section(records, directory) -> Section | None: ...

``records`` are the runner's ``DefenseRecord`` objects of that method (attack, defense label, seed, outcome),
``directory`` is where figures go. Builders return ``None`` when there is nothing to show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from ..registry import Registry
from ..utils.discovery import import_submodules
from .render import Section

SectionBuilder = Callable[[list, Path], Section | None]
SECTION_BUILDERS: Registry[SectionBuilder] = Registry("report section")


def defense_sections(records: Sequence, directory: Path) -> list[Section]:
    """The sections of every defense method that has a registered builder, in first-seen order."""
    import_submodules(__package__, [str(Path(__file__).parent)], prefix="section_")
    by_method: dict[str, list] = defaultdict(list)
    for r in records:
        by_method[r.method].append(r)
    sections = []
    for method, recs in by_method.items():
        if method in SECTION_BUILDERS:
            section = SECTION_BUILDERS.get(method)(recs, directory)
            if section is not None:
                sections.append(section)
    return sections
