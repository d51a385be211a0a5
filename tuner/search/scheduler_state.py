"""ASHA's rungs across a resume: Ray Tune saves no scheduler state (ray-project/ray#30838), so we rebuild it.

`Tuner.restore` unpickles the scheduler as it was when the Tuner was made, with empty rungs. Plain
ASHA then (measured in tests/test_scheduler_state.py) lets every restored trial through the first
rung it meets after the resume and records that trial's *later* value in that rung, and judges new
trials only against results that arrived after the resume. `ResumableASHA` refills the rungs from the
trials' recorded results (result.json) as the restored experiment adds each trial back, by feeding
them to ASHA's own `on_trial_result` (and a finished trial's last one to `on_trial_complete`, as
Ray's `stop_trial` did): where a trial's result lands depends only on that trial's own results, so
each trial lands where ASHA put it, whatever the order the trials' results arrived in (a milestone m
takes the result of the first epoch >= m, or of a later one when several milestones fall within one
epoch). `asha_rung_epochs` asks Ray's scheduler the same way at which epochs it judges a trial
(`run` keeps them in run.json for the report). Trials the run's Optuna study had already finished
(ASHA stopped them, or they ran all epochs) after Ray's last experiment snapshot are kept finished
by the trainable (`finished_in_study`), so an early-stopping decision made before the driver died
stands.

Private Ray API relied on (Ray 2.60; tests/test_scheduler_state.py fails when it changes):
`AsyncHyperBandScheduler._brackets` (its single bracket), `_Bracket._rungs` (the rungs to read) and
`AsyncHyperBandScheduler._trial_info` (trial id -> bracket, which on_trial_result needs).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from tuner.runs.run_dir import RunDir
from tuner.space.schema import SearchSpace
from tuner.runs.trials import TrialRecord, trial_results


TIME_ATTR = "training_iteration"   # ASHA's time: epochs


def asha_rung_epochs(space: SearchSpace) -> list[int]:
    """The epochs at which Ray's ASHA, as the space sets it up, puts a trial that reports every epoch
    into a rung (judges it), found by reporting such a trial to Ray's own scheduler rather than by
    recomputing its milestones."""
    max_t = space.budget.max_epochs
    asha = ASHAScheduler(time_attr=TIME_ATTR, metric="probe", mode="max", max_t=max_t,
                         grace_period=space.scheduler.grace_period,
                         reduction_factor=space.scheduler.reduction_factor)
    probe = SimpleNamespace(trial_id="probe")   # ASHA reads only a trial's id
    asha._trial_info[probe.trial_id] = asha._brackets[0]   # on_trial_add's choice, without its draw from NumPy's RNG
    epochs = []
    for epoch in range(1, max_t + 1):   # alone in its rungs, the probe is stopped only at max_t
        before, result = _rungs_holding(asha, probe.trial_id), {TIME_ATTR: epoch, "probe": 0.0}
        if asha.on_trial_result(None, probe, result) == TrialScheduler.STOP:
            asha.on_trial_complete(None, probe, result)   # as Ray's stop_trial does
        if _rungs_holding(asha, probe.trial_id) > before:
            epochs.append(epoch)
    return epochs


def _rungs_holding(asha: ASHAScheduler, trial_id: str) -> int:
    return sum(trial_id in recorded for _, recorded in asha._brackets[0]._rungs)


class ResumableASHA(ASHAScheduler):
    """ASHA (one bracket) whose rungs get back each restored trial's recorded results when Ray re-adds it."""

    def __init__(self, run: RunDir, label: str, **kwargs: Any):
        super().__init__(**kwargs)
        assert len(self._brackets) == 1, "rebuilding assumes ASHA's default single bracket"
        self._source = (run.storage, run.name, label)
        self._rebuilt: dict[float, int] | None = None   # milestone -> trials put back, until printed

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if trial.relative_logdir:   # a restored trial's results (a new trial has none; the snapshot may lag)
            storage, name, label = self._source
            rows = trial_results(RunDir(storage, name), label, trial.relative_logdir)
            self.rebuild([TrialRecord(label, trial.trial_id, trial.status, {}, trial.relative_logdir, rows)])

    def rebuild(self, records: list[TrialRecord]) -> dict[float, int]:
        """Put the trials' recorded results into the rungs as ASHA did; returns milestone -> trials in the rung."""
        for record in records:
            self._replay(record)
        rungs = self._brackets[0]._rungs   # [(milestone, {trial_id: value})], highest milestone first
        self._rebuilt = {m: len(r) for m, r in sorted(rungs)}
        return self._rebuilt

    def _replay(self, record: TrialRecord) -> None:
        """Ray's own calls for one trial's recorded results: each through on_trial_result, and a finished
        trial's last one through on_trial_complete (Ray's stop_trial). ASHA reads only the trial's id."""
        self._trial_info.setdefault(record.trial_id, self._brackets[0])   # what on_trial_add assigns
        for row in record.results:
            self.on_trial_result(None, record, row)
        if record.status == "TERMINATED" and record.results:
            self.on_trial_complete(None, record, record.results[-1])

    def choose_trial_to_run(self, tune_controller):
        if self._rebuilt is not None:   # once, after Ray re-added every restored trial
            storage, name, label = self._source
            print(f"[tuner] condition {label}: ASHA rungs rebuilt from the recorded results: "
                  + ", ".join(f"epoch {m:g}: {n} trial(s)" for m, n in self._rebuilt.items()), flush=True)
            self._rebuilt = None
        return super().choose_trial_to_run(tune_controller)


def finished_in_study(records: list[TrialRecord], study, metric: str) -> set[str]:
    """Ray trials that Ray will resume but that the Optuna study had already finished (PRUNED or COMPLETE).

    Only trials whose last result in Ray's snapshot holds the metric: Ray ends a trial that returns
    without reporting with that result, and refuses one without the metric."""
    resumed = {r.trial_id for r in records if r.status not in ("TERMINATED", "ERROR")
               and metric in r.snapshot_result}
    if study is None:
        return set()
    return {t.user_attrs["ray_trial_id"] for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("ray_trial_id") in resumed and t.state.name in ("PRUNED", "COMPLETE")}


class ResultlessMedian(MedianStoppingRule):
    """The median stopping rule, for trials that may end without a result (a configuration error,
    tuner.runs.config_errors): Ray's rule keeps such a trial's empty last result and then fails judging every
    other trial (it reads each kept result's training_iteration)."""

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if TIME_ATTR in result:
            super().on_trial_complete(tune_controller, trial, result)

