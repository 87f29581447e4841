"""Reports: tables and plots built from the results rows, rendered as Markdown and self-contained HTML."""
