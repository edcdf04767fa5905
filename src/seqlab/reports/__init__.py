"""Report writers: report.md (markdown.py) and the self-contained report.html (html.py)."""
