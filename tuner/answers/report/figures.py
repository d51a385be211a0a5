"""The report's charts as plotly figures: Optuna's own plots of each condition's study (history,
parallel coordinates, slices) plus importances, validation curves, rungs and the across-conditions
comparison drawn from the run's records. Each function returns a figure, or None when there is
nothing to draw."""
from __future__ import annotations

from typing import Any

from tuner.answers.report.data import TOP_CURVES, ConditionReport, RunReport
from tuner.runs.trials import ranked

FONT = dict(family="Helvetica, Arial, sans-serif", size=13)
HEIGHT = 380
SLICE_COLUMNS = 4
# Optuna's Blues without its near-white end, so the first trials' points stay visible on a white page
COLORSCALE = [[0.0, "#9ecae1"], [0.5, "#3182bd"], [1.0, "#08306b"]]


def _style(fig, title: str, height: int = HEIGHT, **layout: Any):
    """One look for every chart: white template, readable fonts, a title that names the condition."""
    layout.setdefault("margin", dict(l=80, r=30, t=60, b=60))
    fig.update_yaxes(automargin=True)  # long tick labels push the axis title inwards, never off the edge
    fig.update_layout(template="plotly_white", font=FONT, height=height, title=dict(text=title, x=0.0, font_size=15),
                      **layout)
    return fig


def _target(report: RunReport):
    """Optuna's target for a multi-objective study: the first (ranking) metric."""
    return (lambda t: t.values[0]) if report.space.multi_objective else None


def _finished(rep: ConditionReport) -> int:
    import optuna

    if rep.study is None:
        return 0
    return sum(1 for t in rep.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)


def history(report: RunReport, rep: ConditionReport):
    """Each trial's value in the order Optuna saw them, and the best so far (Optuna's plot)."""
    import optuna.visualization as ov

    if _finished(rep) == 0:
        return None
    fig = ov.plot_optimization_history(rep.study, target=_target(report), target_name=report.metric)
    fig.update_xaxes(title_text="trial (in the order started)")
    fig.update_yaxes(title_text=f"{report.metric} (best epoch)")
    return _style(fig, f"Optimisation history: {rep.label}", legend=dict(orientation="h", y=-0.2))


def parallel(report: RunReport, rep: ConditionReport):
    """Parallel coordinates of the searched parameters, coloured by the value (Optuna's plot)."""
    import optuna.visualization as ov

    if _finished(rep) < 2 or not rep.study.best_trials[0].params:
        return None
    fig = ov.plot_parallel_coordinate(rep.study, target=_target(report), target_name=report.metric)
    return _style(fig, f"Parallel coordinates: {rep.label}", height=420, margin=dict(l=80, r=80, t=70, b=40))


