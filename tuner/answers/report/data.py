"""What a run's report shows, gathered from its files: per condition the trial counts, compute hours,
best configurations, rung counts, per-epoch curves, the Optuna study and its parameter importances.

Everything is read without Ray: the trials from Ray's files (tuner.runs.trials), the Optuna studies
from the run's Optuna storage (tuner.runs.studies), rebuilt from the trial records only for a run
made before studies were stored (see `condition_studies`). Nothing here draws or formats
(tuner.answers.report.figures and .page do).
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from tuner.runs.confirm_files import read_confirm
from tuner.runs.export import Pick, best_trials
from tuner.runs.run_dir import RunDir, space_from_manifest
from tuner.runs.summary import summarize
from tuner.space.schema import SearchSpace, SpaceSampler
from tuner.runs.trials import TrialRecord, read_trials

TOP_CONFIGS = 3          # best configurations listed per condition
TOP_CURVES = 5           # trials whose validation curves are highlighted
MIN_IMPORTANCE_TRIALS = 5  # fewer finished trials than this: no importance, a note says why


@dataclass
class ConditionReport:
    """One condition's study: counts, hours, best trials, rungs, curves and importances."""
    label: str
    values: dict[str, Any]
    state: str
    trials: int
    planned: int
    by_state: dict[str, int]
    stopped_early: int
    epochs_trained: int
    cpu_hours: float
    gpu_hours: float
    best: list[Pick]
    rungs: list[tuple[int, int]]            # (epoch, trials that reached it)
    records: list[TrialRecord]
    study: Any = None                        # scored_view of the condition's study; None before it began
    importances: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metric: str = ""

    @property
    def best_value(self) -> float | None:
        return self.best[0].record.best_value(self.metric) if self.best else None


@dataclass
class RunReport:
    """Everything the report shows about one run."""
    name: str
    path: str
    space_file: str
    store: str
    created: str
    command: str
    metric: str
    mode: str
    metrics: list[str]
    space: SearchSpace
    searched: list[str]                      # the searched parameters' names, in space order
    conditions: list[ConditionReport]
    studies_source: str = ""                 # where the Optuna studies came from
    confirm: dict[str, Any] | None = None    # the run's confirm.json when it has one

    @property
    def condition_keys(self) -> list[str]:
        return list(self.space.conditions)


def rung_epochs(space: SearchSpace, manifest: dict[str, Any]) -> list[int]:
    """Epochs at which the scheduler compares trials: ASHA's rungs (Ray's scheduler's, kept in run.json
    by `run`), else every epoch; always ending with the last epoch."""
    max_t, s = space.budget.max_epochs, space.scheduler
    if s.type == "asha":
        epochs = manifest.get("rung_epochs")
        if epochs is None:   # a run made before run.json kept them: ask Ray's scheduler (imports Ray)
            from tuner.search.scheduler_state import asha_rung_epochs

            epochs = asha_rung_epochs(space)
    else:
        epochs = list(range(1, max_t + 1))
    return [e for e in epochs if e < max_t] + [max_t]


def trial_hours(records: list[TrialRecord], space: SearchSpace) -> tuple[float, float]:
    """(CPU hours, GPU hours): each trial's training time (Ray's time_total_s) x its reserved CPUs/GPUs."""
    seconds = sum(float(r.results[-1].get("time_total_s", 0.0)) for r in records if r.results)
    return seconds * space.resources.cpu / 3600, seconds * space.resources.gpu / 3600


def searched_parameters(space: SearchSpace) -> list[str]:
    return list(dict.fromkeys(p.name for p in space.parameters if p.kind != "fixed"))


