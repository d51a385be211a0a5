"""Side-by-side conditions resume each as itself: each condition's trainable is registered with Ray under
its own name (Ray's registry keeps one trainable per name, the last registered), so each keeps its own
set of trials that its Optuna study had already finished; a trial ASHA stopped just before the driver was
SIGKILLed (a fixed point: tuner.search.hold) is not trained again after `resume`, and its record holds the epoch it
was stopped at."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tuner.runs.checkpoint_reports import REPORTED
from tune_helpers import (SMOKE, experiment_trials, kill_session, result_rows, searcher_study, short_tmp, tuner,
                          tuner_env)

NAME = "kept"
METRIC = "loss_total"


class Stop(Exception):
    """Raised by FakeTuner.fit: the test needs the trainable a condition's Tuner gets, not a search."""


def test_each_condition_gets_its_own_trainable_with_its_own_finished_trials(tmp_path, monkeypatch):
    """The trainables `_run_condition` hands Ray on `run` and on `resume`: Ray names them (as Tuner.fit
    registers them) differently per condition, the same at run and resume (Tuner.restore requires the
    study's name), and each passes its own condition's finished trials to train_trial."""
    from ray import tune
    from ray.tune.experiment import Experiment

    import tuner.search.experiment as experiment
    import tuner.search.trainable
    from tuner.runs.studies import JOURNAL_STORAGE
    from tuner.runs.run_dir import RunDir, new_manifest
    from tuner.space.parse import parse_space

    made: list[tuple[str, object]] = []   # (run|resume, trainable)

    class FakeTuner:
        def __init__(self, trainable, **_):
            made.append(("run", trainable))

        @classmethod
        def can_restore(cls, path) -> bool:
            return True

        @classmethod
        def restore(cls, path, trainable, **_):
            made.append(("resume", trainable))
            return cls.__new__(cls)

        def fit(self):
            raise Stop

    calls: list[frozenset] = []

    def train_trial(config, finished=frozenset(), **_):   # the trial function, recording what it was given
        calls.append(finished)

    monkeypatch.setattr(tune, "Tuner", FakeTuner)
    monkeypatch.setattr(tuner.search.trainable, "train_trial", train_trial)
    monkeypatch.setattr(experiment, "kept_finished", lambda run, label, space: frozenset({f"{label}-stopped"}))
    text = SMOKE.read_text()
    space = parse_space(yaml.safe_load(text), str(SMOKE))
    run = RunDir(tmp_path, "r")
    run.write_manifest(new_manifest(space, text, "store", run.name, JOURNAL_STORAGE, side_by_side=True))
    for resume in (False, True):
        for index, condition in enumerate(space.condition_values()):
            with pytest.raises(Stop):
                experiment._run_condition(space, "store", run, index, condition, resume, JOURNAL_STORAGE, False,
                                          threading.Event())
    names = [Experiment.get_trainable_name(trainable) for _, trainable in made]
    assert [how for how, _ in made] == ["run", "run", "resume", "resume"]
    assert names[0] != names[1], f"both conditions' trainables are registered as {names[0]!r}"
    assert names[:2] == names[2:], names   # run and resume: the same name per condition
    for _, trainable in made[2:]:
        trainable({"lr_adam": 1e-3})
    assert calls == [frozenset({f"{label}-stopped"}) for label in ("labeled_ratio=0.5", "labeled_ratio=1.0")]


def test_run_json_records_each_conditions_trainable_name(tmp_path):
    """run.json names each condition's Ray trainable (resume must restore with the same name); a run made
    before names were per condition keeps Ray's shared `train_trial`; a name that is no string is refused."""
    from model.errors import UserError
    from tuner.runs.run_dir import RunDir, condition_trainable, new_manifest
    from tuner.space.parse import parse_space

    space = parse_space(yaml.safe_load(SMOKE.read_text()), str(SMOKE))
    run = RunDir(tmp_path, "r")
    run.write_manifest(new_manifest(space, SMOKE.read_text(), "store", "r", "journal"))
    manifest = run.read_manifest()
    names = [condition_trainable(manifest, label) for label in ("labeled_ratio=0.5", "labeled_ratio=1.0")]
    assert names == ["train_trial_labeled_ratio=0.5", "train_trial_labeled_ratio=1.0"]
    del manifest["conditions"][0]["trainable"]
    assert condition_trainable(manifest, "labeled_ratio=0.5") == "train_trial"
    manifest["conditions"][1]["trainable"] = 3
    run.write_manifest(manifest)
    with pytest.raises(UserError, match="damaged manifest: conditions: expected a list of {label, values, state, trainable}"):
        run.read_manifest()


