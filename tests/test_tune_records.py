"""Reading, ranking and exporting trials without Ray: run names, manifests, Pareto fronts, best rows,
checkpoint choice, and export's refusal to overwrite or to export nothing."""
from __future__ import annotations

import json

import pytest

from model.errors import UserError
from model.metrics import beats
from tuner.runs.export import export_best, target_paths
from tuner.runs.run_dir import RunDir, check_name, open_run
from tuner.runs.trials import TrialRecord, checkpoint_for, pareto_front, ranked, read_condition


def record(tid: str, rows: list[dict], checkpoints=()) -> TrialRecord:
    rec = TrialRecord("all", tid, "TERMINATED", {}, f"trial_{tid}", rows, list(checkpoints))
    for row in rows:
        if beats(row.get("m"), rec.best_value("m") if rec.best else None, "max"):
            rec.best = row
    return rec


@pytest.mark.parametrize("name", ["a b", "../x", "", "x/y", ".hidden"])
def test_bad_run_names_are_refused(name):
    with pytest.raises(UserError, match="--name"):
        check_name(name)


def test_open_run_without_manifest_says_where_it_looked(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path}/nope: no search run here"):
        open_run("nope", str(tmp_path))


def test_damaged_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="run.json: damaged manifest"):
        RunDir(tmp_path, "r").read_manifest()


@pytest.mark.parametrize("key, value, expected", [("run_id", "../../elsewhere", "32 hexadecimal digits"),
                                                   ("rung_epochs", [2, "3"], "a list of epochs")])
def test_a_manifests_run_id_and_rung_epochs_are_checked(tmp_path, key, value, expected):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({
        "version": 1, "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": [], key: value}))
    with pytest.raises(UserError, match=f"run.json: damaged manifest: {key} .*{expected}"):
        RunDir(tmp_path, "r").read_manifest()


def test_manifest_writes_are_atomic_and_round_trip(tmp_path):
    run = RunDir(tmp_path, "r")
    run.write_manifest({"metrics": ["val_ccc_mean"], "modes": ["max"],
                        "conditions": [{"label": "all", "values": {}, "state": "pending"}]})
    run.set_condition_state("all", "done")
    assert run.read_manifest()["conditions"][0]["state"] == "done"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["run.json"]  # no temporary left


def test_better_and_ranked_use_the_mode_and_ignore_nan():
    assert beats(2.0, 1.0, "max") and not beats(2.0, 1.0, "min")
    assert beats(1.0, None, "max") and not beats(float("nan"), 1.0, "max") and beats(1.0, float("nan"), "min")
    recs = [record("a", [{"m": 0.1}, {"m": 0.5}]), record("b", [{"m": 0.3}]), record("c", [])]
    assert [r.trial_id for r in ranked(recs, "m", "max")] == ["a", "b"]   # best epoch counts; no result: left out
    assert [r.trial_id for r in ranked(recs, "m", "min")] == ["b", "a"]


def test_pareto_front():
    recs = [record(t, [{"x": x, "y": y}]) for t, x, y in
            [("a", 1, 1), ("b", 2, 0), ("c", 0, 2), ("d", 0.5, 0.5), ("e", 1, 1)]]
    front = {r.trial_id for r in pareto_front(recs, ["x", "y"], ["max", "max"])}
    assert front == {"a", "b", "c", "e"}
    front_min = {r.trial_id for r in pareto_front(recs, ["x", "y"], ["min", "min"])}
    assert front_min == {"c", "d", "b"}


def test_the_newest_checkpoint_holds_the_best_model_even_when_the_best_epochs_is_kept():
    rec = record("a", [{"m": 0.9, "checkpoint_dir_name": "checkpoint_000000"},
                       {"m": 0.1, "checkpoint_dir_name": "checkpoint_000001"}],
                 checkpoints=["checkpoint_000000", "checkpoint_000001"])
    assert checkpoint_for(rec) == "checkpoint_000001"
    rec.checkpoints = []
    assert checkpoint_for(rec) is None


def test_read_condition_tolerates_a_truncated_result_line(tmp_path):
    exp = tmp_path / "r" / "all"
    (exp / "trial_a").mkdir(parents=True)
    entry = json.dumps({"trial_id": "a", "status": "RUNNING", "config": {"seed": 1}, "relative_logdir": "trial_a"})
    (exp / "experiment_state-2026.json").write_text(json.dumps({"trial_data": [[entry, "{}"]]}))
    (exp / "trial_a" / "result.json").write_text('{"val_ccc_mean": 0.2, "epoch": 1}\n{"val_ccc_mean": 0.')
    (rec,) = read_condition(RunDir(tmp_path, "r"), "all", "val_ccc_mean", "max")
    assert rec.status == "RUNNING" and rec.epochs == 1 and rec.best_value("val_ccc_mean") == 0.2


def test_export_refuses_an_empty_run(tmp_path):
    run = RunDir(tmp_path, "r")
    run.write_manifest({"metrics": ["val_ccc_mean"], "modes": ["max"], "space_file": "s.yaml", "store": "st",
                        "conditions": [{"label": "all", "values": {}, "state": "pending"}]})
    with pytest.raises(UserError, match="no trial has reported a result yet"):
        export_best(run, tmp_path / "best.yaml")
    assert not (tmp_path / "best.yaml").exists()


def test_target_paths_one_file_per_config(tmp_path):
    class P:
        def __init__(self, c, r):
            self.condition, self.rank = c, r

    out = tmp_path / "best.yaml"
    assert target_paths(out, [P("all", 1)]) == [out]
    assert [p.name for p in target_paths(out, [P("labeled_ratio=0.1", 1), P("labeled_ratio=0.1", 2)])] == [
        "best.yaml", "best.labeled_ratio=0.1.rank1.yaml", "best.labeled_ratio=0.1.rank2.yaml"]


def test_resume_refuses_top_below_one_before_touching_the_run(tmp_path, capsys):
    from tuner.cli import main

    assert main(["resume", "any", "--storage", str(tmp_path), "--top", "0"]) == 2
    assert "error: --top 0: expected an integer >= 1" in capsys.readouterr().err
