"""`export --by confirmed` selects on validation, never on test; an old confirm.json is refused."""
from __future__ import annotations

import json

import pytest
import yaml

from model.errors import UserError
from tune_helpers import SMOKE
from tuner.cli import main as cli
from tuner.runs.confirm_files import read_confirm
from tuner.runs.export import export_confirmed
from tuner.runs.run_dir import RunDir, new_manifest
from tuner.space.parse import load_space

SPLIT = "Test1"


def stat(mean: float) -> dict:
    return {"mean": mean, "sd": 0.01, "n": 2, "ci95": [mean - 0.1, mean + 0.1]}


def confirmed(cid: str, val: float, test: float) -> dict:
    """A confirmed search configuration (confirm.json's schema: tuner/answers/confirm/results.py), two seeds done."""
    seeds = [{"seed": s, "status": "done", "validation": {"ccc_mean": val}, "test": {SPLIT: {"ccc_mean": test}}}
             for s in (1, 2)]
    return {"id": cid, "kind": "search", "conditions": ["c1"], "condition_values": {}, "rank": 1, "trial_id": cid,
            "attributes": ["act"], "seeds": seeds, "config": {"temporal": "none", "epochs": 2},
            "summary": {"seeds_done": 2, "seeds_failed": 0, "validation": {"ccc_mean": stat(val)},
                        "test": {SPLIT: {"ccc_mean": stat(test)}}}}


def run_with_confirm(tmp_path, confirm: dict) -> RunDir:
    run = RunDir(tmp_path, "r")
    space = load_space(SMOKE)
    run.write_manifest(new_manifest(space, SMOKE.read_text(), "store", "r", "journal"))
    run.write_text(json.dumps(confirm), "confirm", "confirm.json")
    return run


def test_export_confirmed_ranks_by_validation_not_test(tmp_path):
    """X is better on validation, Y on test: X is exported first, with Y's higher test CCC beside it."""
    confirm = {"version": 2, "run": "r", "state": "complete", "plan": {"seeds": [1, 2]},
               "validation_split": "Validation", "test_splits": [SPLIT], "best": {"c1": "X"}, "comparisons": [],
               "tests": {}, "configurations": [confirmed("Y", 0.40, 0.60), confirmed("X", 0.50, 0.30)]}
    run = run_with_confirm(tmp_path, confirm)
    paths = export_confirmed(run, tmp_path / "best.yaml", top=2)
    head = yaml.safe_load(paths[0].read_text())["metadata"]
    assert head["configuration"] == "X" and head["confirmed_rank"] == 1
    assert head["validation_ccc_mean"] == pytest.approx(0.50) and head["test_ccc_mean"] == {SPLIT: pytest.approx(0.30)}
    assert "Validation" in head["ranked_by"]
    assert [f["configuration"] for f in head["files"]] == ["X", "Y"]
    assert head["files"][1]["test_ccc_mean"][SPLIT] == pytest.approx(0.60)


def test_old_confirm_json_is_refused_with_the_way_out(tmp_path, capsys):
    run = run_with_confirm(tmp_path, {"version": 1})
    with pytest.raises(UserError, match=r"confirm.json version 1; this tuner reads version 2.*confirm r"):
        read_confirm(run)
    assert cli(["export", "r", "--storage", str(tmp_path), "--by", "confirmed", "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "confirm/confirm.json: confirm.json version 1" in err
