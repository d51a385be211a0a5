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
`kept_finished`) trains nothing again: its record is made to hold the epochs of its newest checkpoint,
which are the epochs its study holds (its worker uploaded each epoch's checkpoint before reporting the
epoch, and after the report that ended it there was none), e.g. the epoch ASHA stopped it at, whose row
the killed driver had not uploaded.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyarrow.fs import FileSelector, FileType, LocalFileSystem

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem
    from ray.tune.experiment import Trial

REPORTED = "reported.json"   # in each trial checkpoint: the metrics reported for epochs 1..k, in order
_KEPT: set[str] = set()   # trial ids of trials ended at once, as finished (this driver process; all conditions)


def read_reported(checkpoint: str | Path, fs: "FileSystem | None" = None) -> list[dict[str, Any]] | None:
    """The reports a trial checkpoint folder holds, on the pyarrow filesystem `fs` (default: this machine's);
    None for a checkpoint written before checkpoints kept them."""
    path = Path(checkpoint, REPORTED).as_posix()
    try:
        with (fs or LocalFileSystem()).open_input_stream(path) as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return parse_reported(data, path)


def parse_reported(data: bytes, where: str) -> list[dict[str, Any]] | None:
    """A checkpoint's REPORTED file; damaged (not JSON, not a list of objects), a warning naming it and None:
    the trial is then continued as from a checkpoint written before reports were kept (its record as stored)."""
    try:
        reports = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        reports = None
    if isinstance(reports, list) and all(isinstance(r, dict) for r in reports):
        return reports
    print(f"warning: {where}: damaged (expected a JSON list of epoch reports); the trial's result rows are "
          "kept as stored", file=sys.stderr)
    return None


def keep_as_recorded(trial_ids: frozenset[str]) -> None:
    """The trials the trainable ends at once (already finished in the study): their records get the epochs of
    their newest checkpoint, not of the one Ray restarts them from."""
    _KEPT.update(trial_ids)


def checkpoint_reports(trial: "Trial") -> list[dict[str, Any]] | None:
    """The reports of epochs 1..k the record of `trial` is made to hold on its (re)start: those in the checkpoint
    Ray restarts it from, or in its newest checkpoint for a trial kept as recorded (None: no checkpoint, or one
    written before checkpoints kept their reports)."""
    if trial.trial_id in _KEPT:
        fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        newest = max((info.base_name for info in fs.get_file_info(FileSelector(folder, allow_not_found=True))
                      if info.type == FileType.Directory and info.base_name.startswith("checkpoint_")), default=None)
        return None if newest is None else read_reported(f"{folder}/{newest}", fs)
    checkpoint = trial.checkpoint
    return None if checkpoint is None else read_reported(checkpoint.path, checkpoint.filesystem)


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