LABEL = "labeled_ratio=1.0"   # the condition whose second trial ASHA stops
# Where the driver is killed (tuner.search.hold): one trial at a time in the run, the second trial of LABEL holds after
# epoch 1 until the test has seen it RUNNING in Ray's snapshot and the driver has just saved a snapshot; released,
# it trains epoch 2, where ASHA compares it with the first trial of LABEL and stops it, and the driver is killed
# before Ray's next snapshot, a snapshot period after the one just saved.
HOLD = {"DEEPEMOCLUSTER_TEST_HOLD": "2:1", "DEEPEMOCLUSTER_TEST_HOLD_WHERE": LABEL}
SNAPSHOT_S = 15   # Ray's snapshot period: the released trial's epoch 2 and ASHA's stop happen well within it


def kill_space(tmp: Path) -> Path:
    """smoke.yaml (two conditions) ranked by the training loss (no ties, unlike the CCCs of a tiny store),
    one trial at a time, three trials of three epochs per condition (the stopped trial is not a condition's
    last: Ray saves a snapshot at once when a condition's last trial ends), with one ASHA rung, at epoch 2, that
    stops a trial worse than the one recorded there before (the second trial of LABEL, searcher seed 1)."""
    space = yaml.safe_load(SMOKE.read_text())
    space.update(metric=METRIC, mode="min", budget={"num_samples": 3, "max_epochs": 3},
                 scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 4})
    space["conditions"] = {"labeled_ratio": [1.0, 0.5]}
    space["searcher"]["seed"] = 1
    space["resources"]["max_concurrent_trials"] = 1
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def stopped_but_running(run_dir: Path, label: str) -> str | None:
    """A trial of `label` that ASHA stopped (its Optuna study trial is PRUNED) while Ray's last snapshot
    still lists it running with a result: what a driver killed between the two leaves (None: none now)."""
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import RunDir
    from tuner.runs.trials import read_condition

    run = RunDir(run_dir.parent, run_dir.name)
    try:
        study = load_studies(run).get(label)
        records = read_condition(run, label, METRIC, "min")
    except Exception:   # noqa: BLE001 - a file the paused driver was writing: look again later
        return None
    running = {r.trial_id for r in records if r.status == "RUNNING" and METRIC in r.snapshot_result}
    pruned = [t.user_attrs.get("ray_trial_id") for t in study.get_trials(deepcopy=False)
              if t.state.name == "PRUNED"] if study else []
    return next((t for t in pruned if t in running), None)


