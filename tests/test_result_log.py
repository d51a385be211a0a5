"""result.json of a trial retried within one driver keeps every reported epoch (tuner.runs.result_log), while a
trial restored by a new driver still continues the storage's copy; Ray's own JSON logger is run on the
same events to show the gap it leaves. A trial restarted from its checkpoint at epoch k holds epochs 1..k
once, whatever the killed driver had uploaded (tuner.runs.checkpoint_reports)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
from ray.tune.logger import JsonLoggerCallback

from tuner.runs.result_log import ResultJsonLogger
from tuner.runs.checkpoint_reports import REPORTED


class Trial:
    """What Ray's JSON logger reads of a trial: its id and config, the driver's staging folder, its folder
    in the run's storage, and whether it has a checkpoint."""

    def __init__(self, tmp: Path, driver: str):
        self.trial_id, self.config = "t1", {"lr": 0.1}
        self.local_path = str(tmp / driver / "trial_t1")
        self.storage = SimpleNamespace(trial_fs_path=str(tmp / "storage" / "trial_t1"),
                                       storage_filesystem=pyarrow.fs.LocalFileSystem())
        self.checkpoint = None
        self.init_local_path()   # Ray creates it when it adds the trial

    def checkpoint_at(self, epochs: int) -> None:
        """Ray restarts the trial from its checkpoint of epoch `epochs`, which holds the reports of epochs 1..k."""
        path = Path(self.storage.trial_fs_path, f"checkpoint_{epochs - 1:06d}")
        path.mkdir(parents=True, exist_ok=True)
        (path / REPORTED).write_text(json.dumps([{"epoch": e, "v": e / 10} for e in range(1, epochs + 1)]))
        self.checkpoint = SimpleNamespace(path=str(path), filesystem=pyarrow.fs.LocalFileSystem())

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def snapshot(self) -> None:
        """An experiment snapshot: the driver's staging copy of result.json into the storage."""
        Path(self.storage.trial_fs_path).mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(f"{self.local_path}/result.json", f"{self.storage.trial_fs_path}/result.json")

    def rows(self, where: str) -> list[dict]:
        return [json.loads(line) for line in Path(where, "result.json").read_text().splitlines()]

    def epochs(self, where: str) -> list[int]:
        return [row["epoch"] for row in self.rows(where)]


def row(epoch: int, value: float | None = None) -> dict:
    """A reported row as Ray hands it to the loggers: the trial's metrics and the training iteration."""
    return {"epoch": epoch, "v": epoch / 10 if value is None else value, "training_iteration": epoch}


def retried_in_its_third_epoch(logger, trial: Trial) -> None:
    """Epochs 1 and 2 reported (a snapshot after the first), the trial killed in its third, Ray retrying it from
    its epoch-2 checkpoint in the same driver, epochs 3 and 4 reported."""
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, row(1))
    trial.snapshot()
    logger.on_trial_result(1, [], trial, row(2))
    trial.checkpoint_at(2)
    logger.on_trial_start(2, [], trial)   # the retry: a new trial process, from the latest checkpoint
    for epoch in (3, 4):
        logger.on_trial_result(epoch, [], trial, row(epoch))
    logger.on_trial_complete(4, [], trial)


def test_a_retried_trial_keeps_every_epoch_in_result_json(tmp_path):
    ray_own = Trial(tmp_path / "ray", "driver")
    retried_in_its_third_epoch(JsonLoggerCallback(), ray_own)
    assert ray_own.epochs(ray_own.local_path) == [1, 3, 4]   # the storage's older copy replaced epoch 2

    trial = Trial(tmp_path / "ours", "driver")
    logger = ResultJsonLogger()
    retried_in_its_third_epoch(logger, trial)
    assert trial.epochs(trial.local_path) == [1, 2, 3, 4]
    assert pickle.loads(pickle.dumps(logger))._started == set()   # a restored driver starts afresh


def test_a_new_driver_continues_the_storages_result_json(tmp_path):
    first = Trial(tmp_path, "driver1")
    logger = ResultJsonLogger()
    logger.on_trial_start(0, [], first)
    for epoch in (1, 2):
        logger.on_trial_result(epoch, [], first, row(epoch))
    first.snapshot()                                 # the snapshot the new driver restores from (epoch 2)

    second = Trial(tmp_path, "driver2")              # another driver's staging folder, the same storage
    second.checkpoint_at(2)
    resumed = ResultJsonLogger()
    resumed.on_trial_start(0, [], second)
    resumed.on_trial_result(3, [], second, row(3))
    resumed.on_trial_complete(3, [], second)
    assert second.epochs(second.local_path) == [1, 2, 3]


