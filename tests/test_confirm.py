"""`python -m tuner confirm` on a tiny search: the plan, a driver killed mid-way and continued, and
confirm.json's numbers against the saved models evaluated directly and against scipy."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from model.store import FeatureStore

from tune_helpers import (SMOKE, experiment_trials, kill_session, result_rows, session_processes, short_tmp, tuner,
                          tuner_env)

NAME = "tiny"
SPLIT = "Validation"   # the tiny store's Test1 holds one utterance (no CCC); Validation holds 11


@pytest.fixture(scope="module")
def searched(tiny_store, tmp_path_factory):
    """A finished search: two conditions (labeled ratio 0.5, 1.0), one 1-epoch trial each."""
    work = tmp_path_factory.mktemp("confirm")
    space = yaml.safe_load(SMOKE.read_text())
    space["budget"] = {"num_samples": 1, "max_epochs": 1}
    space["scheduler"] = "none"
    space["parameters"]["width"] = 0.25
    (work / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    baseline = {"temporal": "none", "num_clusters": 3, "chunk_frames": 16, "chunks_per_sentence": 4, "width": 0.25,
                "batch_size": 8, "kmeans_iterations": 5, "epochs": 1, "precision": "fp32"}
    (work / "base.yaml").write_text(yaml.safe_dump(baseline))
    (work / "base_full.yaml").write_text(yaml.safe_dump({**baseline, "labeled_ratio": 1.0}))
    ray_tmp = short_tmp()
    done = tuner(["run", "--space", "space.yaml", "--store", str(tiny_store), "--name", NAME, "--storage", "results",
                  "--num-cpus", "2"], cwd=work, ray_tmp=ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work


def test_plan_takes_the_exported_configs_and_a_baseline_per_condition(searched):
    from tuner.answers.confirm.plan import confirm_seeds, full_config, plan_confirmation
    from tuner.runs.run_dir import open_run

    run = open_run(NAME, str(searched / "results"))
    plan = plan_confirmation(run, run.read_manifest(), 1, confirm_seeds(2), [SPLIT],
                             [searched / "base.yaml", searched / "base_full.yaml"])
    by_id = {c["id"]: c for c in plan["configurations"]}
    assert list(by_id) == ["labeled_ratio=0.5/rank1", "labeled_ratio=1.0/rank1", "base@labeled_ratio=0.5",
                           "base@labeled_ratio=1.0", "base_full"]
    assert plan["seeds"] == [1, 2]
    for label in ("labeled_ratio=0.5", "labeled_ratio=1.0"):
        exported = yaml.safe_load((searched / "results" / NAME / f"best.{label}.rank1.yaml").read_text())
        exported.pop("metadata")
        assert by_id[f"{label}/rank1"]["config"] == full_config(exported, "export")   # what export wrote
    assert by_id["base@labeled_ratio=0.5"]["config"]["labeled_ratio"] == 0.5     # the condition fills in
    assert by_id["base@labeled_ratio=1.0"]["config"]["labeled_ratio"] == 1.0
    assert by_id["base_full"]["conditions"] == ["labeled_ratio=0.5", "labeled_ratio=1.0"]  # one training


def evaluated(exp_dir: Path) -> dict[str, Path]:
    """trial id -> the evaluation.json of every trial that has one."""
    out = {}
    for t in experiment_trials(exp_dir):
        if t.get("relative_logdir"):
            files = sorted((exp_dir / t["relative_logdir"]).glob("checkpoint_*/evaluation.json"))
            if files:
                out[t["trial_id"]] = files[-1]
    return out


def test_confirm_killed_then_continued_and_its_numbers(searched, tiny_store):
    from model.inference import evaluate_store

    storage = searched / "results"
    exp_dir = storage / NAME / "confirm"
    args = ["confirm", NAME, "--storage", "results", "--num-cpus", "2"]
    ray_tmp = short_tmp()
    proc = subprocess.Popen([sys.executable, "-m", "tuner", *args, "--top", "1", "--seeds", "2", "--split", SPLIT,
                             "--baseline", "base_full.yaml"], cwd=searched, env=tuner_env(ray_tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:   # 3 configurations x 2 seeds, two at a time
            assert proc.poll() is None, "the confirmation ended before it could be killed"
            assert time.monotonic() < deadline, "never saw an evaluated seed next to an unfinished one"
            done = evaluated(exp_dir)
            if done and experiment_trials(exp_dir):   # kill at the first evaluated seed
                break
            time.sleep(0.2)
        kill_session(proc)
        before = {t: (p.read_bytes(), p.stat().st_mtime_ns, result_rows(p.parent.parent))
                  for t, p in evaluated(exp_dir).items()}

        status = json.loads(tuner(["status", NAME, "--storage", "results", "--json"], cwd=searched,
                                  ray_tmp=ray_tmp).stdout)["confirmation"]
        assert status["planned"] == 6 and status["done"] == len(before) < 6

        wrong = tuner([*args, "--seeds", "3"], cwd=searched, ray_tmp=ray_tmp)
        assert wrong.returncode == 2 and "seeds [1, 2] (given [1, 2, 3])" in wrong.stderr
        again = tuner(args, cwd=searched, ray_tmp=ray_tmp, timeout=400)   # options come from the plan
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "Paired comparisons" in again.stdout
    finally:
        if session_processes(proc.pid):
            kill_session(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    after = evaluated(exp_dir)
    assert len(after) == 6
    for trial_id, (evaluation, mtime, rows) in before.items():   # finished seeds were not trained again
        assert after[trial_id].read_bytes() == evaluation and after[trial_id].stat().st_mtime_ns == mtime
        assert result_rows(after[trial_id].parent.parent) == rows

    confirm = json.loads((exp_dir / "confirm.json").read_text())
    assert confirm["state"] == "complete" and confirm["test_splits"] == [SPLIT]
    assert (exp_dir / "confirm.md").read_text() in again.stdout
    assert [c["id"] for c in confirm["configurations"]] == ["labeled_ratio=0.5/rank1", "labeled_ratio=1.0/rank1",
                                                          "base_full"]
    metrics = ["ccc_act", "ccc_dom", "ccc_val", "ccc_mean"]
    values = {}
    for c in confirm["configurations"]:
        assert [s["seed"] for s in c["seeds"]] == [1, 2] and c["summary"]["seeds_done"] == 2
        for s in c["seeds"]:
            assert s["status"] == "done" and s["best_epoch"] == 1
            direct = evaluate_store(s["best_model"], tiny_store, SPLIT)   # the saved model, evaluated here
            for m in metrics:
                assert s["test"][SPLIT][m] == pytest.approx(direct[m], abs=1e-5)
            assert s["validation"]["ccc_mean"] == pytest.approx(direct["ccc_mean"], abs=1e-5)
        for m in metrics:
            values[c["id"], m] = [s["test"][SPLIT][m] for s in c["seeds"]]
            stat = c["summary"]["test"][SPLIT][m]
            assert stat["mean"] == pytest.approx(np.mean(values[c["id"], m]))
            half = stats.t.ppf(0.975, 1) * np.std(values[c["id"], m], ddof=1) / np.sqrt(2)
            assert stat["ci95"] == pytest.approx([stat["mean"] - half, stat["mean"] + half])
    assert any(abs(v) > 1e-4 for vs in values.values() for v in vs)   # real numbers are being compared

    # each condition's best (its only pick) against the baseline, and the two conditions' bests: 3 pairs x 4
    assert confirm["best"] == {"labeled_ratio=0.5": "labeled_ratio=0.5/rank1",
                               "labeled_ratio=1.0": "labeled_ratio=1.0/rank1"}
    comparisons = confirm["comparisons"]
    assert len(comparisons) == 12
    assert {(c["kind"], c["a"], c["b"]) for c in comparisons} == {
        ("baseline", "labeled_ratio=0.5/rank1", "base_full"), ("baseline", "labeled_ratio=1.0/rank1", "base_full"),
        ("condition", "labeled_ratio=0.5/rank1", "labeled_ratio=1.0/rank1")}
    speakers = FeatureStore.open(tiny_store).groups(FeatureStore.open(tiny_store).ids(SPLIT, labeled=True))
    for c in comparisons:
        a, b = values[c["a"], c["metric"]], values[c["b"], c["metric"]]
        assert c["seeds"] == [1, 2] and c["paired_t"]["diff"] == pytest.approx(np.mean(a) - np.mean(b))
        assert c["seeds_failed"] == {"a": [], "b": []} and c["note"] is None
        assert c["method"]["diff"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-5)
        assert c["method"]["seeds"] == 2 and c["method"]["speakers"] == len(set(speakers.tolist()))
        assert c["bootstrap"]["diff"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-5)
        assert c["bootstrap"]["utterances"] == 11 and "bootstrap" in c["bootstrap"]["test"]
        expected = stats.ttest_rel(a, b).pvalue
        if c["paired_t"]["p"] is not None:
            assert c["paired_t"]["p"] == pytest.approx(expected)
            assert c["paired_t"]["p_holm"] >= c["paired_t"]["p"]
        assert 0 < c["bootstrap"]["p"] <= 1 and c["bootstrap"]["p_holm"] >= c["bootstrap"]["p"]
        assert c["method"]["p"] is None or c["method"]["p_holm"] >= c["method"]["p"]
        assert "significant" not in c["bootstrap"] and "significant" not in c["paired_t"]
    for path in exp_dir.glob("trial_*/checkpoint_*/predictions-*.npz"):   # each utterance's speaker is kept
        with np.load(path) as npz:
            assert np.array_equal(npz["speakers"], FeatureStore.open(tiny_store).groups(npz["index"]))

    exported = tuner(["export", NAME, "--storage", "results", "--by", "confirmed", "--out", "conf.yaml"],
                     cwd=searched, ray_tmp="/tmp")
    assert exported.returncode == 0, exported.stderr
    head = yaml.safe_load((searched / "conf.yaml").read_text())
    best = max(confirm["configurations"][:2], key=lambda c: c["summary"]["validation"]["ccc_mean"]["mean"])
    assert head["metadata"]["configuration"] == best["id"]
    assert {k: v for k, v in head.items() if k != "metadata"} == best["config"]


def test_a_stopped_search_is_confirmed_only_with_partial_and_says_so(searched, tmp_path, monkeypatch, capsys):
    """A condition whose study did not finish: `confirm` refuses and names --partial; with --partial it goes
    on, and the plan, confirm.md and the report say how many trials each condition had."""
    import tuner.answers.confirm.run
    from tuner.cli import main as cli
    from tuner.answers.confirm.plan import confirm_seeds, plan_confirmation
    from tuner.runs.confirm_files import search_cell
    from tuner.runs.run_dir import open_run

    storage = tmp_path / "results"
    shutil.copytree(searched / "results" / NAME, storage / NAME, ignore=shutil.ignore_patterns("confirm"))
    manifest_file = storage / NAME / "run.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["conditions"][1]["state"] = "running"   # e.g. the driver was stopped and never resumed
    manifest_file.write_text(json.dumps(manifest))

    assert cli(["confirm", NAME, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert "labeled_ratio=1.0 not finished" in err and f"confirm {NAME} --partial" in err

    begun = []

    def begin(run, plan, *args, **kwargs):   # past the check: the confirmation itself begins (stopped here)
        begun.append(plan)
        raise KeyboardInterrupt
    monkeypatch.setattr(tuner.answers.confirm.run, "run_confirmation", begin)
    assert cli(["confirm", NAME, "--storage", str(storage), "--partial", "--split", SPLIT]) == 130
    assert [c["state"] for c in begun[0]["search"]] == ["done", "running"]

    run = open_run(NAME, str(storage))
    plan = plan_confirmation(run, run.read_manifest(), 1, confirm_seeds(1), [SPLIT], [])
    assert plan["search"] == [
        {"condition": "labeled_ratio=0.5", "state": "done", "trials": 1, "finished": 1, "planned": 1},
        {"condition": "labeled_ratio=1.0", "state": "running", "trials": 1, "finished": 1, "planned": 1}]
    assert search_cell(plan["search"]) == ("labeled_ratio=0.5 1 of 1 trials finished; labeled_ratio=1.0 1 of 1 "
                                           "trials finished (study running: stopped before it finished)")


def trial_states(exp_dir: Path) -> dict[str, tuple[dict, dict]]:
    """config_id -> (trial entry, run metadata: num_failures ...) of the newest experiment state file."""
    state = json.loads(sorted(exp_dir.glob("experiment_state-*.json"))[-1].read_text())
    entries = [(json.loads(e[0]), json.loads(e[1])) for e in state["trial_data"]]
    return {trial["config"]["config_id"]: (trial, meta) for trial, meta in entries}


def says_what_to_do(proc: subprocess.CompletedProcess, baseline: Path, exp_dir: Path) -> None:
    """`confirm` exited 2 with one `error:` line: the configuration error, its configuration and seed, the fix."""
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "fewer than num_clusters=500" in errors[0] and "configuration too_many: seed(s) 1: failed on it, " \
        "not retried; confirming again cannot help" in errors[0]
    assert f"--baseline {baseline}" in errors[0] and f"move {exp_dir} away" in errors[0]
    # the trial did not raise (Ray's worker shutdown may print a traceback of its own SIGTERM handler: not ours;
    # no retry is checked in Ray's experiment state by the caller)
    assert "UserError" not in proc.stdout + proc.stderr and "Failure #" not in proc.stdout + proc.stderr


def test_a_baseline_the_store_cannot_train_fails_once_and_confirm_says_what_to_do(searched, tmp_path):
    """A baseline valid as a config but with more clusters than the store has chunks (issue 21 §4): its seed is
    recorded as failed on that error, not retried; the search's configurations are still confirmed; `confirm`
    exits 2 naming the configuration, seed and the file to fix; `confirm` again trains nothing and says it again."""
    storage = tmp_path / "results"
    shutil.copytree(searched / "results" / NAME, storage / NAME, ignore=shutil.ignore_patterns("confirm"))
    baseline = yaml.safe_load((searched / "base_full.yaml").read_text())
    (tmp_path / "too_many.yaml").write_text(yaml.safe_dump({**baseline, "num_clusters": 500}))
    args = ["confirm", NAME, "--storage", str(storage), "--num-cpus", "2"]
    ray_tmp = short_tmp()
    try:
        first = tuner([*args, "--top", "1", "--seeds", "1", "--split", SPLIT, "--baseline", "too_many.yaml"],
                      cwd=tmp_path, ray_tmp=ray_tmp, timeout=400)
        exp_dir = storage / NAME / "confirm"
        says_what_to_do(first, tmp_path / "too_many.yaml", exp_dir)
        trials = trial_states(exp_dir)
        folder = exp_dir / trials["too_many"][0]["relative_logdir"]
        recorded = (folder / "config_error.txt").stat().st_mtime_ns
        again = tuner(args, cwd=tmp_path, ray_tmp=ray_tmp, timeout=400)
        says_what_to_do(again, tmp_path / "too_many.yaml", exp_dir)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    trial, meta = trials["too_many"]
    assert trial["status"] == "TERMINATED" and meta["num_failures"] == 0   # Ray did not retry it
    assert "fewer than num_clusters=500" in (folder / "config_error.txt").read_text()
    assert not (folder / "error.txt").exists() and not list(folder.glob("checkpoint_*"))
    assert (folder / "config_error.txt").stat().st_mtime_ns == recorded   # not run again by the second confirm
    assert trial_states(exp_dir)["too_many"][0]["status"] == "TERMINATED"

    confirm = json.loads((exp_dir / "confirm.json").read_text())
    by_id = {c["id"]: c for c in confirm["configurations"]}
    assert list(by_id) == ["labeled_ratio=0.5/rank1", "labeled_ratio=1.0/rank1", "too_many"]
    [seed] = by_id["too_many"]["seeds"]
    assert seed["status"] == "failed" and seed["config_error"] is True and "fewer than num_clusters=500" in seed["error"]
    assert (by_id["too_many"]["summary"]["seeds_done"], by_id["too_many"]["summary"]["seeds_failed"]) == (0, 1)
    for cid in ("labeled_ratio=0.5/rank1", "labeled_ratio=1.0/rank1"):   # the others were trained and evaluated
        assert [s["status"] for s in by_id[cid]["seeds"]] == ["done"] and by_id[cid]["seeds"][0]["test"][SPLIT]
    assert confirm["state"] == "complete"
    table = (exp_dir / "confirm.md").read_text()
    assert "| too_many | 0/1 (1 failed) |" in table
    assert "## Failed seeds\n\n- too_many: seed(s) 1: " in table and "(a configuration error: not retried" in table
    status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                              ray_tmp="/tmp").stdout)["confirmation"]
    assert (status["done"], status["error"]) == (2, 1)