def study_from_records(space: SearchSpace, condition: dict[str, Any], label: str,
                       records: list[TrialRecord]):
    """For a run without Optuna storage: an in-memory study of the condition's trials shaped as the
    run's stored study would be (tuner.search.study_searcher): the searched values (asked through the run's
    own SpaceSampler, so the distributions are the search's), every epoch's metric as an intermediate
    value, `best_value`/`best_epoch` user attributes; COMPLETE, PRUNED when stopped before the last
    epoch, FAIL on error, RUNNING while unfinished; trials without any result left out."""
    import optuna

    State = optuna.trial.TrialState
    directions = ["maximize" if m == "max" else "minimize" for m in space.modes]
    study = optuna.create_study(directions=directions, study_name=label,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    sampler = SpaceSampler(space, condition)
    searched = set(searched_parameters(space))
    for rec in records:
        if not rec.results:
            continue
        study.enqueue_trial({k: v for k, v in rec.config.items() if k in searched})
        trial = study.ask()
        sampler(trial)
        trial.set_user_attr("ray_trial_id", rec.trial_id)
        trial.set_user_attr("trial_folder", rec.folder)
        if rec.best is not None:
            trial.set_user_attr("best_value", rec.best_value(space.metric))
            trial.set_user_attr("best_epoch", int(rec.best.get("training_iteration", 0)))
        if not space.multi_objective:
            for row in rec.results:
                value = row.get(space.metric)
                if value is not None and math.isfinite(value):
                    trial.report(float(value), int(row.get("training_iteration", 0)))
        if rec.status in ("RUNNING", "PENDING"):
            continue  # unfinished: stays RUNNING
        values = [rec.results[-1].get(m) for m in space.metrics]
        if rec.status == "ERROR" or any(v is None or not math.isfinite(v) for v in values):
            study.tell(trial, state=State.FAIL)
        elif rec.epochs < space.budget.max_epochs and not space.multi_objective:
            study.tell(trial, state=State.PRUNED)
        else:
            study.tell(trial, values if space.multi_objective else values[0])
    return study


def scored_view(study, space: SearchSpace):
    """The trials the report's Optuna charts and importances use: every finished trial, stopped early
    or not, as a COMPLETE trial whose value is its best epoch's metric (the value the tables rank by;
    multi-objective: its final values). Optuna's plots and evaluators only read COMPLETE trials, and an
    ASHA search stops most trials early. `state` keeps the stored state as a user attribute."""
    import optuna

    State = optuna.trial.TrialState
    view = optuna.create_study(directions=study.directions, study_name=study.study_name)
    for t in study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED)):
        if space.multi_objective:
            values = t.values
        else:
            best = t.user_attrs.get("best_value")
            values = [best] if best is not None else ([t.value] if t.value is not None else None)
        if values is None or any(v is None or not math.isfinite(v) for v in values):
            continue
        view.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, values=values,
            intermediate_values=t.intermediate_values, user_attrs={**t.user_attrs, "state": t.state.name}))
    return view


def study_gaps(manifest: dict[str, Any], studies: dict[str, Any], trials: dict[str, list[TrialRecord]],
               storage: str) -> dict[str, str]:
    """condition label -> why its stored study disagrees with Ray's trial records, for each finished condition
    where trials Ray finished are missing (or unfinished) in the study: a truncated or stale storage."""
    gaps = {}
    for cond in (c for c in manifest["conditions"] if c["state"] == "done"):
        label = cond["label"]
        finished = {r.trial_id for r in trials.get(label, []) if r.status in ("TERMINATED", "ERROR")}
        study = studies.get(label)
        told = set() if study is None else {t.user_attrs.get("ray_trial_id") for t in study.get_trials(deepcopy=False)
                                            if t.state.is_finished()}
        missing = sorted(finished - told)
        if missing:
            gaps[label] = (f"the Optuna storage {storage} lacks {len(missing)} of the {len(finished)} trials Ray "
                           f"finished (missing or unfinished there: {', '.join(missing[:5])}"
                           f"{', ...' if len(missing) > 5 else ''}): a truncated or stale copy; the study's "
                           "charts and importances leave them out, the tables (from Ray's records) do not")
    return gaps


