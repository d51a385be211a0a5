"""The report of a run: its data (tables from the run's files), its figures (plotly) and its page
(report.html and report.md)."""
