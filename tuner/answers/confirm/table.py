"""The confirmation as Markdown: confirm.md (`format_table`) and the cells the report's confirmation tables
share with it.
"""
from __future__ import annotations

from typing import Any

from tuner.runs.confirm_files import UNFINISHED, search_cell, summary_metrics


def stat_cell(stat: dict[str, Any] | None) -> str:
    """A mean and its 95% interval as a table cell (confirm.md and the report)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("ci95") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]"


def p_cell(test: dict[str, Any] | None) -> str:
    """A test's p and Holm-adjusted p as a table cell, * when significant (the method-level test only)."""
    if test is None or test.get("p") is None:
        return "n/a"
    mark = " *" if test.get("significant") else ""
    return f"{test['p']:.3g} / {test['p_holm']:.3g}{mark}"


def ci_cell(test: dict[str, Any] | None) -> str:
    """A difference's 95% interval as a table cell."""
    return "-" if test is None or test.get("ci95") is None else f"[{test['ci95'][0]:+.3f}, {test['ci95'][1]:+.3f}]"


def seeds_cell(conf: dict[str, Any]) -> str:
    """Finished seeds of planned, and how many failed."""
    summary = conf["summary"]
    failed = f" ({summary['seeds_failed']} failed)" if summary["seeds_failed"] else ""
    return f"{summary['seeds_done']}/{len(conf['seeds'])}{failed}"


COMPARISON_HEADERS = ["A", "B", "split", "metric", "seeds", "A - B", "95% CI (method)", "p (method)",
                      "p (t over seeds)", "95% CI (utterances)", "p (utterances)", "note"]


def comparison_row(c: dict[str, Any]) -> list[str]:
    """One comparison's cells, in COMPARISON_HEADERS' order."""
    return [c["a"], c["b"], c["split"], c["metric"], str(len(c["seeds"])),
            "-" if c["diff"] is None else f"{c['diff']:+.3f}", ci_cell(c["method"]), p_cell(c["method"]),
            p_cell(c["paired_t"]), ci_cell(c["bootstrap"]), p_cell(c["bootstrap"]), c["note"] or ""]


def comparisons_note(confirm: dict[str, Any]) -> str:
    """How to read the comparisons' table."""
    t = confirm["tests"]
    return (f"A - B: the difference of mean test CCC over the seeds both finished (seeds). p is shown as raw / "
            f"{t['correction']}; * = significant at {confirm['alpha']} after the correction, given to the "
            f"method-level test only: {t['method']} ({t['resamples']} resamples, seed {t['bootstrap_seed']}). "
            f"p (t over seeds): {t['paired_t']}, which leaves out the test speakers' variation. p (utterances): "
            f"{t['bootstrap']}: a statement about these trained models, not about the method. n/a: no test "
            "(see the note).")


def failed_seed_items(confirm: dict[str, Any]) -> list[str]:
    """A Markdown list item per configuration and cause of its failed seeds (what confirm.md says of them)."""
    items = []
    for c in confirm["configurations"]:
        causes: dict[str, list[int]] = {}
        for seed in c["seeds"]:
            if seed["status"] in UNFINISHED:
                causes.setdefault(_failure(seed), []).append(seed["seed"])
        items += [f"- {c['id']}: seed(s) {', '.join(map(str, seeds))}: {cause}" for cause, seeds in causes.items()]
    return items


def _failure(seed: dict[str, Any]) -> str:
    """Why a seed failed."""
    if seed.get("config_error"):
        return f"{seed['error']} (a configuration error: not retried; fix or leave out the configuration)"
    if seed["status"] == "error":
        return "its training failed (error.txt in its trial folder); `confirm` again retries it"
    return seed.get("error") or "no model"


def format_table(confirm: dict[str, Any]) -> str:
    """Markdown: per configuration and metric the mean test CCC and its 95% interval; the comparisons."""
    seeds = confirm["plan"]["seeds"]
    lines = [f"# Confirmation of run {confirm['run']}", "",
             f"{len(seeds)} seeds per configuration ({', '.join(map(str, seeds))}), full epochs, no early "
             f"stopping; mean over the finished seeds with its {confirm['confidence']:.0%} Student-t interval "
             f"[low, high] (none below 2 finished seeds). State: {confirm['state']}.", ""]
    metrics = summary_metrics(list(dict.fromkeys(a for c in confirm["configurations"] for a in c["attributes"])))
    best_ids = set(confirm["best"].values())
    for split in confirm["test_splits"]:
        lines += [f"## Test CCC on {split}", "",
                  "| configuration | seeds | validation ccc_mean | " + " | ".join(metrics) + " |",
                  "|---" * (len(metrics) + 3) + "|"]
        for c in confirm["configurations"]:
            name = c["id"] + (" (best)" if c["id"] in best_ids else "")
            test = c["summary"]["test"].get(split, {})
            lines.append(f"| {name} | {seeds_cell(c)} | {stat_cell(c['summary']['validation'].get('ccc_mean'))} | "
                         + " | ".join(stat_cell(test.get(m)) for m in metrics) + " |")
        lines.append("")
    if confirm["comparisons"]:
        lines += ["## Paired comparisons (same seeds)", "", comparisons_note(confirm), "",
                  "| " + " | ".join(COMPARISON_HEADERS) + " |", "|---" * len(COMPARISON_HEADERS) + "|"]
        lines += ["| " + " | ".join(comparison_row(c)) + " |" for c in confirm["comparisons"]]
        lines.append("")
    failed = failed_seed_items(confirm)
    if failed:
        lines += ["## Failed seeds", "", *failed, ""]
    lines.append(f"Selection: {confirm['selection']}.")
    if confirm["plan"].get("search"):
        lines += ["", f"Search: {search_cell(confirm['plan']['search'])}."]
    return "\n".join(lines) + "\n"
