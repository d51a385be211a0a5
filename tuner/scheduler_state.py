"""ASHA's rungs across a resume: Ray Tune saves no scheduler state (ray-project/ray#30838), so we rebuild it.

`Tuner.restore` unpickles the scheduler as it was when the Tuner was made, with empty rungs. Plain
ASHA then (measured in tests/test_scheduler_state.py) lets every restored trial through the first
rung it meets after the resume and records that trial's *later* value in that rung, and judges new
trials only against results that arrived after the resume. `ResumableASHA` refills the rungs from the
trials' recorded results (result.json) as the restored experiment adds each trial back: a rung at
milestone m holds each trial's metric at epoch m, which is what ASHA recorded, whatever the order
the results arrived in. Trials the run's Optuna study had already finished (ASHA stopped them, or
they ran all epochs) after Ray's last experiment snapshot are kept finished by the trainable
(`finished_in_study`), so an early-stopping decision made before the driver died stands.
"""
from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler

from tuner.run_dir import RunDir
from tuner.trial_records import TrialRecord, trial_results


def rung_values(records: list[TrialRecord], milestones: list[float], metric: str, sign: float
                ) -> dict[float, dict[str, float]]:
    """milestone -> {trial id: sign * metric at that epoch}, from each trial's first result at the epoch."""
    rungs: dict[float, dict[str, float]] = {m: {} for m in milestones}
    for rec in records:
        at: dict[int, float] = {}
        for row in rec.results:
            step, value = row.get("training_iteration"), row.get(metric)
            if step is not None and value is not None and step not in at:
                at[int(step)] = float(value)
        for m in milestones:
            if int(m) in at:
                rungs[m][rec.trial_id] = sign * at[int(m)]
    return rungs


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
        """Put the trials' results at each milestone into the rungs; returns milestone -> trials in the rung."""
        rungs = self._brackets[0]._rungs   # [(milestone, {trial_id: value})], highest milestone first
        values = rung_values(records, [m for m, _ in rungs], self._metric, self._metric_op)
        for milestone, recorded in rungs:
            recorded.update(values[milestone])
        self._rebuilt = {m: len(r) for m, r in sorted(rungs)}
        return self._rebuilt

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