def killed_driver(tmp_path: Path, uploaded: int) -> Trial:
    """A driver that reported epochs 1-4 of a trial and was killed with rows 1..`uploaded` in the storage."""
    first = Trial(tmp_path, "driver1")
    logger = ResultJsonLogger()
    logger.on_trial_start(0, [], first)
    for epoch in range(1, uploaded + 1):
        logger.on_trial_result(epoch, [], first, row(epoch))
    first.snapshot()
    return Trial(tmp_path, "driver2")


def test_rows_a_killed_driver_recorded_after_its_snapshot_are_trained_again_not_kept_twice(tmp_path):
    # the storage holds epochs 1-4, Ray's last experiment snapshot named the checkpoint of epoch 2
    second = killed_driver(tmp_path, uploaded=4)
    second.checkpoint_at(2)
    resumed = ResultJsonLogger()
    resumed.on_trial_start(0, [], second)
    for epoch in (3, 4):   # trained again from epoch 2's checkpoint: new values
        resumed.on_trial_result(epoch, [], second, row(epoch, value=epoch))
    resumed.on_trial_complete(4, [], second)
    assert [(r["training_iteration"], r["v"]) for r in second.rows(second.local_path)] == \
        [(1, 0.1), (2, 0.2), (3, 3), (4, 4)]


def test_rows_the_killed_driver_had_not_uploaded_come_from_the_checkpoint(tmp_path):
    # killed while uploading the snapshot that named epoch 4's checkpoint (its last, the trial's end): the
    # experiment state arrived, result.json's rows 3-4 did not; the trial ends at once, without a report
    second = killed_driver(tmp_path, uploaded=2)
    second.checkpoint_at(4)
    resumed = ResultJsonLogger()
    resumed.on_trial_start(0, [], second)
    resumed.on_trial_complete(4, [], second)
    rows = second.rows(second.local_path)
    assert [(r["training_iteration"], r["epoch"], r["v"]) for r in rows] == [(e, e, e / 10) for e in range(1, 5)]
    assert rows[2]["trial_id"] == "t1" and rows[3]["config"] == {"lr": 0.1}


def test_a_trial_the_study_had_finished_keeps_its_record(tmp_path):
    # ended at once under `resume` (tuner.search.experiment.kept_finished): nothing is trained again, so its stored
    # rows past Ray's snapshot, up to its newest checkpoint, are its record
    from tuner.runs.checkpoint_reports import keep_as_recorded

    second = killed_driver(tmp_path, uploaded=4)
    second.trial_id = "finished-in-study"
    second.checkpoint_at(4)   # the checkpoints its worker uploaded before reporting each epoch
    second.checkpoint_at(2)   # the one Ray's last snapshot named
    keep_as_recorded(frozenset({second.trial_id}))
    resumed = ResultJsonLogger()
    resumed.on_trial_start(0, [], second)
    resumed.on_trial_complete(4, [], second)
    assert [(r["epoch"], r["v"]) for r in second.rows(second.local_path)] == [(e, e / 10) for e in range(1, 5)]


def test_a_trial_the_study_finished_after_the_snapshot_gets_the_epoch_it_ended_at(tmp_path):
    # ASHA stopped it at epoch 2 after Ray's last snapshot (which named epoch 1's checkpoint and uploaded row 1)
    # and the driver was killed before uploading row 2; its study holds epochs 1-2, and so does its newest
    # checkpoint, uploaded by its worker before it reported epoch 2
    from tuner.runs.checkpoint_reports import keep_as_recorded

    second = killed_driver(tmp_path, uploaded=1)
    second.trial_id = "stopped-after-the-snapshot"
    second.checkpoint_at(2)
    second.checkpoint_at(1)
    keep_as_recorded(frozenset({second.trial_id}))
    resumed = ResultJsonLogger()
    resumed.on_trial_start(0, [], second)
    resumed.on_trial_complete(2, [], second)
    rows = second.rows(second.local_path)
    assert [(r["training_iteration"], r["epoch"], r["v"]) for r in rows] == [(1, 1, 0.1), (2, 2, 0.2)]
    assert rows[1]["trial_id"] == "stopped-after-the-snapshot"


def test_a_damaged_reports_file_keeps_the_stored_rows_with_a_warning(tmp_path, capsys):
    """issue 21 §1: a checkpoint's reported.json cut short or of another shape is named on stderr and the trial's
    stored rows are kept (as for a checkpoint written before reports were kept), not a crash of the driver."""
    from tuner.runs.checkpoint_reports import read_reported

    second = killed_driver(tmp_path, uploaded=4)
    second.checkpoint_at(2)
    reports = Path(second.checkpoint.path, REPORTED)
    for damaged in (reports.read_bytes()[:20], b'{"epoch": 1}'):
        reports.write_bytes(damaged)
        resumed = ResultJsonLogger()
        resumed.on_trial_start(0, [], second)
        assert second.epochs(second.local_path) == [1, 2, 3, 4]
        assert read_reported(reports.parent) is None
        err = capsys.readouterr().err
        assert err.count(f"warning: {reports}: damaged (expected a JSON list of epoch reports)") == 2, err
