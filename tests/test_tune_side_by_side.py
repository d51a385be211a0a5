"""Two conditions' studies side by side (the default) with max_concurrent_trials 1 for the whole run on a
2-CPU Ray: never two trials at once, the studies take turns, and after a driver SIGKILL `resume`
restores every interrupted study."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import yaml

from tune_helpers import (SMOKE, check_study_matches_ray, experiment_trials, kill_session, result_rows,
                          searcher_study, short_tmp, tuner, tuner_env)

NAME = "both"
CONDITIONS = ["labeled_ratio=0.5", "labeled_ratio=1.0"]


def epochs(storage) -> list[tuple[float, float, str]]:
    """(start, end, condition) of every epoch of every trial, from its result rows (Ray's timestamps are
    whole seconds; a resumed trial's time_total_s spans the kill, so epochs, not trials)."""
    out = []
    for label in CONDITIONS:
        for t in experiment_trials(storage / NAME / label):
            for row in result_rows(storage / NAME / label / t["relative_logdir"]):
                out.append((row["timestamp"] - row["time_this_iter_s"], row["timestamp"], label, t["trial_id"]))
    return sorted(out)


def test_side_by_side_shares_the_run_limit_and_resumes_both(tiny_store, tmp_path):
    space = yaml.safe_load(SMOKE.read_text())
    space["budget"] = {"num_samples": 4, "max_epochs": 2}
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
        kill_session(proc)   # the driver and every Ray process it started
        restored = {t["trial_id"] for c in CONDITIONS for t in experiment_trials(storage / NAME / c)
                    if t["status"] != "TERMINATED"}
        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        running = [c["condition"] for c in status["conditions"] if c["study"] == "running"]
        assert running   # (Ray's state files lag under load: a study may have finished before the kill)

        resumed = tuner(["resume", NAME, "--storage", str(storage), "--num-cpus", "2"], cwd=tmp_path,
                        ray_tmp=ray_tmp, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert all(f"condition {c}: restoring the interrupted study" in resumed.stdout for c in running)
        if len(running) == 2:
            assert "2 studies side by side, at most 1 trial(s) at a time in the run" in resumed.stdout
        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        for c in status["conditions"]:
            assert c["study"] == "done" and c["by_state"] == {"TERMINATED": 4}, c
        for label in CONDITIONS:   # each study holds its own trials once
            study = searcher_study(storage / NAME / label)
            ray_ids = {t["trial_id"] for t in experiment_trials(storage / NAME / label)}
            check_study_matches_ray(study, ray_ids)
        # one trial at a time in the whole run (1.5 s of slack for Ray's whole-second timestamps), except
        # that Ray restarts every trial its last snapshot lists as unfinished at once when resuming
        spans = epochs(storage)
        assert len({trial for *_, trial in spans}) >= 8
        for i, (start, end, _, trial) in enumerate(spans):
            for start2, end2, _, trial2 in spans[i + 1:]:
                if trial2 != trial and not (trial in restored and trial2 in restored):
                    assert start2 >= end - 1.5, (trial, trial2, spans)
        # ... and the studies took turns instead of one waiting for the other to finish
        order = [label for _, _, label, _ in spans]
        assert sum(a != b for a, b in zip(order, order[1:])) >= 2, order   # one after another: 1 switch
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_run_slots_take_turns_and_never_exceed_the_limit():
    from tuner.search.run_limiter import RunSlots

    one = RunSlots(1)
    one.live.add(("A", "1"))
    assert not one.may_take("B")           # full
    one.refused("B")
    one.live.clear()
    assert not one.may_take("A")           # B has been waiting: its turn
    one.refused("A")
    assert one.may_take("B")
    four = RunSlots(4)
    four.live |= {("A", "1"), ("A", "2")}
    four.refused("B")
    assert not four.may_take("A") and four.may_take("B")   # fewest slots first


def test_the_limiter_changes_the_live_trials_only_under_the_slots_lock():
    """may_take iterates `live` under the lock; another study's thread must not resize it meanwhile."""
    import threading

    from ray.tune.search import Searcher

    from tuner.search.run_limiter import RunWideLimiter, run_slots

    class Quiet(Searcher):
        def suggest(self, trial_id):
            return {}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    limiter = RunWideLimiter(Quiet(metric="m", mode="max"), "test-lock-run", "A", 2)
    slots = run_slots("test-lock-run", 2)
    slots.live.add(("A", "1"))
    with slots.lock:
        done = threading.Thread(target=limiter.on_trial_complete, args=("1",))
        done.start()
        done.join(timeout=0.5)
        assert done.is_alive() and ("A", "1") in slots.live    # waits for the lock
    done.join(timeout=10)
    assert not done.is_alive() and ("A", "1") not in slots.live
