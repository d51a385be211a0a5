"""What a run's files say about it: trials by state and the best trial so far, per condition."""
from __future__ import annotations

from collections import Counter
from typing import Any

from tuner.runs.confirm_files import progress
from tuner.runs.run_dir import RunDir, space_from_manifest
from tuner.runs.trials import ranked, read_trials, trial_warnings


def summarize(run: RunDir) -> dict[str, Any]:
    """JSON-safe summary: per condition the state, trial counts by status, epochs and the best trial."""
    manifest = run.read_manifest()
    metric, mode = manifest["metrics"][0], manifest["modes"][0]
    trials = read_trials(run, manifest)
    space = space_from_manifest(manifest)
    max_epochs = space.budget.max_epochs
    conditions = []
    for cond in manifest["conditions"]:
        records = trials.get(cond["label"], [])
        order = ranked(records, metric, mode)
        best = order[0] if order else None
        conditions.append({
            "condition": cond["label"], "values": cond["values"], "study": cond["state"],
            "trials": len(records), "planned": space.budget.num_samples,
            "by_state": dict(Counter(r.status for r in records)),
            "stopped_early": sum(1 for r in records if r.status == "TERMINATED" and 0 < r.epochs < max_epochs),
            "epochs_trained": sum(r.epochs for r in records),
            "best": None if best is None else {
                "trial_id": best.trial_id, metric: best.best_value(metric),
                "epoch": int(best.best.get("training_iteration", 0)), "config": best.config},
        })
    return {"name": run.name, "path": run.uri, "space": manifest["space_file"], "store": manifest["store"],
            "metric": metric, "mode": mode, "metrics": manifest["metrics"], "conditions": conditions,
            "confirmation": progress(run),
            "config_errors": [{"condition": label, "trial_id": r.trial_id, "error": r.config_error}
                              for label, records in trials.items() for r in records if r.config_error],
            "warnings": trial_warnings(trials)}


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines of `summarize`'s result."""
    metric = summary["metric"]
    lines = [f"run {summary['name']} at {summary['path']}", f"  space {summary['space']}, store {summary['store']}",
             f"  ranked by {metric} ({summary['mode']})"]
    for c in summary["conditions"]:
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(c["by_state"].items())) or "no trials yet"
        lines.append(f"condition {c['condition']}: study {c['study']}, {c['trials']}/{c['planned']} trials "
                     f"({states}; {c['stopped_early']} stopped early), {c['epochs_trained']} epochs trained")
        b = c["best"]
        if b:
            cfg = ", ".join(f"{k}={_short(v)}" for k, v in b["config"].items())
            lines.append(f"  best: trial {b['trial_id']} {metric}={b[metric]:.4f} at epoch {b['epoch']}")
            lines.append(f"        {cfg}")
    c = summary.get("confirmation")
    if c:
        lines.append(f"confirmation: {c['done']}/{c['planned']} seeds done, {c['running']} running, "
                     f"{c['pending']} pending, {c['error']} failed"
                     + ("; confirm.json written" if c["confirm_json"] else ""))
        for row in c["configurations"]:
            lines.append(f"  {row['id']}: {row['done']}/{row['planned']} seeds done")
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
