"""Confirmation: the plan, the trial (train one seed, then evaluate it), the run (the Ray Tune experiment),
the results (confirm.json), the comparisons, their significance tests and the Markdown table."""