def wait_for_the_hold(exp_dir: Path, ray_tmp: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll until Ray's snapshot in the run's storage shows the first trial of LABEL finished and the held one
    RUNNING after its epoch 1, then until the driver saves its next snapshot (its staging copy under RAY_TMPDIR
    changes; the copy in the storage follows later): returns with a whole snapshot period before the next."""
    deadline, staged, saved = time.monotonic() + timeout, None, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the held trial was seen"
        if staged is None:
            at = sorted((t["status"], len(result_rows(exp_dir / t["relative_logdir"])))
                        for t in experiment_trials(exp_dir))
            if at == [("RUNNING", 1), ("TERMINATED", 3)]:
                staged = next(Path(ray_tmp).glob(f"ray/session_*/artifacts/*/{exp_dir.name}/driver_artifacts/"
                                                 "experiment_state-*.json"))
                saved = staged.stat().st_mtime_ns
        elif staged.stat().st_mtime_ns != saved:
            return
        time.sleep(0.05)
    raise AssertionError(f"never saw the held trial in Ray's snapshot: {experiment_trials(exp_dir)}")


def kill_after_the_stop(proc: subprocess.Popen, run_dir: Path, label: str, timeout: float = 120) -> str:
    """SIGKILL the driver (and its Ray) once the released trial of `label` is stopped by ASHA but still running in
    Ray's snapshot. Whenever the driver has written to the Optuna journal it is paused (SIGSTOP) while the test
    reads the run's files, so nothing changes between that look and the kill. Returns the trial."""
    journal, seen = run_dir / "optuna.journal", -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before ASHA stopped the held trial of {label}"
        size = journal.stat().st_size
        if size != seen:
            os.kill(proc.pid, signal.SIGSTOP)
            trial = stopped_but_running(run_dir, label)
            if trial:
                kill_session(proc)
                return trial
            assert all(t["status"] == "RUNNING" for t in experiment_trials(run_dir / label)
                       if len(result_rows(run_dir / label / t["relative_logdir"])) < 3), \
                "Ray snapshotted the held trial's stop before the kill (its epoch took longer than the snapshot period)"
            seen = journal.stat().st_size
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"ASHA never stopped the released trial of {label}")


def test_a_trial_asha_stopped_before_the_kill_is_not_trained_again(tiny_store, tmp_path):
    storage, ray_tmp, release = tmp_path / "results", short_tmp(), tmp_path / "release"
    env = {**tuner_env(ray_tmp), **HOLD, "DEEPEMOCLUSTER_TEST_RELEASE": str(release),
           "TUNE_GLOBAL_CHECKPOINT_S": str(SNAPSHOT_S)}
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--space", str(kill_space(tmp_path)), "--store",
                             str(tiny_store), "--name", NAME, "--storage", str(storage), "--num-cpus", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        label, exp_dir = LABEL, storage / NAME / LABEL
        wait_for_the_hold(exp_dir, ray_tmp, proc)
        release.touch()
        stopped = kill_after_the_stop(proc, storage / NAME, label)
        folder = next(t["relative_logdir"] for t in experiment_trials(exp_dir) if t["trial_id"] == stopped)
        # its rows up to Ray's snapshot (epoch 1: the driver's copy of epoch 2's row died with it); the checkpoint
        # of epoch 2 its worker saved before reporting it
        rows, checkpoints = result_rows(exp_dir / folder), sorted((exp_dir / folder).glob("checkpoint_*"))
        assert [r["training_iteration"] for r in rows] == [1] and len(checkpoints) == 2, (rows, checkpoints)

        resumed = tuner(["resume", NAME, "--storage", str(storage), "--num-cpus", "2"], cwd=tmp_path,
                        ray_tmp=ray_tmp, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert f"condition {label}: 1 trial(s) the study had already finished" in resumed.stdout
        # not trained again: no new checkpoint; its rows are the epochs of its newest checkpoint, the ones its study
        # holds: epoch 1's row as uploaded, epoch 2's (where ASHA stopped it) made from that checkpoint's reports
        assert sorted((exp_dir / folder).glob("checkpoint_*")) == checkpoints
        after = result_rows(exp_dir / folder)
        reported = json.loads((checkpoints[-1] / REPORTED).read_text())
        assert after[0] == rows[0] and [r["training_iteration"] for r in after] == [1, 2], after
        assert after[1][METRIC] == reported[1][METRIC]
        study = searcher_study(exp_dir)
        kept = next(t for t in study.trials if t.user_attrs["ray_trial_id"] == stopped)
        assert kept.state.name == "PRUNED" and kept.intermediate_values == {r["training_iteration"]: r[METRIC]
                                                                            for r in after}
        status = json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path,
                                  ray_tmp=ray_tmp).stdout)
        for c in status["conditions"]:   # each condition finished its study
            assert c["study"] == "done" and c["by_state"] == {"TERMINATED": 3}, c
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
