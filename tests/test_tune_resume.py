"""The driver of a search is SIGKILLed mid-run, at a fixed point (tuner.search.hold: one trial finished, two held
after their first epoch); `python -m tuner resume` finishes it without losing a finished trial, continues
unfinished trials from their checkpoints and continues the same durable Optuna study (no duplicate trials)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tune_helpers import (SMOKE, check_study_matches_ray, experiment_trials, kill_session, result_rows, searcher_study,
                          short_tmp, tuner, tuner_env)

NAME = "killed"
EPOCHS = 6


def resume_space(tmp: Path) -> Path:
    """smoke.yaml with one condition and longer trials, so that the kill lands inside the study."""
    space = yaml.safe_load(SMOKE.read_text())
    space["conditions"] = {"labeled_ratio": [1.0]}
    space["budget"] = {"num_samples": 5, "max_epochs": EPOCHS}
    space["scheduler"] = {"type": "asha", "grace_period": 2, "reduction_factor": 2}
    path = tmp / "resume.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


# Where the driver is killed (tuner.search.hold): the second and third trials to start hold after epoch 1, before ASHA's
# first milestone (2), so the first one runs alone to its last epoch and the kill finds one trial finished and
# two running, each with the checkpoint of its epoch 1 in Ray's snapshot and none of them finished by ASHA.
HELD = {2: 1, 3: 1}


def wait_for_holds(exp_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll until Ray's snapshot shows the first trial finished and the held ones running at the epoch they hold
    after, in a snapshot saved after the one that first showed it (a held trial's checkpoint is registered just
    after its result: a later snapshot names it)."""
    deadline = time.monotonic() + timeout
    first_seen = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        states = sorted(exp_dir.glob("experiment_state-*.json"))
        at = sorted((t["status"], len(result_rows(exp_dir / t["relative_logdir"]))) for t in experiment_trials(exp_dir))
        if at == [("RUNNING", 1), ("RUNNING", 1), ("TERMINATED", EPOCHS)]:
            mtime = states[-1].stat().st_mtime_ns
            first_seen = first_seen or mtime
            if mtime != first_seen:
                return
        time.sleep(0.2)
    raise AssertionError(f"never saw the held trials in Ray's snapshot: {experiment_trials(exp_dir)}")


def test_sigkilled_driver_resumes_without_losing_trials_or_searcher(tiny_store, tmp_path):
    ray_tmp = short_tmp()
    storage = tmp_path / "results"
    space = resume_space(tmp_path)
    exp_dir = storage / NAME / "labeled_ratio=1.0"
    hold = {"DEEPEMOCLUSTER_TEST_HOLD": ",".join(f"{n}:{e}" for n, e in HELD.items()),
            "DEEPEMOCLUSTER_TEST_RELEASE": str(tmp_path / "release"),   # never released: the kill ends the holds
            "TUNE_GLOBAL_CHECKPOINT_S": "2"}   # Ray's snapshots every 2 s, not 10
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--space", str(space), "--store",
                             str(tiny_store), "--name", NAME, "--storage", str(storage), "--num-cpus", "2"],
                            cwd=tmp_path, env={**tuner_env(ray_tmp), **hold}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_holds(exp_dir, proc)
        kill_session(proc)  # the driver and every Ray process it started, polled until none is left
        before = experiment_trials(exp_dir)   # the last state the killed driver wrote
        finished = {t["trial_id"]: result_rows(exp_dir / t["relative_logdir"])
                    for t in before if t["status"] == "TERMINATED"}
        unfinished = [t["trial_id"] for t in before if t["status"] != "TERMINATED"]
        assert len(finished) == 1 and len(unfinished) == 2
        params_before = {t["trial_id"]: t["config"] for t in before}
        reached = {m: sum(1 for t in before if any(r["training_iteration"] == m
                                                   for r in result_rows(exp_dir / t["relative_logdir"])))
                   for m in (2, 4)}   # ASHA's milestones (grace 2, factor 2, 6 epochs)

        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        assert status["conditions"][0]["study"] == "running"

        resumed = tuner(["resume", NAME, "--storage", str(storage), "--num-cpus", "2"], cwd=tmp_path,
                        ray_tmp=ray_tmp, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        # ASHA's rungs (milestones 2 and 4) came back: every trial's value at the epoch, as before the kill
        assert (f"ASHA rungs rebuilt from the recorded results: epoch 2: {reached[2]} trial(s), "
                f"epoch 4: {reached[4]} trial(s)") in resumed.stdout

        after = experiment_trials(exp_dir)
        by_id = {t["trial_id"]: t for t in after}
        assert len(after) == 5 and all(t["status"] == "TERMINATED" for t in after)
        # finished trials kept as they were: same results, not trained again
        for trial_id, rows in finished.items():
            assert result_rows(exp_dir / by_id[trial_id]["relative_logdir"]) == rows
        # every trial that existed keeps its config
        for trial_id, config in params_before.items():
            assert by_id[trial_id]["config"] == config
        # unfinished trials continued from their checkpoints (epoch 1): each epoch once, the restore after epoch 1
        for trial_id in unfinished:
            rows = result_rows(exp_dir / by_id[trial_id]["relative_logdir"])
            assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2, (trial_id, rows)
            assert [r["iterations_since_restore"] for r in rows] == [1, *range(1, len(rows))], (trial_id, rows)
        # the durable Optuna study continued: one study trial per Ray trial, no duplicates, none left running
        study = searcher_study(exp_dir)
        check_study_matches_ray(study, list(by_id))
        owners = [t.user_attrs["ray_trial_id"] for t in study.trials]
        for t in study.trials:
            if t.user_attrs["ray_trial_id"] not in by_id:
                continue   # finished after Ray's last snapshot, forgotten by Ray (see check_study_matches_ray)
            rows = result_rows(exp_dir / by_id[t.user_attrs["ray_trial_id"]]["relative_logdir"])
            epochs = len({r["training_iteration"] for r in rows})
            assert t.state.name == ("COMPLETE" if epochs == EPOCHS else "PRUNED"), (t.number, t.state, epochs)
            assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        for trial_id, config in params_before.items():
            told = study.trials[owners.index(trial_id)].params
            assert told == {k: config[k] for k in told}
        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        assert status["conditions"][0]["study"] == "done"
        assert status["conditions"][0]["by_state"] == {"TERMINATED": 5}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
