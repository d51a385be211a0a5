"""result.json of a trial retried within one driver keeps every reported epoch (tuner.result_log), while a
trial restored by a new driver still continues the storage's copy; Ray's own JSON logger is run on the
same events to show the gap it leaves."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
from ray.tune.logger import JsonLoggerCallback

from tuner.result_log import ResultJsonLogger


class Trial:
    """What Ray's JSON logger reads of a trial: its id and config, the driver's staging folder, its folder
    in the run's storage, and whether it has a checkpoint."""

    def __init__(self, tmp: Path, driver: str):
        self.trial_id, self.config = "t1", {"lr": 0.1}
        self.local_path = str(tmp / driver / "trial_t1")
        self.storage = SimpleNamespace(trial_fs_path=str(tmp / "storage" / "trial_t1"),
                                       storage_filesystem=pyarrow.fs.LocalFileSystem())
        self.checkpoint = "checkpoint_000000"
        self.init_local_path()   # Ray creates it when it adds the trial

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def snapshot(self) -> None:
        """An experiment snapshot: the driver's staging copy of result.json into the storage."""
        Path(self.storage.trial_fs_path).mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(f"{self.local_path}/result.json", f"{self.storage.trial_fs_path}/result.json")

    def epochs(self, where: str) -> list[int]:
        return [json.loads(line)["epoch"] for line in Path(where, "result.json").read_text().splitlines()]


def retried_in_its_third_epoch(logger, trial: Trial) -> None:
    """Epochs 1 and 2 reported (a snapshot after the first), the trial killed in its third, Ray retrying it from
    its epoch-2 checkpoint in the same driver, epochs 3 and 4 reported."""
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, {"epoch": 1})
    trial.snapshot()
    logger.on_trial_result(1, [], trial, {"epoch": 2})
    logger.on_trial_start(2, [], trial)   # the retry: a new trial process, from the latest checkpoint
    for epoch in (3, 4):
        logger.on_trial_result(epoch, [], trial, {"epoch": epoch})
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
        logger.on_trial_result(epoch, [], first, {"epoch": epoch})
    first.snapshot()                                 # the snapshot the new driver restores from (epoch 2)

    second = Trial(tmp_path, "driver2")              # another driver's staging folder, the same storage
    resumed = ResultJsonLogger()
    resumed.on_trial_start(0, [], second)
    resumed.on_trial_result(3, [], second, {"epoch": 3})
    resumed.on_trial_complete(3, [], second)
    assert second.epochs(second.local_path) == [1, 2, 3]
