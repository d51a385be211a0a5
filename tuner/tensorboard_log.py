"""TensorBoard logging of a search: per-trial curves under clear tags and the HParams dashboard.

Ray's own TensorBoard logger writes every value under `ray/tune/...` and an experiment summary per
trial; this one writes each reported metric under the tag `tuner.trainable.tag_for` gives
(`val/ccc_act`, `train/loss_ccc`, `cluster/nmi`, `time/epoch_s`, ...), one session per trial with
its hyperparameters and final metrics, and one experiment summary at the run's root that lists
every hyperparameter of the space, so that trials with conditional parameters share one table.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune.logger import LoggerCallback

from tuner.trainable import tag_for
from tuner.trial_records import better

# Reported keys that are bookkeeping, not curves.
SKIPPED = {"epoch", "training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "pid",
           "time_since_restore", "iterations_since_restore", "timesteps_since_restore", "done",
           "trial_id", "date", "hostname", "node_ip", "config", "checkpoint_dir_name", "should_checkpoint",
           "train_sentences", "ssl_sentences"}
# Final metrics shown in the HParams table (the latest value of each tag in a trial's run).
HPARAM_METRICS = ("val_ccc_mean", "val_ccc_act", "val_ccc_dom", "val_ccc_val", "loss_total", "nmi",
                  "time_epoch_s")


def hparam_value(value: Any) -> str | float | bool:
    """A value the HParams plugin accepts: numbers, strings, bools; lists and None as text."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "null" if value is None else str(value)


def hparam_metric_tags(metrics: list[str]) -> list[str]:
    """Tags listed as HParams metrics: the searched metrics' best values first, then the final values."""
    tags = [f"best/{m}" for m in metrics]
    tags += [tag_for(m) for m in (*metrics, *HPARAM_METRICS) if tag_for(m) not in tags]
    return list(dict.fromkeys(tags))


def experiment_summary_bytes(space, metric_tags: list[str]) -> bytes:
    """The serialized HParams experiment Summary: every hyperparameter of the space with its domain."""
    from google.protobuf import struct_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    def info(name: str, values: list[Any] | None, low=None, high=None, differs=True) -> api_pb2.HParamInfo:
        h = api_pb2.HParamInfo(name=name, differs=differs)
        if values is not None:
            converted = [hparam_value(v) for v in values]
            h.type = (api_pb2.DATA_TYPE_STRING if any(isinstance(v, str) for v in converted)
                      else api_pb2.DATA_TYPE_BOOL if all(isinstance(v, bool) for v in converted)
                      else api_pb2.DATA_TYPE_FLOAT64)
            if h.type == api_pb2.DATA_TYPE_STRING:
                converted = [str(v) for v in converted]
            h.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[_struct_value(v) for v in converted]))
        else:
            h.type = api_pb2.DATA_TYPE_FLOAT64
            h.domain_interval.min_value, h.domain_interval.max_value = float(low), float(high)
        return h

    infos = [info(name, values, differs=len(values) > 1) for name, values in space.conditions.items()]
    for p in space.parameters:
        if p.kind == "categorical":
            infos.append(info(p.name, p.choices))
        elif p.kind == "fixed":
            infos.append(info(p.name, [p.value], differs=bool(p.when)))
        else:
            infos.append(info(p.name, None, p.low, p.high))
    experiment = api_pb2.Experiment(hparam_infos=infos,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t))
                                                  for t in metric_tags])
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment, version=metadata.PLUGIN_DATA_VERSION)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.EXPERIMENT_TAG, metadata=metadata.create_summary_metadata(content),
        tensor=metadata.NULL_TENSOR)])
    return summary.SerializeToString()


def _struct_value(value: Any):
    from google.protobuf import struct_pb2

    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=str(value))


def write_experiment_summary(logdir: str | Path, space, metric_tags: list[str]) -> None:
    """Write the HParams experiment summary (the space's hyperparameters, the metric tags) into `logdir`."""
    from tensorboardX import SummaryWriter
    from tensorboardX.proto.summary_pb2 import Summary

    writer = SummaryWriter(str(logdir), filename_suffix=".hparams")
    writer.file_writer.add_summary(Summary.FromString(experiment_summary_bytes(space, metric_tags)))
    writer.close()


class TensorBoardCallback(LoggerCallback):
    """Writes per-trial scalars under clear tags and, when a trial ends, its HParams session."""

    _SAVED_FILE_TEMPLATES = ["events.out.tfevents.*"]

    def __init__(self, metrics: list[str], modes: list[str], hparam_names: list[str]):
        self.metrics = list(metrics)
        self.modes = list(modes)
        self.hparam_names = list(hparam_names)
        self._writers: dict[Any, Any] = {}
        self._best: dict[Any, dict[str, float]] = {}

    def _writer(self, trial):
        if trial not in self._writers:
            from tensorboardX import SummaryWriter

            trial.init_local_path()
            self._writers[trial] = SummaryWriter(trial.local_path, flush_secs=30)
            self._best.setdefault(trial, {})
        return self._writers[trial]

    def log_trial_start(self, trial) -> None:
        self._writer(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        writer = self._writer(trial)
        step = int(result.get("epoch") or result.get("training_iteration") or iteration)
        for key, value in result.items():
            if key in SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            writer.add_scalar(tag_for(key), float(value), global_step=step)
        for metric, mode in zip(self.metrics, self.modes):
            if metric in result and isinstance(result[metric], (int, float)) and math.isfinite(result[metric]):
                value = float(result[metric])
                if better(value, self._best[trial].get(metric), mode):
                    self._best[trial][metric] = value
                writer.add_scalar(f"best/{metric}", self._best[trial][metric], global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.summary import hparams as hparams_summary

        writer = self._writer(trial)
        config = trial.config or {}
        values = {name: hparam_value(config.get(name)) for name in self.hparam_names if name in config}
        _, ssi, sei = hparams_summary(values, {})
        writer.file_writer.add_summary(ssi)
        if failed:
            _set_status(sei, Status.Value("STATUS_FAILURE"))
        writer.file_writer.add_summary(sei)
        writer.close()
        for table in (self._writers, self._best):
            table.pop(trial, None)


def _set_status(sei, status: int) -> None:
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    data = HParamsPluginData()
    data.ParseFromString(sei.value[0].metadata.plugin_data.content)
    data.session_end_info.status = status
    sei.value[0].metadata.plugin_data.content = data.SerializeToString()