def slices(report: RunReport, rep: ConditionReport):
    """The value against each searched parameter, one panel per parameter (Optuna's plot)."""
    import optuna.visualization as ov

    if _finished(rep) == 0 or not rep.study.best_trials[0].params:
        return None
    fig = ov.plot_slice(rep.study, target=_target(report), target_name=report.metric)
    trials = len(rep.study.trials)
    fig.update_traces(marker_colorscale=COLORSCALE, marker_colorbar_dtick=max(1, -(-trials // 10)),
                      selector=lambda t: t.marker.showscale)  # whole trial numbers on the colour bar
    fig.update_traces(marker_colorscale=COLORSCALE)
    panels = len({t.xaxis for t in fig.data})
    rows = _grid(fig, panels, SLICE_COLUMNS, report.metric)
    # Optuna gives each panel 300 px in one row; a grid of SLICE_COLUMNS panels fits the page instead
    return _style(fig, f"Slices: {rep.label} (colour: trial number)", height=90 + 260 * rows, width=None)


def _grid(fig, panels: int, cols: int, y_title: str) -> int:
    """Lay out a one-row subplot figure (axes x, x2, ...) as rows of `cols` panels; returns the rows."""
    rows = -(-panels // cols)
    cols = min(cols, panels)
    gap_x, gap_y = 0.04, 75 / (260 * rows)  # room for each row's tick labels and axis title
    for i in range(panels):
        r, c = divmod(i, cols)
        suffix = str(i + 1) if i else ""
        fig.layout[f"xaxis{suffix}"].domain = [c / cols + (gap_x if c else 0), (c + 1) / cols - gap_x / 2]
        fig.layout[f"yaxis{suffix}"].domain = [1 - (r + 1) / rows + gap_y, 1 - r / rows]
        fig.layout[f"yaxis{suffix}"].showticklabels = c == 0
        fig.layout[f"yaxis{suffix}"].title.text = y_title if c == 0 else ""
    return rows


def importance(report: RunReport, rep: ConditionReport):
    """Hyperparameter importances (PED-ANOVA), largest at the top."""
    import plotly.graph_objects as go

    if not rep.importances:
        return None
    names = list(rep.importances)[::-1]
    values = [rep.importances[n] for n in names]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", text=[f"{v:.2f}" for v in values],
                           textposition="outside", marker_color="#3366cc", cliponaxis=False))
    fig.update_xaxes(title_text="importance (PED-ANOVA, sums to 1)", range=[0, max(values) * 1.2 or 1])
    return _style(fig, f"Hyperparameter importance: {rep.label}", height=max(220, 60 + 36 * len(names)))


def curves(report: RunReport, rep: ConditionReport):
    """The metric per epoch: the best trials in colour, every other trial in grey."""
    import plotly.graph_objects as go

    metric = report.metric
    top = ranked(rep.records, metric, report.mode)[:TOP_CURVES]
    top_ids = {r.trial_id for r in top}
    fig = go.Figure()
    for rec in rep.records:
        if rec.trial_id in top_ids or not rec.results:
            continue
        fig.add_trace(go.Scatter(x=[r.get("training_iteration") for r in rec.results],
                                 y=[r.get(metric) for r in rec.results], mode="lines+markers",
                                 line=dict(color="#c8c8c8", width=1), marker=dict(size=4),
                                 name=f"trial {rec.trial_id}", showlegend=False))
    for rank, rec in enumerate(top, start=1):
        fig.add_trace(go.Scatter(x=[r.get("training_iteration") for r in rec.results],
                                 y=[r.get(metric) for r in rec.results], mode="lines+markers",
                                 name=f"#{rank} {rec.trial_id}", line=dict(width=2.5)))
    if not fig.data:
        return None
    fig.update_xaxes(title_text="epoch", dtick=1, range=[0.8, report.space.budget.max_epochs + 0.2])
    fig.update_yaxes(title_text=metric)
    return _style(fig, f"Validation curves, top {len(top)} in colour: {rep.label}",
                  legend=dict(title_text="rank, trial"))


def rungs(report: RunReport, rep: ConditionReport):
    """How many trials reached each epoch at which the scheduler compares them."""
    import plotly.graph_objects as go

    if not rep.trials:
        return None
    epochs = [str(e) for e, _ in rep.rungs]
    counts = [n for _, n in rep.rungs]
    fig = go.Figure(go.Bar(x=epochs, y=counts, text=counts, textposition="outside", marker_color="#109618",
                           cliponaxis=False))
    fig.update_xaxes(title_text="epoch (scheduler rung)", type="category")
    fig.update_yaxes(title_text="trials that reached it", range=[0, max(counts) * 1.2 or 1])
    return _style(fig, f"Trials reaching each rung: {rep.label}", height=300)


def best_per_condition(report: RunReport):
    """The best value of every condition: a line over the condition's value when there is one numeric
    condition (e.g. the labelled ratio), bars otherwise."""
    import plotly.graph_objects as go

    points = [(rep, rep.best_value) for rep in report.conditions if rep.best_value is not None]
    if not points:
        return None
    keys = report.condition_keys
    numeric = len(keys) == 1 and all(isinstance(rep.values.get(keys[0]), (int, float)) for rep, _ in points)
    hover = [f"{rep.label}<br>trial {rep.best[0].record.trial_id}" for rep, _ in points]
    if numeric:
        points.sort(key=lambda p: p[0].values[keys[0]])
        fig = go.Figure(go.Scatter(x=[rep.values[keys[0]] for rep, _ in points], y=[v for _, v in points],
                                   mode="lines+markers+text", text=[f"{v:.3g}" for _, v in points],
                                   textposition="top center", hovertext=hover, marker=dict(size=9)))
        fig.update_xaxes(title_text=keys[0])
    else:
        fig = go.Figure(go.Bar(x=[rep.label for rep, _ in points], y=[v for _, v in points],
                               text=[f"{v:.3g}" for _, v in points], textposition="outside", hovertext=hover))
        fig.update_xaxes(title_text="condition", type="category")
    fig.update_yaxes(title_text=f"best {report.metric}")
    return _style(fig, f"Best {report.metric} per condition")


def confirmed(report: RunReport) -> list:
    """Per test split, every confirmed configuration's mean test ccc_mean with its 95% interval over seeds."""
    import plotly.graph_objects as go

    c = report.confirm
    if not c:
        return []
    best = set(c["best"].values())
    figures = []
    for split in c["test_splits"]:
        points = [(conf["id"], conf["summary"]["test"].get(split, {}).get("ccc_mean")) for conf in c["configurations"]]
        points = [(name, s) for name, s in points if s and s.get("mean") is not None][::-1]  # first at the top
        if not points:
            continue
        ci = [s.get("ci95") or [s["mean"], s["mean"]] for _, s in points]
        fig = go.Figure(go.Scatter(
            x=[s["mean"] for _, s in points], y=[name for name, _ in points], mode="markers",
            marker=dict(size=10, color=["#d62728" if name in best else "#3366cc" for name, _ in points]),
            error_x=dict(type="data", symmetric=False, array=[hi - s["mean"] for (_, s), (_, hi) in zip(points, ci)],
                         arrayminus=[s["mean"] - lo for (_, s), (lo, _) in zip(points, ci)], thickness=1.5)))
        fig.update_xaxes(title_text=f"test ccc_mean on {split} (mean over seeds, {c['confidence']:.0%} interval)")
        fig.update_yaxes(type="category", automargin=True)
        figures.append(_style(fig, f"Confirmation on {split} (red: the best of a condition)",
                              height=max(260, 120 + 40 * len(points))))
    return figures
