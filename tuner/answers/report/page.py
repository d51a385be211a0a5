"""`python -m tuner report NAME`: report.html (self-contained: plotly.js embedded once, no network) and
report.md (the same tables, for a paper or a pull request) for one run.

The tables are built once (`tables_*`) and rendered to both formats; the charts come from
tuner.answers.report.figures; the data from tuner.answers.report.data.
"""
from __future__ import annotations

import datetime
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.answers.report.data import RunReport, collect
from model.atomic_files import atomic_write, check_output_dir
from tuner.runs.run_dir import RunDir

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "svg"}}  # the camera button saves an SVG for a paper


@dataclass
class Table:
    """A titled table; `note` is a line shown under it."""
    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""


def fmt(value: Any) -> str:
    """Numbers short and aligned (4 significant digits), None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


# ---- tables ------------------------------------------------------------------------------------

def table_overview(report: RunReport) -> Table:
    m = report.metric
    rows = []
    for c in report.conditions:
        best = c.best[0] if c.best else None
        rows.append([c.label, c.state, f"{c.trials}/{c.planned}", c.stopped_early, c.epochs_trained,
                     c.cpu_hours, c.gpu_hours, c.best_value,
                     best.record.trial_id if best else None,
                     int(best.record.best.get("training_iteration", 0)) if best else None])
    return Table("Conditions", ["condition", "study", "trials", "stopped early", "epochs trained", "CPU h", "GPU h",
                                f"best {m}", "best trial", "at epoch"], rows,
                 note="CPU/GPU hours: each trial's training time (Ray's time_total_s) times the CPUs/GPUs it "
                      "reserved. Stopped early: ended by the scheduler before the last epoch.")


def table_best_configs_across(report: RunReport) -> Table | None:
    """The best configuration of every condition side by side; rows that differ are marked."""
    conds = [c for c in report.conditions if c.best]
    if not conds:
        return None
    rows = []
    for name in report.searched:
        values = [c.best[0].record.config.get(name) for c in conds]
        differs = len({repr(v) for v in values}) > 1
        rows.append([name, *values, "yes" if differs else ""])
    rows.append([f"best {report.metric}", *[c.best_value for c in conds], ""])
    return Table("Best configuration per condition", ["parameter", *[c.label for c in conds], "differs"], rows,
                 note="differs: the best configurations of the conditions differ in this parameter; "
                      "an empty cell: the parameter is not active in that configuration.")


def table_top(report: RunReport, cond) -> Table:
    rows = []
    for p in cond.best:
        rec = p.record
        rows.append([p.rank, rec.trial_id, rec.best_value(report.metric),
                     int(rec.best.get("training_iteration", 0)), rec.epochs, rec.status.lower(),
                     *[rec.config.get(n) for n in report.searched]])
    return Table(f"Best configurations: {cond.label}", ["rank", "trial", report.metric, "best epoch",
                                                        "epochs", "status", *report.searched], rows)


def table_importance(cond) -> Table:
    rows = [[name, round(value, 3)] for name, value in cond.importances.items()]
    return Table(f"Hyperparameter importance: {cond.label}", ["parameter", "importance"], rows,
                 note="; ".join(cond.notes) or "Optuna's PED-ANOVA evaluator on the finished trials; sums to 1.")


def table_rungs(report: RunReport, cond) -> Table:
    s = report.space.scheduler
    what = (f"ASHA rungs (grace period {s.grace_period}, reduction factor {s.reduction_factor:g})"
            if s.type == "asha" else f"every epoch ({s.type} scheduler)")
    return Table(f"Trials reaching each rung: {cond.label}", ["epoch", "trials that reached it"],
                 [list(r) for r in cond.rungs], note=f"Epochs: {what}, and the last epoch.")


def tables_confirm(report: RunReport) -> list[Table]:
    """The confirmation (python -m tuner confirm; confirm.json's schema is in tuner/answers/confirm/results.py):
    per split the mean test CCC of every configuration over its seeds, then the paired comparisons.
    Cells are formatted as confirm.md formats them."""
    # the confirmation's own cell formats, so that confirm.md and the report read the same
    from tuner.answers.confirm.table import COMPARISON_HEADERS, comparison_row, comparisons_note, seeds_cell, stat_cell
    from tuner.runs.confirm_files import search_cell, summary_metrics

    c = report.confirm
    if not c:
        return []
    metrics = summary_metrics(list(dict.fromkeys(a for conf in c["configurations"] for a in conf["attributes"])))
    best = set(c["best"].values())
    seeds = c["plan"]["seeds"]
    tables = []
    for split in c["test_splits"]:
        rows = [[conf["id"] + (" (best)" if conf["id"] in best else ""), conf["kind"], seeds_cell(conf),
                 stat_cell(conf["summary"]["validation"].get("ccc_mean")),
                 *[stat_cell(conf["summary"]["test"].get(split, {}).get(m)) for m in metrics]]
                for conf in c["configurations"]]
        tables.append(Table(f"Confirmation: test CCC on {split}",
                            ["configuration", "kind", "seeds", "validation ccc_mean", *metrics], rows,
                            note=f"{len(seeds)} seeds per configuration, full epochs, no early stopping; mean over "
                                 f"the finished seeds [{c['confidence']:.0%} Student-t interval; none below 2]. "
                                 f"State: {c['state']}. Selection: {c['selection']}."
                                 + (f" Search: {search_cell(c['plan']['search'])}." if c["plan"].get("search") else "")))
    if c["comparisons"]:
        tables.append(Table("Confirmation: paired comparisons (same seeds)", COMPARISON_HEADERS,
                            [comparison_row(k) for k in c["comparisons"]], note=comparisons_note(c)))
    return tables


# ---- markdown ----------------------------------------------------------------------------------

def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def table_markdown(t: Table) -> str:
    lines = [f"### {t.title}", ""]
    if t.rows:
        lines += ["| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
        lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def header_lines(report: RunReport) -> list[tuple[str, str]]:
    return [("run", f"{report.name} ({report.path})"), ("space", report.space_file), ("store", report.store),
            ("started", report.created), ("command", report.command),
            ("ranked by", f"{report.metric} ({report.mode}; a trial's best epoch)"),
            ("Optuna studies", report.studies_source)]


def render_markdown(report: RunReport) -> str:
    parts = [f"# Search report: {report.name}", ""]
    parts += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in header_lines(report)]
    parts += ["", "## Across conditions", "", table_markdown(table_overview(report))]
    across = table_best_configs_across(report)
    if across:
        parts.append(table_markdown(across))
    confirm = tables_confirm(report)
    if confirm:
        parts += ["## Confirmation", "", *[table_markdown(t) for t in confirm]]
    for cond in report.conditions:
        parts += [f"## Condition {cond.label}", ""]
        if cond.best:
            parts.append(table_markdown(table_top(report, cond)))
        parts.append(table_markdown(table_importance(cond)))
        parts.append(table_markdown(table_rungs(report, cond)))
    return "\n".join(parts)


# ---- html --------------------------------------------------------------------------------------

CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 24px 48px;
       color: #222; line-height: 1.4; }
h1 { margin-top: 24px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
h3 { margin-bottom: 6px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
nav a { margin-right: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; white-space: normal; vertical-align: bottom; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-size: 13px; margin: 4px 0 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.chart { border: 1px solid #eee; min-width: 0; } .wide { grid-column: 1 / -1; }
"""


def table_html(t: Table) -> str:
    out = [f"<h3>{html.escape(t.title)}</h3>"]
    if t.rows:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
        body = "".join(
            "<tr>" + "".join(f'<td class="num">{html.escape(fmt(v))}</td>'
                             if isinstance(v, (int, float)) and not isinstance(v, bool)
                             else f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
            for row in t.rows)
        out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
    if t.note:
        out.append(f'<p class="note">{html.escape(t.note)}</p>')
    return "\n".join(out)


def figure_html(fig, wide: bool = False) -> str:
    import plotly.io as pio

    if fig is None:
        return ""
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG, default_width="100%")
    return f'<div class="chart{" wide" if wide else ""}">{div}</div>'


def _anchor(label: str) -> str:
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in label)


