"""OptunaSearch over a run's durable study (tuner.runs.studies), recording what Ray's searcher does not.

Ray's OptunaSearch already asks the study for each trial's parameters, reports the metric at each
training iteration (single objective) and tells the final value. This subclass adds:
- the user attributes `ray_trial_id`, `trial_folder`, `best_value` and `best_epoch` (whenever the trial
  improves) and `best_model` (at every epoch: the newest checkpoint's `best_model.pt`, the best model so far;
  Ray keeps a trial's newest checkpoints, tuner.search.experiment CHECKPOINTS_KEPT);
- PRUNED for a trial that ended before its epochs without an error (the scheduler stopped it);
- FAIL, with the user attribute `config_error`, for a trial that recorded a configuration error
  (tuner.runs.config_errors) and ended without a result;
- one intermediate value per epoch: an epoch reported again (a resumed trial trains the epochs after its
  checkpoint again, which a killed driver may have recorded) replaces the earlier value, and the best
  so far is judged again from there; an epoch whose result lacks the metric (nmi is NaN in epoch 1 and
  left out of reports) reports nothing (Ray's OptunaSearch would fail on the missing key);
- a study that survives the driver: Ray pickles the searcher into its experiment state, but the
  storage is never pickled; it is re-opened from the run (journal file or RDB URL) on restore, and
  the Ray trial -> Optuna trial map is rebuilt from the study's `ray_trial_id` links and the trial
  table of the experiment state Ray restores from (not from the pickled searcher state: a driver
  killed while Ray uploaded a snapshot can leave that snapshot's experiment state next to the
  previous snapshot's searcher state; the study is never older than either, its journal being
  uploaded before each snapshot). Trials the study started after Ray's last experiment snapshot
  (the driver died in between) stay RUNNING in the study without a Ray trial; the next trials Ray
  creates take them over (same parameters), so a resumed search never duplicates a trial in the
  study. Trials that even finished after that snapshot are unknown to the restored Ray experiment
  (Ray trains replacements); the study keeps them and lists their numbers in its user attribute
  `trials_ray_lost`.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from model.checkpoint import best_model_name
from model.metrics import beats
from tuner.runs.config_errors import read_config_error
from tuner.runs.run_dir import RunDir
from tuner.runs.studies import open_storage, study_name
from tuner.runs.trials import trial_ids
from tuner.storage.uris import join_uri

logger = logging.getLogger(__name__)
_UNPICKLED = ("_storage", "_ot_study", "_ot_trials")


class StudySearcher(OptunaSearch):
    """OptunaSearch whose study lives in the run's Optuna storage (see the module docstring)."""

    def __init__(self, space, metric, mode, sampler, run: RunDir, label: str, storage_setting: str,
                 epochs: int, condition: dict[str, Any]):
        self._run_storage, self._run_name, self._label = run.storage, run.name, label
        self._storage_setting = storage_setting
        self._epochs = epochs
        self._trial_base = run.child_uri(label)
        self._orphans: list[int] = []   # Optuna trial ids started before a driver died, not yet taken over
        super().__init__(space=space, metric=metric, mode=mode, sampler=sampler,
                         study_name=study_name(run.name, label), storage=self._open())
        self._ot_study.set_user_attr("run", run.name)
        self._ot_study.set_user_attr("condition", {k: v for k, v in condition.items()})
        self._ot_study.set_user_attr("results", self._trial_base)
        self._ot_study.set_user_attr("metrics", metric if isinstance(metric, list) else [metric])
        self._note_lost(set())   # a study begun before the driver died, before Ray's first snapshot
        with warnings.catch_warnings():  # experimental in Optuna; the dashboard names the objectives with it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(metric if isinstance(metric, list) else [metric])
        self._find_orphans()

    # ---- durable state -------------------------------------------------------------------------
    def _open(self):
        return open_storage(RunDir(self._run_storage, self._run_name), self._storage_setting)

    def _picklable_attributes(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _UNPICKLED}

    def _reattach(self, state: dict[str, Any], snapshot: bool = True) -> None:
        """Re-open the study from the run's storage and map the Ray trials of the experiment state Ray
        restores from to their Optuna trials (by the study trials' `ray_trial_id`).

        `snapshot`: the state is Ray's latest searcher snapshot (restore), not the copy in tuner.pkl
        from when the study began; only then are lost and orphaned trials looked for."""
        state.pop("_ot_trial_ids", None)   # the map pickled by earlier versions: the study's links replace it
        self.__dict__.update(state)
        self._storage = self._open()
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage,
                                           sampler=self._sampler, pruner=optuna.pruners.NopPruner())
        ray_trials = set(trial_ids(RunDir(self._run_storage, self._run_name), self._label))
        self._ot_trials = {}
        for t in self._ot_study.get_trials(deepcopy=False):
            rid = t.user_attrs.get("ray_trial_id")
            if rid not in ray_trials:
                continue   # lost by Ray or an orphan (below), or a taken-over trial's first owner
            if t.state == TrialState.RUNNING:
                self._ot_trials[rid] = optuna.trial.Trial(self._ot_study, t._trial_id)
            else:
                self._completed_trials.add(rid)
        self._orphans = []
        if snapshot:
            self._note_lost(ray_trials)
            self._find_orphans()

    def _note_lost(self, known: set[str]) -> None:
        """List the finished study trials Ray does not know: they began and finished between Ray's last
        snapshot and the driver's death (or before Ray's first one); Ray trains replacements."""
        listed = self._ot_study.user_attrs.get("trials_ray_lost", [])
        lost = [t.number for t in self._ot_study.get_trials(deepcopy=False) if t.state.is_finished()
                and t.user_attrs.get("ray_trial_id") not in known and t.number not in listed]
        if lost:
            self._ot_study.set_user_attr("trials_ray_lost", sorted([*listed, *lost]))

    def __getstate__(self) -> dict[str, Any]:
        return self._picklable_attributes()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reattach(dict(state), snapshot=False)   # tuner.pkl; Ray's snapshot follows through restore()

    def save(self, checkpoint_path: str) -> None:
        """Ray's experiment snapshot (every >= 10 s): the searcher state, and for a bucket run the journal
        into the bucket first, so that the bucket's journal always holds the trials its snapshot names."""
        import pickle

        from tuner.runs.studies import JOURNAL_STORAGE, upload_journal

        if self._storage_setting == JOURNAL_STORAGE:
            upload_journal(RunDir(self._run_storage, self._run_name))
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self._picklable_attributes(), f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self._reattach(pickle.load(f))

    def _find_orphans(self) -> None:
        """RUNNING study trials that no Ray trial owns: started after the last snapshot of a driver that died."""
        owned = {t._trial_id for t in self._ot_trials.values()}
        self._orphans = [t._trial_id for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                         if t._trial_id not in owned]
        if self._orphans:
            # the sampler's state is from before it drew the orphans' parameters: without a new seed the
            # next new trials would draw those same parameters again
            self._sampler.reseed_rng()
            logger.info("study %s: %d trial(s) started before the driver stopped are taken over by new trials",
                        self._study_name, len(self._orphans))

    # ---- trials --------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, self._orphans.pop(0))
        config = super().suggest(trial_id)
        if config is not None:
            trial = self._ot_trials[trial_id]
            trial.set_user_attr("ray_trial_id", trial_id)
            trial.set_user_attr("trial_folder", join_uri(self._trial_base, f"trial_{trial_id}"))
        return config

    def _primary(self) -> str:
        return self.metric[0] if isinstance(self.metric, list) else self.metric

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return
        try:
            step = int(result.get("training_iteration", 0))
            stored = self._storage.get_trial(trial._trial_id)
            value = result.get(self._primary())
            if step in stored.intermediate_values and value is not None and not isinstance(self.metric, list):
                # an epoch a killed driver recorded after its last snapshot, trained again: its new value
                # replaces the old one (Trial.report would keep the old one)
                self._storage.set_trial_intermediate_value(trial._trial_id, step, float(value))
            elif value is not None:   # an epoch without the metric (nmi: NaN in epoch 1, left out of the report)
                super().on_trial_result(trial_id, result)   # reports nothing: Ray's would fail on the missing key
            if value is not None:
                best, best_epoch = stored.user_attrs.get("best_value"), stored.user_attrs.get("best_epoch", 0)
                # a best recorded at this epoch or later came from epochs trained again: it is replaced
                if best_epoch >= step or beats(value, best, self._primary_mode()):
                    trial.set_user_attr("best_value", value)
                    trial.set_user_attr("best_epoch", step)
            if result.get("checkpoint_dir_name") and (value is not None or "best_value" in stored.user_attrs):
                # the newest checkpoint holds the best model so far (none before the metric had a value);
                # Ray keeps the newest checkpoints, not the best
                trial.set_user_attr("best_model", join_uri(self._trial_base, f"trial_{trial_id}",
                                                           result["checkpoint_dir_name"],
                                                           best_model_name(result.get("config") or {})))
        except optuna.exceptions.UpdateFinishedTrialError:
            # told before the driver died, after Ray's last snapshot: Ray re-runs it, the study keeps it
            self._completed_trials.add(trial_id)

    def _primary_mode(self) -> str:
        return self.mode[0] if isinstance(self.mode, list) else self.mode

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return
        config_error = read_config_error(RunDir(self._run_storage, self._run_name), self._label, f"trial_{trial_id}")
        if config_error is not None:   # the trial ended without a result (tuner.runs.config_errors)
            trial.set_user_attr("config_error", config_error)
            error = True
        if result and not error:
            self.on_trial_result(trial_id, result)  # Ray hands a trial's last result only to on_trial_complete
        if self._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            self._completed_trials.add(trial_id)
            return
        epochs = int((result or {}).get("training_iteration", 0))
        if result and not error and epochs < self._epochs:
            trial.set_user_attr("stopped_at_epoch", epochs)  # the scheduler (or the time budget) stopped it
        if error or not result:
            self._ot_study.tell(trial, state=TrialState.FAIL)
        elif epochs < self._epochs and not isinstance(self.metric, list):
            self._ot_study.tell(trial, state=TrialState.PRUNED)  # the value: the last intermediate one
        else:
            super().on_trial_complete(trial_id, result, error)
            return
        self._completed_trials.add(trial_id)
