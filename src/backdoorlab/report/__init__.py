"""Reports: tables and plots built from the results rows, rendered as Markdown and self-contained HTML.

:func:`write_run_report` writes the report of a stored run (``backdoorlab run`` calls it after the run,
``backdoorlab report RUN`` alone); it reads the results store only: no dataset is loaded, no model built.
"""

from .build import write_run_report

__all__ = ["write_run_report"]
