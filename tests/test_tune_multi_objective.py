"""A multi-objective search (Optuna TPE over two metrics, no early stopping) on a local Ray: every trial
runs its whole budget, the study holds both objectives of every trial, and export takes a trial from
the Pareto front."""
from __future__ import annotations

import shutil

import pytest
import yaml

from tune_helpers import SMOKE, experiment_trials, result_rows, searcher_study, short_tmp, tuner

METRICS = ["val_ccc_act", "val_ccc_val"]


@pytest.fixture(scope="module")
def multi_run(tiny_store, tmp_path_factory):
    work = tmp_path_factory.mktemp("multi")
    space = yaml.safe_load(SMOKE.read_text())
    space.pop("scheduler")
    space.pop("conditions")
    space.update(metric=METRICS, mode="max", searcher={"type": "multi_objective", "seed": 2, "n_startup_trials": 2},
                 budget={"num_samples": 4, "max_epochs": 2})
    path = work / "multi.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    ray_tmp = short_tmp()
    # the studies in an SQLite database (run --optuna-storage) instead of the default journal file
    proc = tuner(["run", "--space", str(path), "--store", str(tiny_store), "--name", "multi", "--storage",
                  str(work / "results"), "--num-cpus", "2", "--optuna-storage", f"sqlite:///{work}/studies.db"],
                 cwd=work, ray_tmp=ray_tmp, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield work, work / "results" / "multi", ray_tmp
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_no_early_stopping_and_both_objectives_told(multi_run):
    _, run_dir, _ = multi_run
    exp = run_dir / "all"
    trials = experiment_trials(exp)
    assert len(trials) == 4
    last = {}
    for t in trials:
        rows = result_rows(exp / t["relative_logdir"])
        assert t["status"] == "TERMINATED" and len(rows) == 2   # no scheduler: the whole budget
        last[t["trial_id"]] = [rows[-1][m] for m in METRICS]
    study = searcher_study(exp)   # read back from the SQLite database named in the run's manifest
    assert study.study_name == "multi/all" and not (run_dir / "optuna.journal").exists()
    assert {t.user_attrs["ray_trial_id"] for t in study.trials} == {t["trial_id"] for t in trials}
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    told = sorted(tuple(t.values) for t in study.trials)
    reported = sorted(tuple(v) for v in last.values())
    assert [x for pair in told for x in pair] == pytest.approx([x for pair in reported for x in pair])


def test_export_takes_a_pareto_optimal_trial(multi_run):
    work, run_dir, ray_tmp = multi_run
    out = work / "best.yaml"
    proc = tuner(["export", "multi", "--storage", str(run_dir.parent), "--out", str(out)], cwd=work,
                 ray_tmp=ray_tmp, timeout=60)
    assert proc.returncode == 0, proc.stderr
    meta = yaml.safe_load(out.read_text())["metadata"]
    assert meta["objective"] == {"val_ccc_act": "max", "val_ccc_val": "max"}
    exp = run_dir / "all"
    values = {t["trial_id"]: [result_rows(exp / t["relative_logdir"])[-1][m] for m in METRICS]
              for t in experiment_trials(exp)}
    chosen = values[meta["trial_id"]]
    dominated = any(all(o >= c for o, c in zip(v, chosen)) and any(o > c for o, c in zip(v, chosen))
                    for tid, v in values.items() if tid != meta["trial_id"])
    assert not dominated
