"""The research answers drawn from a finished search: the confirmation (plan, run, results, significance) and
the report (data, figures, page)."""
