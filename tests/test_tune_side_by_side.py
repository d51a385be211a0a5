"""Two conditions' studies side by side (the default) with max_concurrent_trials 1 for the whole run on a
2-CPU Ray: never two trials at once, the studies take turns, and after a driver SIGKILL `resume`
restores both studies."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import yaml

from tune_helpers import SMOKE, experiment_trials, result_rows, searcher_study, short_tmp, tuner, tuner_env

NAME = "both"
CONDITIONS = ["labeled_ratio=0.5", "labeled_ratio=1.0"]


def spans(storage) -> list[tuple[float, float, str]]:
    """(start, end, condition) of every trial from its result rows (Ray's timestamps: whole seconds)."""
    out = []
    for label in CONDITIONS:
        for t in experiment_trials(storage / NAME / label):
            rows = result_rows(storage / NAME / label / t["relative_logdir"])
            if rows:
                out.append((rows[-1]["timestamp"] - rows[-1]["time_total_s"], rows[-1]["timestamp"], label))
    return sorted(out)


def test_side_by_side_shares_the_run_limit_and_resumes_both(tiny_store, tmp_path):
    space = yaml.safe_load(SMOKE.read_text())
    space.pop("scheduler")   # every trial runs its 2 epochs
    space["budget"] = {"num_samples": 3, "max_epochs": 2}
    space["resources"]["max_concurrent_trials"] = 1
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    storage, ray_tmp = tmp_path / "results", short_tmp()
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--space", str(path), "--store", str(tiny_store),
                             "--name", NAME, "--storage", str(storage), "--num-cpus", "2"], cwd=tmp_path,
                            env=tuner_env(ray_tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:   # kill once a trial finished in each study
            assert proc.poll() is None, "the run ended before it could be killed"
            if all(any(t["status"] == "TERMINATED" for t in experiment_trials(storage / NAME / c)) for c in CONDITIONS):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the two studies never both finished a trial")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        assert [c["study"] for c in status["conditions"]] == ["running", "running"]

        resumed = tuner(["resume", NAME, "--storage", str(storage), "--num-cpus", "2"], cwd=tmp_path,
                        ray_tmp=ray_tmp, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "2 studies side by side, at most 1 trial(s) at a time in the run" in resumed.stdout
        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        for c in status["conditions"]:
            assert c["study"] == "done" and c["by_state"] == {"TERMINATED": 3}, c
        for label in CONDITIONS:   # each study holds its own trials once
            study = searcher_study(storage / NAME / label)
            ray_ids = {t["trial_id"] for t in experiment_trials(storage / NAME / label)}
            assert sorted(t.user_attrs["ray_trial_id"] for t in study.trials) == sorted(ray_ids)
        # one trial at a time in the whole run (1 s of slack for Ray's whole-second timestamps) ...
        trials = spans(storage)
        assert len(trials) == 6
        for (_, end, _), (start, _, _) in zip(trials, trials[1:]):
            assert start >= end - 1.5, trials
        # ... and the studies took turns instead of one waiting for the other to finish
        order = [label for _, _, label in trials]
        assert sum(a != b for a, b in zip(order, order[1:])) >= 2, order   # one after another: 1 switch
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
