"""Read the trials of a run from its files, without Ray and without unpickling anything.

Ray keeps each experiment's trial table in `experiment_state-*.json` (status, config, folder) and
every reported result in `<trial folder>/result.json` (one JSON object per line); checkpoints
are `<trial folder>/checkpoint_NNNNNN/`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from model.errors import UserError
from model.metrics import beats
from tuner.runs.config_errors import CONFIG_ERROR
from tuner.runs.run_dir import RunDir


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
    problems: list[str] = field(default_factory=list)   # why some of its results could not be read
    config_error: str | None = None   # the configuration error it ended on (tuner.runs.config_errors); status ERROR

    @property
    def epochs(self) -> int:
        return len(self.results)

    def best_value(self, metric: str) -> float | None:
        return None if self.best is None else self.best.get(metric)


def _newest_state_file(run: RunDir, label: str) -> str | None:
    names = [n for n in run.listdir(label) if n.startswith("experiment_state-") and n.endswith(".json")]
    return max(names) if names else None


def trial_results(run: RunDir, label: str, folder: str, metric: str | None = None,
                  problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Every readable result row of one trial folder, in order.

    A line that is not a JSON object (cut short by a killed driver, or corrupt), or whose `metric`
    is not a number, is skipped and described in `problems` when given.
    """
    problems = [] if problems is None else problems
    if not run.exists(label, folder, "result.json"):
        return []
    try:
        text = run.read_text(label, folder, "result.json")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"result.json cannot be read ({exc.__class__.__name__}); its results are left out")
        return []
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"result.json line {number} is not valid JSON (cut short or corrupt); skipped")
            continue
        value = row.get(metric) if isinstance(row, dict) and metric else None
        if not isinstance(row, dict) or (value is not None and (isinstance(value, bool)
                                                                 or not isinstance(value, (int, float)))):
            problems.append(f"result.json line {number} is not a result row with a numeric {metric}; skipped")
            continue
        rows.append(row)
    return rows


def _state_error(run: RunDir, label: str, name: str, problem: str) -> UserError:
    return UserError(f"{run.child_uri(label, name)}: damaged Ray experiment state ({problem}); "
                     "`status` and `export` cannot list this condition's trials")


def _trial_data(run: RunDir, label: str) -> list[tuple[list, dict[str, Any]]]:
    """The `trial_data` of a condition's newest experiment state (the one Ray restores from; [] before Ray's
    first snapshot): per trial, its entry (its JSON and its run metadata's) and its parsed JSON (trial_id,
    status, config, relative_logdir). A damaged state is a UserError naming the file."""
    state_file = _newest_state_file(run, label)
    if state_file is None:
        return []
    try:
        entries = json.loads(run.read_text(label, state_file)).get("trial_data", [])
        trials = [json.loads(entry[0]) for entry in entries]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _state_error(run, label, state_file, f"not valid JSON: {exc}") from None
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        raise _state_error(run, label, state_file, f"no trial table ({exc.__class__.__name__}: {exc})") from None
    for data in trials:
        if not isinstance(data, dict) or not isinstance(data.get("trial_id"), str):
            raise _state_error(run, label, state_file, f"a trial entry without trial_id: {str(data)[:80]}")
    return list(zip(entries, trials))


def trial_ids(run: RunDir, label: str) -> list[str]:
    """The trial ids of a condition's newest experiment state, the trials Ray restores ([] before its first)."""
    return [data["trial_id"] for _, data in _trial_data(run, label)]


def read_condition(run: RunDir, label: str, metric: str, mode: str) -> list[TrialRecord]:
    """The trials of one condition's experiment, in creation order ([] before it started).

    A damaged experiment state is a UserError; a trial's unreadable results are its `problems`.
    """
    records = []
    for entry, data in _trial_data(run, label):
        folder = str(data.get("relative_logdir") or "")
        config = data.get("config") or {}
        rec = TrialRecord(condition=label, trial_id=data["trial_id"], status=str(data.get("status", "PENDING")),
                          config=dict(config) if isinstance(config, dict) else {}, folder=folder)
        try:
            rec.snapshot_result = dict(json.loads(entry[1]).get("last_result") or {})
        except (IndexError, TypeError, ValueError, AttributeError):
            pass
        if folder:
            rec.results = trial_results(run, label, folder, metric, rec.problems)
            names = run.listdir(label, folder)
            rec.checkpoints = [n for n in names if n.startswith("checkpoint_")]
            if CONFIG_ERROR in names:   # Ray ended it as TERMINATED: it returned without a result
                rec.config_error, rec.status = run.read_text(label, folder, CONFIG_ERROR).strip(), "ERROR"
        for row in rec.results:
            if beats(row.get(metric), rec.best_value(metric), mode):
                rec.best = row
        records.append(rec)
    return records


def read_trials(run: RunDir, manifest: dict[str, Any]) -> dict[str, list[TrialRecord]]:
    """condition label -> its trials, for every condition of the run."""
    metric, mode = manifest["metrics"][0], manifest["modes"][0]
    return {c["label"]: read_condition(run, c["label"], metric, mode) for c in manifest["conditions"]}


def trial_warnings(trials: dict[str, list[TrialRecord]]) -> list[str]:
    """One line per trial whose results could not all be read, and per trial that failed on a configuration
    error, naming the condition and trial."""
    lines = []
    for label, records in trials.items():
        for r in records:
            problems = r.problems + ([f"failed on a configuration error (not retried): {r.config_error}"]
                                     if r.config_error else [])
            lines += [f"trial {r.trial_id} (condition {label}, {r.folder}): {problem}" for problem in problems]
    return lines


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
    """The trial's newest checkpoint folder: it holds the trial's best model (best_model.pt), and Ray keeps it."""
    return rec.checkpoints[-1] if rec.checkpoints else None
