"""Each trial's result.json (one JSON object per reported epoch): Ray's JSON logger, with one row per epoch
the trial's checkpoint holds when a trial restarts.

Ray's `JsonLoggerCallback` copies a trial's result.json back from the run's storage every time the
trial starts, so that a driver restored on another machine continues the file. The driver, however,
writes the file in its local staging folder and uploads it only at experiment snapshots (every 10 s
or more), while a trial retried after a failure (FailureConfig) or resumed after a pause continues from
its latest checkpoint, which came with its latest row: the rows reported after the last upload were
overwritten by the older copy (a trial killed in its third epoch read epochs 1, 3, 4). Here only a
trial's first start in a driver takes the storage's copy; later starts keep the rows this driver wrote.
A driver killed while uploading leaves the storage's copy short of the checkpoint Ray restarts from, or
past it: on every start from a checkpoint the rows become that checkpoint's epochs, each once
(tuner.runs.checkpoint_reports).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.logger import JsonLoggerCallback

from model.atomic_files import atomic_write
from tuner.runs.checkpoint_reports import checkpoint_reports, read_rows, restored_rows

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class ResultJsonLogger(JsonLoggerCallback):
    """Ray's result.json logger whose restarted trials hold each epoch of their checkpoint once (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._started: set[str] = set()   # trials this driver has logged; never pickled (a new driver starts empty)

    def log_trial_start(self, trial: "Trial") -> None:
        super().log_trial_start(trial)
        self._started.add(trial.trial_id)

    def _restore_from_remote(self, file_name: str, trial: "Trial") -> None:
        if trial.trial_id not in self._started:   # the first start here: the storage's copy is the record
            super()._restore_from_remote(file_name, trial)
        reports = checkpoint_reports(trial)
        if reports is not None:
            path = Path(trial.local_path, file_name)
            rows = restored_rows(read_rows(path), reports, trial.trial_id, trial.config)
            atomic_write(path, "".join(json.dumps(row, default=str) + "\n" for row in rows).encode())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_started"] = set()
        return state
