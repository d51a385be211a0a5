"""TensorBoard logging of a search: per-trial curves under clear tags and the HParams dashboard.

Ray's own TensorBoard logger writes every value under `ray/tune/...` and an experiment summary per
trial; this one writes each reported metric under the tag `tuner.runs.metric_tags.tag_for` gives
(`val/ccc_act`, `train/loss_ccc`, `cluster/nmi`, `time/epoch_s`, ...), one session per trial with
its hyperparameters and final metrics, and one experiment summary at the run's root that lists
every hyperparameter of the space, so that trials with conditional parameters share one table.
Events are written with torch.utils.tensorboard (the project's one writer, also used by `train`; it
needs the declared `tensorboard` package) and the HParams summaries built by TensorBoard's own
`tensorboard.plugins.hparams` API. A trial restarted from a checkpoint (a resumed run, a retry) gets
its curve rewritten from the reports that checkpoint holds: each of its epochs once (tuner.runs.checkpoint_reports).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune.logger import LoggerCallback
from tensorboard.plugins.hparams import summary_v2 as hp

from model.metrics import beats
from tuner.runs.metric_tags import tag_for
from tuner.runs.checkpoint_reports import checkpoint_reports

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


def experiment_summary(space, metric_tags: list[str]):
    """The HParams experiment Summary (tensorboard.plugins.hparams API): every hyperparameter of the space."""
    hparams = [hp.HParam(name, _Domain(values, differs=len(values) > 1)) for name, values in space.conditions.items()]
    by_name: dict[str, list] = {}
    for p in space.parameters:   # a per_attribute space defines a key once per attribute that sets it
        by_name.setdefault(p.name, []).append(p)
    hparams += [hp.HParam(name, _parameter_domain(ps)) for name, ps in by_name.items()]
    return hp.hparams_config_pb(hparams, [hp.Metric(tag) for tag in metric_tags])


def _parameter_domain(params: list) -> "_Domain":
    """The domain of one key over its definitions: an interval if any is a range, else the values."""
    if any(p.kind in ("int", "float") for p in params):
        ends = [v for p in params for v in ((p.low, p.high) if p.kind in ("int", "float")
                                            else p.choices if p.kind == "categorical" else [p.value])
                if isinstance(v, (int, float))]
        return _Domain(None, min(ends), max(ends))
    values = [v for p in params for v in (p.choices if p.kind == "categorical" else [p.value])]
    values = list({repr(v): v for v in values}.values())
    return _Domain(values, differs=len(values) > 1 or any(p.kind == "categorical" or p.when for p in params))


def _typed(values: list[Any]) -> list[str | bool | float]:
    """A discrete domain's values as one type: text if any value is text, bools if all are, numbers otherwise."""
    converted = [hparam_value(v) for v in values]
    if any(isinstance(v, str) for v in converted):
        return [str(v) for v in converted]
    if all(isinstance(v, bool) for v in converted):
        return converted
    return [float(v) for v in converted]


class _Domain(hp.Domain):
    """A hyperparameter's domain (discrete values or an interval) and whether it differs between trials.

    TensorBoard lists differing hyperparameters first; the API's domains leave `differs` unset, so
    this wraps one and sets it (HParam only calls `update_hparam_info`)."""

    def __init__(self, values: list[Any] | None, low: float | None = None, high: float | None = None,
                 differs: bool = True):
        self.values = _typed(values) if values is not None else None
        self.domain = hp.Discrete(self.values) if values is not None else hp.RealInterval(float(low), float(high))
        self.differs = differs

    @property
    def dtype(self):
        return self.domain.dtype

    def sample_uniform(self, rng=None):
        raise NotImplementedError("only describes a domain")

    def update_hparam_info(self, info) -> None:
        self.domain.update_hparam_info(info)
        if isinstance(self.domain, hp.Discrete):   # in the space's order (Discrete sorts its values)
            info.ClearField("domain_discrete")
            info.domain_discrete.extend(self.values)
        info.differs = self.differs


def write_experiment_summary(logdir: str | Path, space, metric_tags: list[str]) -> None:
    """Write the HParams experiment summary (the space's hyperparameters, the metric tags) into `logdir`."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir), filename_suffix=".hparams")
    writer.file_writer.add_summary(experiment_summary(space, metric_tags))
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
            from torch.utils.tensorboard import SummaryWriter

            trial.init_local_path()
            self._writers[trial] = SummaryWriter(trial.local_path, flush_secs=30)
            self._best.setdefault(trial, {})
        return self._writers[trial]

    def log_trial_start(self, trial) -> None:
        reports = checkpoint_reports(trial)
        if reports is not None:   # restarted from a checkpoint: its epochs, once, are the trial's curve
            self._remove_events(trial)
        self._writer(trial)
        for iteration, report in enumerate(reports or (), start=1):
            self.log_trial_result(iteration, trial, report)

    def _remove_events(self, trial) -> None:
        """Delete the trial's event files, here and in the run's storage (a killed driver's steps may pass
        the checkpoint the trial restarts from, or miss some of its epochs)."""
        import pyarrow.fs

        if trial in self._writers:
            self._writers.pop(trial).close()
        self._best.pop(trial, None)
        for path in Path(trial.local_path).glob("events.out.tfevents.*"):
            path.unlink()
        fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        for info in fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True)):
            if info.base_name.startswith("events.out.tfevents.") and info.type == pyarrow.fs.FileType.File:
                fs.delete_file(info.path)

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
                if beats(value, self._best[trial].get(metric), mode):
                    self._best[trial][metric] = value
                writer.add_scalar(f"best/{metric}", self._best[trial][metric], global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        from tensorboard.plugins.hparams import api_pb2

        writer = self._writer(trial)
        config = trial.config or {}
        values = {name: hparam_value(config.get(name)) for name in self.hparam_names if name in config}
        # no group name: TensorBoard makes each trial its own group, named by its folder
        writer.file_writer.add_summary(hp.hparams_pb(values, trial_id=""))
        writer.file_writer.add_summary(session_end(api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS))
        writer.close()
        for table in (self._writers, self._best):
            table.pop(trial, None)


def session_end(status: int):
    """The HParams session-end Summary with `status` (the API's session_end_pb needs TensorFlow)."""
    import time

    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time()))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(content),
        tensor=metadata.NULL_TENSOR)])
