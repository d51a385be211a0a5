"""ASHA across a resume. Ray restores a scheduler as it was made (empty rungs); these tests pin down what
that does to restored and new trials, and that ResumableASHA's rebuilt rungs keep the decisions."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tuner.runs.run_dir import RunDir
from tuner.search.scheduler_state import ResumableASHA, finished_in_study
from tuner.runs.trials import TrialRecord

METRIC = "val_ccc_mean"


def record(trial_id: str, values: list[float], status: str = "RUNNING") -> TrialRecord:
    rows = [{"training_iteration": i + 1, METRIC: v} for i, v in enumerate(values)]
    return TrialRecord("all", trial_id, status, {}, f"trial_{trial_id}", results=rows,
                       snapshot_result=rows[-1] if rows else {})


# before the driver died: a, b, c passed epoch 1; a and b passed epoch 2 (milestones 1, 2, 4 of max_t 6)
BEFORE = [record("a", [0.5, 0.6, 0.65]), record("b", [0.4, 0.45], "TERMINATED"), record("c", [0.1], "TERMINATED")]


def scheduler(kind, tmp_path):
    kwargs = dict(time_attr="training_iteration", max_t=6, grace_period=1, reduction_factor=2)
    s = ResumableASHA(RunDir(tmp_path, "r"), "all", **kwargs) if kind == "rebuilt" else ASHAScheduler(**kwargs)
    s.set_search_properties(METRIC, "max")
    if kind == "rebuilt":
        assert s.rebuild(BEFORE) == {1: 3, 2: 2, 4: 0}   # what on_trial_add does with each restored trial
    return s


def trial(trial_id: str) -> SimpleNamespace:
    """What ASHA reads of a Ray Trial (a new one: no result yet)."""
    return SimpleNamespace(trial_id=trial_id, relative_logdir=None)


def result(epoch: int, value: float) -> dict:
    return {"training_iteration": epoch, METRIC: value}


def test_rays_restored_asha_starts_empty_and_misjudges(tmp_path):
    """Ray's behaviour: rungs start empty; the restored trial's first result (epoch 4) is recorded only
    in rung 4, and a new trial far below every trial from before the kill passes rung 1."""
    s = scheduler("plain", tmp_path)
    a, new = trial("a"), trial("new")
    s.on_trial_add(None, a)
    s.on_trial_add(None, new)
    assert s.on_trial_result(None, a, result(4, 0.7)) == TrialScheduler.CONTINUE
    rungs = dict(s._brackets[0]._rungs)
    assert rungs[4] == {"a": 0.7} and rungs[2] == {} and rungs[1] == {}   # rung 4 first; 1 and 2 stay empty
    assert s.on_trial_result(None, new, result(1, 0.01)) == TrialScheduler.CONTINUE


def test_rebuilt_rungs_keep_early_stopping_consistent(tmp_path):
    s = scheduler("rebuilt", tmp_path)
    a, new, good = (trial(t) for t in ("a", "new", "good"))
    for t in (a, new, good):
        s.on_trial_add(None, t)
    rungs = dict(s._brackets[0]._rungs)
    assert rungs[1] == {"a": 0.5, "b": 0.4, "c": 0.1} and rungs[2] == {"a": 0.6, "b": 0.45}
    # the restored trial is not re-judged at rungs it passed; at rung 4 it is the first
    assert s.on_trial_result(None, a, result(4, 0.7)) == TrialScheduler.CONTINUE
    assert dict(s._brackets[0]._rungs)[2] == {"a": 0.6, "b": 0.45}
    # a new trial is judged against every trial from before the kill
    assert s.on_trial_result(None, new, result(1, 0.01)) == TrialScheduler.STOP
    assert s.on_trial_result(None, good, result(1, 0.55)) == TrialScheduler.CONTINUE


def test_trials_the_study_finished_stay_finished():
    study = optuna.create_study(direction="maximize")
    states = {"a": optuna.trial.TrialState.PRUNED, "b": optuna.trial.TrialState.RUNNING,
              "c": optuna.trial.TrialState.COMPLETE, "d": optuna.trial.TrialState.PRUNED}
    for tid, state in states.items():
        study.add_trial(optuna.trial.create_trial(
            state=state, value=0.1 if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values={1: 0.1}, user_attrs={"ray_trial_id": tid}))
    records = [record("a", [0.1]), record("b", [0.1]), record("c", [0.1]), record("d", [0.1], "TERMINATED"),
               record("e", [])]
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"ray_trial_id": "e"}))
    # a: pruned after Ray's snapshot; c: completed after it; b still running; d: Ray knows it ended;
    # e: pruned, but Ray's snapshot has no result of it to end it with, so Ray runs it again
    assert finished_in_study(records, study, METRIC) == {"a", "c"}


def live_asha(kwargs: dict, histories: dict[str, list[float]]) -> tuple[ASHAScheduler, list[TrialRecord]]:
    """Plain ASHA fed the trials' results round-robin as Ray feeds them (a trial ASHA stops is completed with its
    last result, as Ray's stop_trial does); returns it and the trials' records as result.json keeps them."""
    s = ASHAScheduler(**kwargs)
    s.set_search_properties(METRIC, "max")
    rows: dict[str, list[dict]] = {tid: [] for tid in histories}
    status = dict.fromkeys(histories, "RUNNING")
    for tid in histories:
        s.on_trial_add(None, trial(tid))
    for epoch in range(1, max(len(h) for h in histories.values()) + 1):
        for tid, values in histories.items():
            if status[tid] == "RUNNING" and epoch <= len(values):
                rows[tid].append(result(epoch, values[epoch - 1]))
                if s.on_trial_result(None, trial(tid), rows[tid][-1]) == TrialScheduler.STOP:
                    s.on_trial_complete(None, trial(tid), rows[tid][-1])
                    status[tid] = "TERMINATED"
    return s, [TrialRecord("all", tid, status[tid], {}, f"trial_{tid}", results=r) for tid, r in rows.items()]


@pytest.mark.parametrize("grace, factor, max_t", [(2, 1.5, 10), (1, 1.2, 12)])
def test_rebuilt_rungs_are_where_ray_put_the_results_with_non_integer_milestones(tmp_path, grace, factor, max_t):
    """Milestones 2, 3, 4.5, 6.75 (ASHA records 4.5 at epoch 5), and 1, 1.2, 1.44, ... (several in one epoch:
    ASHA fills the highest, and a skipped one at a later epoch). Some trials still run at the kill."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, max_t + 1, size=12)
    histories = {f"t{i}": [float(v) for v in rng.uniform(0, 1, size=n)] for i, n in enumerate(lengths)}
    kwargs = dict(time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=factor)
    live, records = live_asha(kwargs, histories)
    assert any(r.status == "RUNNING" for r in records) and any(r.status == "TERMINATED" for r in records)
    assert any(m != int(m) for m, _ in live._brackets[0]._rungs)
    rebuilt = ResumableASHA(RunDir(tmp_path, "r"), "all", **kwargs)
    rebuilt.set_search_properties(METRIC, "max")
    rebuilt.rebuild(records)
    assert dict(rebuilt._brackets[0]._rungs) == dict(live._brackets[0]._rungs)


