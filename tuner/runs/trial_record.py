"""A restarted trial's record made to match the checkpoint it continues from (the resume contract,
docs/search.md "What a resume owes each epoch").

Ray restarts an unfinished trial (a resumed run, or a retry after a failure) from the latest checkpoint
its experiment state names, at epoch k. Every checkpoint of a trial holds the reports of its epochs
1..k (`REPORTED`, written by tuner.search.trainable). On the trial's start the driver's loggers make its record hold epochs
1..k exactly once: the result rows keep each epoch's first stored row and get one made from the
checkpoint's report where the storage has none (the driver died while uploading them), and rows after k
(recorded after the snapshot by a driver that died, or never: a worker's epoch after its driver died
has no row) are dropped, since the trial trains those epochs again. A trial Ray restarts only for the
trainable to end it at once (its Optuna study finished it after Ray's last snapshot: tuner.search.experiment
`kept_finished`) trains nothing again: its record stays as the storage holds it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

REPORTED = "reported.json"   # in each trial checkpoint: the metrics reported for epochs 1..k, in order
_KEPT: set[str] = set()   # trial ids whose record stays as stored (this driver process; all conditions)


def read_reported(directory: str | Path) -> list[dict[str, Any]] | None:
    """The reports a trial checkpoint holds (None for a checkpoint written before they were kept)."""
    path = Path(directory) / REPORTED
    return json.loads(path.read_text()) if path.exists() else None


def keep_as_recorded(trial_ids: frozenset[str]) -> None:
    """The trials the trainable ends at once (already finished in the study): their records are not rebuilt."""
    _KEPT.update(trial_ids)


def checkpoint_reports(trial: "Trial") -> list[dict[str, Any]] | None:
    """The reports of epochs 1..k in the checkpoint Ray restarts `trial` from (None: no checkpoint, one written
    before checkpoints kept their reports, or a trial kept as recorded)."""
    checkpoint = trial.checkpoint
    if checkpoint is None or trial.trial_id in _KEPT:
        return None
    try:
        with checkpoint.filesystem.open_input_stream(Path(checkpoint.path, REPORTED).as_posix()) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a local result.json ([] when missing; a line cut short by a crash ends them)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def restored_rows(stored: list[dict[str, Any]], reports: list[dict[str, Any]], trial_id: str,
                  config: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of epochs (training iterations) 1..len(reports): each one's first stored row, else a row made from
    the checkpoint's report of it; stored rows after the last report are left out."""
    first: dict[Any, dict[str, Any]] = {}
    for row in stored:
        first.setdefault(row.get("training_iteration"), row)
    return [first.get(i) or {**report, "training_iteration": i, "trial_id": trial_id, "config": config}
            for i, report in enumerate(reports, start=1)]
