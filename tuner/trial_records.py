"""Read the trials of a run from its files, without Ray and without unpickling anything.

Ray keeps each experiment's trial table in `experiment_state-*.json` (status, config, folder) and
every reported result in `<trial folder>/result.json` (one JSON object per line); checkpoints
are `<trial folder>/checkpoint_NNNNNN/`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from tuner.run_dir import RunDir


@dataclass
class TrialRecord:
    """One trial as its files describe it; `best` is its best reported row by the run's metric."""
    condition: str
    trial_id: str
    status: str
    config: dict[str, Any]
    folder: str
    results: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None
    snapshot_result: dict[str, Any] = field(default_factory=dict)   # Ray's last_result in the experiment state

    @property
    def epochs(self) -> int:
        return len(self.results)

    def best_value(self, metric: str) -> float | None:
        return None if self.best is None else self.best.get(metric)


def _newest_state_file(run: RunDir, label: str) -> str | None:
    names = [n for n in run.listdir(label) if n.startswith("experiment_state-") and n.endswith(".json")]
    return max(names) if names else None


def trial_results(run: RunDir, label: str, folder: str) -> list[dict[str, Any]]:
    """Every result row of one trial folder, in order (a line cut short at the end is dropped)."""
    if not run.exists(label, folder, "result.json"):
        return []
    rows = []
    for line in run.read_text(label, folder, "result.json").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a killed driver: keep what came before
    return rows


def better(a: float | None, b: float | None, mode: str) -> bool:
    """True when `a` beats `b` (None or NaN always loses)."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a > b if mode == "max" else a < b


def _trial_data(run: RunDir, label: str) -> list[list[str]]:
    """The `trial_data` of a condition's newest experiment state (the one Ray restores from; [] before Ray's
    first snapshot): per trial, its JSON (trial_id, status, config, relative_logdir) and its run metadata's."""
    state_file = _newest_state_file(run, label)
    if state_file is None:
        return []
    return json.loads(run.read_text(label, state_file)).get("trial_data", [])


def trial_ids(run: RunDir, label: str) -> list[str]:
    """The trial ids of a condition's newest experiment state, the trials Ray restores ([] before its first)."""
    return [json.loads(entry[0])["trial_id"] for entry in _trial_data(run, label)]


def read_condition(run: RunDir, label: str, metric: str, mode: str) -> list[TrialRecord]:
    """The trials of one condition's experiment, in creation order ([] before it started)."""
    records = []
    for entry in _trial_data(run, label):
        data = json.loads(entry[0])
        folder = data.get("relative_logdir") or ""
        rec = TrialRecord(condition=label, trial_id=data["trial_id"], status=data.get("status", "PENDING"),
                          config=dict(data.get("config") or {}), folder=folder)
        try:
            rec.snapshot_result = dict(json.loads(entry[1]).get("last_result") or {})
        except (IndexError, TypeError, ValueError, AttributeError):
            pass
        if folder:
            rec.results = trial_results(run, label, folder)
            rec.checkpoints = [n for n in run.listdir(label, folder) if n.startswith("checkpoint_")]
        for row in rec.results:
            if better(row.get(metric), rec.best_value(metric), mode):
                rec.best = row
        records.append(rec)
    return records


def read_trials(run: RunDir, manifest: dict[str, Any]) -> dict[str, list[TrialRecord]]:
    """condition label -> its trials, for every condition of the run."""
    metric, mode = manifest["metrics"][0], manifest["modes"][0]
    return {c["label"]: read_condition(run, c["label"], metric, mode) for c in manifest["conditions"]}


def ranked(records: list[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Trials with a result, best first."""
    scored = [r for r in records if r.best_value(metric) is not None]
    return sorted(scored, key=lambda r: r.best_value(metric), reverse=(mode == "max"))


def pareto_front(records: list[TrialRecord], metrics: list[str], modes: list[str]) -> list[TrialRecord]:
    """Trials that no other trial beats on every metric (multi-objective searches)."""
    def values(r: TrialRecord) -> list[float] | None:
        """The last row's metrics, each negated when minimised (None when one is missing)."""
        last = r.results[-1] if r.results else {}
        raw = [last.get(m) for m in metrics]
        return None if None in raw else [v if mode == "max" else -v for v, mode in zip(raw, modes)]

    scored = [(r, v) for r in records if (v := values(r)) is not None]
    front = []
    for r, v in scored:
        dominated = any(all(o >= s for o, s in zip(w, v)) and any(o > s for o, s in zip(w, v))
                        for q, w in scored if q is not r)
        if not dominated:
            front.append(r)
    return front


def checkpoint_for(rec: TrialRecord) -> str | None:
    """The checkpoint folder of the trial's best epoch if kept, else its latest one."""
    if rec.best and rec.best.get("checkpoint_dir_name") in rec.checkpoints:
        return rec.best["checkpoint_dir_name"]
    return rec.checkpoints[-1] if rec.checkpoints else None