def render_html(report: RunReport) -> str:
    from plotly.offline import get_plotlyjs

    from tuner.answers.report import figures as rf

    e = html.escape
    meta = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in header_lines(report))
    nav = "".join(f'<a href="#{_anchor(c.label)}">{e(c.label)}</a>' for c in report.conditions)
    body = [f"<h1>Search report: {e(report.name)}</h1>", f'<dl class="meta">{meta}</dl>',
            f"<nav><b>Conditions:</b> {nav}</nav>", '<h2 id="across">Across conditions</h2>',
            table_html(table_overview(report)),
            f'<div class="charts">{figure_html(rf.best_per_condition(report))}</div>']
    across = table_best_configs_across(report)
    if across:
        body.append(table_html(across))
    confirm = tables_confirm(report)
    if confirm:
        body += ['<h2 id="confirm">Confirmation</h2>', *[table_html(t) for t in confirm],
                 f'<div class="charts">{"".join(figure_html(f) for f in rf.confirmed(report))}</div>']
    for cond in report.conditions:
        body.append(f'<h2 id="{_anchor(cond.label)}">Condition {e(cond.label)}</h2>')
        body += [f'<p class="note">{e(n)}</p>' for n in cond.notes]
        if cond.best:
            body.append(table_html(table_top(report, cond)))
        charts = [figure_html(rf.history(report, cond)), figure_html(rf.importance(report, cond)),
                  figure_html(rf.curves(report, cond)), figure_html(rf.rungs(report, cond)),
                  figure_html(rf.parallel(report, cond), wide=True), figure_html(rf.slices(report, cond), wide=True)]
        body.append(f'<div class="charts">{"".join(charts)}</div>')
        body.append(table_html(table_importance(cond)))
    generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    body.append(f'<p class="note">Generated {e(generated)} by python -m tuner report.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Search report: {e(report.name)}</title><style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run: RunDir, out: str | Path | None = None) -> tuple[str, str]:
    """Write report.html and report.md into `out` (default: the run folder); returns their locations."""
    if out is not None:
        check_output_dir(out)
    report = collect(run)
    page, text = render_html(report), render_markdown(report)
    if out is None:
        run.write_text(page, "report.html")
        run.write_text(text, "report.md")
        return run.path("report.html"), run.path("report.md")
    out = Path(out)
    for name, content in (("report.html", page), ("report.md", text)):
        atomic_write(out / name, content)
    return str(out / "report.html"), str(out / "report.md")
