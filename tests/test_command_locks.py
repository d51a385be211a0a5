"""`run`, `resume` and `confirm` write their results (the exported best configs, confirm.json) while they
still hold the run's lock, so that no other driver of the run writes in between. The search and the
confirmation themselves are replaced by stand-ins (no Ray): what is checked is when the writes happen."""
from __future__ import annotations

import yaml

from model.locks import LockHeld
from tune_helpers import SMOKE
from tuner.runs.run_dir import RunDir, new_manifest


def lock_held(run: RunDir) -> bool:
    """True when another driver would be refused the run's lock now."""
    try:
        with RunDir(run.storage, run.name).sole_driver():
            return False
    except LockHeld:
        return True


def write_run(run: RunDir, state: str = "pending") -> None:
    """The manifest `run` writes, every condition in `state`."""
    from tuner.space.parse import load_space

    manifest = new_manifest(load_space(SMOKE), SMOKE.read_text(), str(run.storage), run.name, "journal")
    for condition in manifest["conditions"]:
        condition["state"] = state
    run.write_manifest(manifest)


def probe_export(monkeypatch) -> list[bool]:
    """export_best replaced by a writer that records whether the run's lock is held as it writes."""
    from tuner.runs import export

    held: list[bool] = []

    def export_best(run, out, top=1, force=False):
        held.append(lock_held(run))
        out.write_text(yaml.safe_dump({"metadata": {"retrain": "python -m tuner train --config best.yaml"}}))
        return [out]

    monkeypatch.setattr(export, "export_best", export_best)
    return held


def test_run_exports_the_best_configs_while_it_holds_the_lock(tmp_path, monkeypatch):
    from tuner.search import experiment
    from tuner.cli import main

    def run_search(space, space_text, store, run, *args, **kwargs):   # the search, without Ray
        write_run(run, "done")
        return {"run": run.uri, "timings": {}, "interrupted": False}

    monkeypatch.setattr(experiment, "run_search", run_search)
    held = probe_export(monkeypatch)
    assert main(["run", "--space", str(SMOKE), "--store", str(tmp_path / "store"), "--name", "r",
                 "--storage", str(tmp_path)]) == 0
    assert held == [True]


def test_resume_exports_the_best_configs_while_it_holds_the_lock(tmp_path, monkeypatch):
    from tuner.search import experiment
    from tuner.cli import main

    write_run(RunDir(tmp_path, "r"))
    monkeypatch.setattr(experiment, "resume_search",
                        lambda run, *args: {"run": run.uri, "timings": {}, "interrupted": False})
    held = probe_export(monkeypatch)
    assert main(["resume", "r", "--storage", str(tmp_path)]) == 0
    assert held == [True]


def test_confirm_writes_its_results_while_it_holds_the_lock(tmp_path, monkeypatch):
    from tuner.answers.confirm import plan as confirm_plan, results as confirm_results, run as confirm
    from tuner.cli import main

    write_run(RunDir(tmp_path, "r"), "done")
    held: list[bool] = []

    def write_results(run, results):
        held.append(lock_held(run))
        return "the table"

    monkeypatch.setattr(confirm_plan, "choose_plan", lambda run, manifest, *options: {})
    monkeypatch.setattr(confirm, "run_confirmation",
                        lambda run, plan, address, num_cpus: {"interrupted": False, "errored": []})
    monkeypatch.setattr(confirm_results, "collect", lambda run, plan, resamples: {"configurations": []})
    monkeypatch.setattr(confirm_results, "write_results", write_results)
    assert main(["confirm", "r", "--storage", str(tmp_path)]) == 0
    assert held == [True]
