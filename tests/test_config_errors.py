"""Issue 21 §4: a trial whose configuration cannot train on the store fails once, is not retried by Ray, and a
search in which every trial failed that way exits 2 with one `error:` line per distinct error; where only some
trials failed, the search goes on and its summary names them (tuner.runs.config_errors)."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import yaml

from tune_helpers import SMOKE, short_tmp, tuner

TOO_MANY = 500   # clusters: the tiny store's Train split has far fewer chunks


def space(tmp_path, conditions: dict, samples: int):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["budget"] = {"num_samples": samples, "max_epochs": 1}
    raw["scheduler"] = "none"
    raw["conditions"] = conditions
    raw["parameters"].pop("num_clusters")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def search(tmp_path, tiny_store, conditions: dict, samples: int):
    ray_tmp = short_tmp()
    try:
        return tuner(["run", "--space", space(tmp_path, conditions, samples), "--store", str(tiny_store),
                      "--name", "r", "--storage", str(tmp_path / "results"), "--num-cpus", "2"], tmp_path, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_every_trial_failing_on_its_configuration_is_exit_2_once_per_error(tmp_path, tiny_store):
    from tune_helpers import searcher_study

    proc = search(tmp_path, tiny_store, {"num_clusters": [TOO_MANY]}, samples=2)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert f"fewer than num_clusters={TOO_MANY}" in errors[0] and "2 trial(s) failed on it, not retried" in errors[0]
    # the trial did not raise (Ray's worker shutdown may print a traceback of its own SIGTERM handler: not ours)
    assert "UserError" not in proc.stdout + proc.stderr and "Failure #" not in proc.stdout + proc.stderr
    exp = tmp_path / "results" / "r" / f"num_clusters={TOO_MANY}"
    state = json.loads(sorted(exp.glob("experiment_state-*.json"))[-1].read_text())
    runs = [(json.loads(trial)["status"], json.loads(meta)["num_failures"]) for trial, meta in state["trial_data"]]
    assert runs == [("TERMINATED", 0), ("TERMINATED", 0)]   # each ended once, Ray retried none
    trials = sorted(exp.glob("trial_*"))
    assert len(trials) == 2 and not [t for t in trials if (t / "error.txt").exists()]
    assert all((t / "config_error.txt").read_text().count("num_clusters") == 2 for t in trials)   # once each
    study = searcher_study(exp)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all(f"num_clusters={TOO_MANY}" in t.user_attrs["config_error"] for t in study.trials)


def test_some_trials_failing_on_their_configuration_are_named_and_the_search_goes_on(tmp_path, capsys):
    """A run (its files as Ray leaves them) whose trial b recorded a configuration error and trial a trained:
    the run ends as usual (exit 0, best configs exported), its summary names trial b and its error."""
    from test_bad_input import fake_run
    from tuner.commands.common import finish
    from tuner.runs.run_dir import RunDir

    folder = fake_run(SimpleNamespace(store=tmp_path / "store"), tmp_path, result_text={"b": "\n"},
                      files={"all/trial_b/config_error.txt": f"fewer than num_clusters={TOO_MANY}\n".encode()})
    assert finish(RunDir(tmp_path, folder.name), {"interrupted": False}, top=1) == 0
    out, err = capsys.readouterr()
    assert "error:" not in err
    assert "condition all: study done, 2/4 trials (1 error, 1 terminated;" in out
    assert f"warning: trial b (condition all, trial_b): failed on a configuration error (not retried): fewer than " \
           f"num_clusters={TOO_MANY}" in out
    assert "  trial_id: a\n" in (folder / "best.yaml").read_text()


class Trial:   # what the rule reads of a Ray trial (hashable, as Ray's are)
    def __init__(self, trial_id: str):
        self.trial_id, self.status = trial_id, "RUNNING"


def test_the_median_rule_judges_trials_beside_one_that_ended_without_a_result():
    from ray.tune.schedulers import TrialScheduler

    from tuner.search.scheduler_state import ResultlessMedian

    rule = ResultlessMedian(time_attr="training_iteration", metric="m", mode="max", grace_period=1,
                            min_samples_required=1)
    failed, other, running = (Trial(i) for i in "abc")
    rule.on_trial_complete(None, failed, {"done": True, "trial_id": "a"})   # a configuration error: no result
    rule.on_trial_complete(None, other, {"training_iteration": 1, "m": 0.5})
    assert rule.on_trial_result(None, running, {"training_iteration": 1, "m": 0.1}) == TrialScheduler.STOP
