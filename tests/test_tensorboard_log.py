"""tuner.runs.tensorboard_log: the HParams experiment summary and a trial's curves and session, read back from the event files."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.util import tensor_util

from tuner.space.parse import parse_space
from tuner.runs.tensorboard_log import TensorBoardCallback, hparam_metric_tags, write_experiment_summary
from tuner.runs.checkpoint_reports import REPORTED

SPACE = {
    "metric": "val_ccc_mean", "mode": "max",
    "conditions": {"labeled_ratio": [0.5, 1.0], "pca_whitening": [False]},
    "parameters": {
        "temporal": {"choices": ["gru", "triplet"]},
        "triplet_margin": {"low": 0.2, "high": 2.0, "when": {"temporal": "triplet"}},
        "num_clusters": {"choices": [4, 2]},
        "attributes": {"choices": ["act,val", "dom"]},
        "width": 0.125,
    },
}


def _plugin_data(logdir) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in acc.PluginTagToContent("hparams").items()}


def test_experiment_summary_lists_every_hyperparameter_with_its_domain(tmp_path):
    space = parse_space(SPACE)
    write_experiment_summary(tmp_path, space, hparam_metric_tags(space.metrics))
    experiment = _plugin_data(tmp_path)["_hparams_/experiment"].experiment
    infos = {h.name: h for h in experiment.hparam_infos}
    assert list(infos) == ["labeled_ratio", "pca_whitening", "temporal", "triplet_margin", "num_clusters",
                           "attributes", "width"]
    assert infos["labeled_ratio"].type == api_pb2.DATA_TYPE_FLOAT64 and infos["labeled_ratio"].differs
    assert [v.number_value for v in infos["labeled_ratio"].domain_discrete.values] == [0.5, 1.0]
    assert infos["pca_whitening"].type == api_pb2.DATA_TYPE_BOOL and not infos["pca_whitening"].differs
    assert [v.string_value for v in infos["temporal"].domain_discrete.values] == ["gru", "triplet"]
    margin = infos["triplet_margin"]
    assert margin.type == api_pb2.DATA_TYPE_FLOAT64 and margin.differs
    assert (margin.domain_interval.min_value, margin.domain_interval.max_value) == (0.2, 2.0)
    assert [v.number_value for v in infos["num_clusters"].domain_discrete.values] == [4.0, 2.0]   # the space's order
    assert [v.string_value for v in infos["attributes"].domain_discrete.values] == ["act,val", "dom"]
    assert not infos["width"].differs   # a fixed value without `when` is the same in every trial
    assert [m.name.tag for m in experiment.metric_infos][:2] == ["best/val_ccc_mean", "val/ccc_mean"]


def test_a_key_set_per_attribute_is_listed_once_over_its_definitions(tmp_path):
    space = parse_space({"parameters": {"num_clusters": {"low": 6, "high": 16}, "temporal": "gru", "width": 0.125},
                         "per_attribute": {"act": {"temporal": "cnn"}, "val": {"num_clusters": {"low": 20, "high": 40}},
                                           "dom": {"num_clusters": 30}}})
    write_experiment_summary(tmp_path, space, hparam_metric_tags(space.metrics))
    infos = {h.name: h for h in _plugin_data(tmp_path)["_hparams_/experiment"].experiment.hparam_infos}
    assert list(infos) == ["attributes", "num_clusters", "temporal", "width"]
    assert [v.string_value for v in infos["attributes"].domain_discrete.values] == ["act", "val", "dom"]
    clusters = infos["num_clusters"].domain_interval
    assert (clusters.min_value, clusters.max_value) == (6, 40)   # act's shared 6..16, val's 20..40, dom's 30
    assert [v.string_value for v in infos["temporal"].domain_discrete.values] == ["gru", "cnn"]
    assert infos["temporal"].differs and not infos["width"].differs


class _Trial:
    """What the callback uses of a Ray Trial."""

    def __init__(self, path, config, storage=None, checkpoint=None):
        self.trial_id, self.local_path, self.config = "t1", str(path), config
        self.storage, self.checkpoint = storage, checkpoint   # its folder in the run's storage; the restart point

    def init_local_path(self) -> None:
        pass


def test_trial_curves_best_value_and_session(tmp_path):
    callback = TensorBoardCallback(["val_ccc_mean"], ["max"], ["lr_adam", "temporal", "pca_whitening", "attributes"])
    trials = {failed: _Trial(tmp_path / str(failed), {"lr_adam": 0.01, "temporal": "gru", "pca_whitening": True,
                                                      "attributes": ["act", "val"], "seed": 3})
              for failed in (False, True)}
    for failed, trial in trials.items():
        callback.log_trial_start(trial)
        for epoch, value in enumerate([0.1, 0.3, 0.2], start=1):
            callback.log_trial_result(epoch, trial, {"epoch": epoch, "val_ccc_mean": value, "nmi": math.nan,
                                                     "loss_total": 1.0 / epoch, "is_best": True, "trial_id": "x"})
        callback.log_trial_end(trial, failed=failed)

    for failed, trial in trials.items():
        acc = EventAccumulator(trial.local_path)
        acc.Reload()
        assert set(acc.Tags()["scalars"]) == {"val/ccc_mean", "train/loss_total", "best/val_ccc_mean"}
        assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val/ccc_mean")] == [(1, 0.1), (2, 0.3), (3, 0.2)]
        assert [round(e.value, 6) for e in acc.Scalars("best/val_ccc_mean")] == [0.1, 0.3, 0.3]
        data = _plugin_data(trial.local_path)
        start = data["_hparams_/session_start_info"].session_start_info
        assert start.group_name == ""   # each trial is its own group, named by its folder
        assert {k: v.WhichOneof("kind") for k, v in start.hparams.items()} == {
            "lr_adam": "number_value", "temporal": "string_value", "pca_whitening": "bool_value",
            "attributes": "string_value"}
        assert start.hparams["attributes"].string_value == "act,val"
        end = data["_hparams_/session_end_info"].session_end_info
        assert end.status == (api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS)


def _value(value) -> float:
    return float(tensor_util.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value


def _steps(*folders: Path, tag: str = "val/ccc_mean") -> list[tuple[int, float]]:
    """(step, value) of `tag` across every event file in `folders`, sorted."""
    return sorted((e.step, round(_value(v), 6))
                  for folder in folders for path in Path(folder).glob("events.out.tfevents.*")
                  for e in EventFileLoader(str(path)).Load() for v in e.summary.value if v.tag == tag)


def _restarted(tmp_path, killed_epochs: int, checkpoint_epochs: int) -> tuple[_Trial, Path]:
    """A trial whose killed driver logged epochs 1..`killed_epochs` (value epoch/10) into the run's storage,
    restarted by a new driver from its checkpoint of epoch `checkpoint_epochs`."""
    storage = tmp_path / "storage" / "trial_t1"
    first = TensorBoardCallback(["val_ccc_mean"], ["max"], [])
    killed = _Trial(storage, {})
    for epoch in range(1, killed_epochs + 1):
        first.log_trial_result(epoch, killed, {"epoch": epoch, "val_ccc_mean": epoch / 10})
    first._writers[killed].flush()   # killed: never closed
    checkpoint = storage / f"checkpoint_{checkpoint_epochs - 1:06d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / REPORTED).write_text(json.dumps([{"epoch": e, "val_ccc_mean": e / 10}
                                                   for e in range(1, checkpoint_epochs + 1)]))
    trial = _Trial(tmp_path / "driver2", {}, SimpleNamespace(trial_fs_path=str(storage),
                                                             storage_filesystem=pyarrow.fs.LocalFileSystem()),
                   SimpleNamespace(path=str(checkpoint), filesystem=pyarrow.fs.LocalFileSystem()))
    (tmp_path / "driver2").mkdir()
    return trial, storage


def test_a_restarted_trial_has_each_epoch_once_after_a_killed_driver_logged_past_its_checkpoint(tmp_path):
    trial, storage = _restarted(tmp_path, killed_epochs=4, checkpoint_epochs=2)
    callback = TensorBoardCallback(["val_ccc_mean"], ["max"], [])
    callback.log_trial_start(trial)
    for epoch in (3, 4):   # trained again from epoch 2: other values
        callback.log_trial_result(epoch, trial, {"epoch": epoch, "val_ccc_mean": 1 - epoch / 10})
    callback.log_trial_end(trial)
    # the storage's copy after the next upload: what is left there plus the new driver's files
    assert _steps(storage, trial.local_path) == [(1, 0.1), (2, 0.2), (3, 0.7), (4, 0.6)]
    assert _steps(storage, trial.local_path, tag="best/val_ccc_mean") == [(1, 0.1), (2, 0.2), (3, 0.7), (4, 0.7)]


def test_a_restarted_trial_gets_the_epochs_of_its_checkpoint_the_killed_driver_had_not_uploaded(tmp_path):
    trial, storage = _restarted(tmp_path, killed_epochs=1, checkpoint_epochs=3)
    callback = TensorBoardCallback(["val_ccc_mean"], ["max"], [])
    callback.log_trial_start(trial)   # restarted from its last checkpoint: it ends without a report
    callback.log_trial_end(trial)
    assert _steps(storage, trial.local_path) == [(1, 0.1), (2, 0.2), (3, 0.3)]


def test_a_trial_the_study_finished_after_the_snapshot_gets_the_epoch_it_ended_at(tmp_path):
    # ASHA stopped it at epoch 2 after Ray's last snapshot, which named epoch 1's checkpoint; the killed driver
    # logged epoch 1 only; `resume` ends it at once (tuner.search.experiment.kept_finished): its curve is the epochs of
    # its newest checkpoint, the ones its study holds
    from tuner.runs.checkpoint_reports import keep_as_recorded

    trial, storage = _restarted(tmp_path, killed_epochs=1, checkpoint_epochs=2)
    trial.trial_id = "stopped-after-the-snapshot"
    keep_as_recorded(frozenset({trial.trial_id}))
    (storage / "checkpoint_000000").mkdir()
    (storage / "checkpoint_000000" / REPORTED).write_text(json.dumps([{"epoch": 1, "val_ccc_mean": 0.1}]))
    trial.checkpoint.path = str(storage / "checkpoint_000000")
    callback = TensorBoardCallback(["val_ccc_mean"], ["max"], [])
    callback.log_trial_start(trial)
    callback.log_trial_end(trial)
    assert _steps(storage, trial.local_path) == [(1, 0.1), (2, 0.2)]