def condition_studies(run: RunDir, space: SearchSpace, manifest: dict[str, Any], trials: dict[str, list[TrialRecord]],
                      gaps: dict[str, str]) -> tuple[dict[str, Any], str]:
    """condition label -> the scored view of its Optuna study, and where the studies came from: the run's
    Optuna storage (tuner.runs.studies), or for a run made before studies were stored, the trial
    records. A condition whose study has not begun has none. A stored study that lacks trials Ray finished
    is said on stderr and its reason put in `gaps` (the report's notes)."""
    from tuner.runs.studies import check_storage_kept, load_studies, storage_location, storage_setting

    setting = storage_setting(manifest)
    if setting is not None:
        check_storage_kept(run, manifest)
        studies = load_studies(run)
        source = f"the run's Optuna storage ({setting})"
        for label, gap in study_gaps(manifest, studies, trials, storage_location(run, setting)).items():
            print(f"warning: condition {label}: {gap}", file=sys.stderr)
            gaps[label] = gap
    else:
        studies = {c["label"]: study_from_records(space, c["values"], c["label"], trials.get(c["label"], []))
                   for c in manifest["conditions"]}
        source = "rebuilt from the trial records (this run predates stored Optuna studies)"
    return {label: scored_view(study, space) for label, study in studies.items()}, source


def importances(study) -> tuple[dict[str, float], list[str]]:
    """Parameter importances by Optuna's default evaluator (PED-ANOVA, which also rates conditional
    parameters; multi-objective: the importance of reaching the Pareto front), and notes on why there
    are none or on what limits them."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return {}, [f"hyperparameter importance needs at least {MIN_IMPORTANCE_TRIALS} finished trials; "
                    f"this condition has {len(complete)}"]
    varied = {name for t in complete for name in t.params
              if len({repr(u.params.get(name)) for u in complete}) > 1}
    if not varied:
        return {}, ["hyperparameter importance: every finished trial has the same parameter values"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return dict(result), [f"importance: {w.message}" for w in caught if "experimental" not in str(w.message).lower()]


def collect(run: RunDir) -> RunReport:
    """Everything the report of `run` shows."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    manifest = run.read_manifest()
    space = space_from_manifest(manifest)
    metric, mode = manifest["metrics"][0], manifest["modes"][0]
    trials = read_trials(run, manifest)
    summary = {c["condition"]: c for c in summarize(run)["conditions"]}
    picks = best_trials(run, manifest, top=TOP_CONFIGS)
    gaps: dict[str, str] = {}
    studies, studies_source = condition_studies(run, space, manifest, trials, gaps)
    rungs = rung_epochs(space, manifest)
    conditions = []
    for cond in manifest["conditions"]:
        label = cond["label"]
        records = trials.get(label, [])
        s = summary[label]
        cpu_h, gpu_h = trial_hours(records, space)
        rep = ConditionReport(
            label=label, values=cond["values"], state=cond["state"], trials=s["trials"], planned=s["planned"],
            by_state=s["by_state"], stopped_early=s["stopped_early"], epochs_trained=s["epochs_trained"],
            cpu_hours=cpu_h, gpu_hours=gpu_h, best=[p for p in picks if p.condition == label],
            rungs=[(e, sum(1 for r in records if r.epochs >= e)) for e in rungs], records=records,
            study=studies.get(label), metric=metric)
        if rep.study is not None:
            rep.importances, rep.notes = importances(rep.study)
        if label in gaps:
            rep.notes.insert(0, gaps[label])
        if not any(r.results for r in records):
            rep.notes.insert(0, "no trial has reported a result yet")
        conditions.append(rep)
    return RunReport(name=run.name, path=run.uri, space_file=manifest["space_file"], store=manifest["store"],
                     created=manifest.get("created", ""), command=manifest.get("command", ""), metric=metric,
                     mode=mode, metrics=manifest["metrics"], space=space, searched=searched_parameters(space),
                     conditions=conditions, studies_source=studies_source, confirm=read_confirm(run))