def asha_space_text(grace: int, factor: float, max_epochs: int) -> str:
    import yaml

    from tune_helpers import SMOKE

    raw = yaml.safe_load(SMOKE.read_text())
    raw["scheduler"].update(grace_period=grace, reduction_factor=factor)
    raw["budget"]["max_epochs"] = max_epochs
    return yaml.safe_dump(raw)


def asha_space(grace: int, factor: float, max_epochs: int):
    import yaml

    from tuner.space.parse import parse_space

    return parse_space(yaml.safe_load(asha_space_text(grace, factor, max_epochs)), "smoke.yaml")


def test_report_rung_epochs_are_the_epochs_ray_judges_at():
    """grace 2, reduction factor 1.5: milestones 2, 3, 4.5, 6.75, judged at epochs 2, 3, 5 and 7 (not 4
    and 6); for a run whose run.json does not keep them, the report asks Ray's scheduler."""
    from tuner.answers.report.data import rung_epochs

    assert rung_epochs(asha_space(2, 1.5, 10), {}) == [2, 3, 5, 7, 10]   # and the last epoch
    assert rung_epochs(asha_space(1, 2, 6), {}) == [1, 2, 4, 6]          # integer milestones 1, 2, 4


def test_run_keeps_rays_rung_epochs_in_run_json_and_the_report_reads_them_without_ray(tmp_path):
    import json
    import subprocess
    import sys

    from tuner.search.experiment import start_manifest

    text = asha_space_text(2, 1.5, 10)
    manifest = start_manifest(asha_space(2, 1.5, 10), text, "store", "r", "journal", True)
    assert manifest["rung_epochs"] == [2, 3, 5, 7]
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    code = ("import json, sys; from tuner.runs.run_dir import space_from_manifest; "
            "from tuner.answers.report.data import rung_epochs; "
            f"m = json.load(open({str(tmp_path / 'run.json')!r})); "
            "print(json.dumps([rung_epochs(space_from_manifest(m), m), 'ray' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[2, 3, 5, 7, 10], False]
