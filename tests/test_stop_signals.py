"""SIGTERM (what Slurm, Kubernetes and cloud preemption send) stops `run`, `resume`, `confirm` and `train` as
Ctrl+C does: the state is saved, the command exits 143, no process it started is left, and the work continues
where it stopped. Also when started with SIGINT ignored (a background job); a second signal stops at once.

One search, in phases that build on each other (module fixtures): `run` stopped by SIGTERM; `resume` started
with SIGINT ignored, stopped by SIGTERM; `resume` to the end; `confirm` stopped by SIGTERM, then continued to
the end. Then, each on its own: a second signal, a SIGTERM while Ray starts, `train`."""
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

from tune_helpers import (SMOKE, check_study_matches_ray, command_processes, experiment_trials, kill_session,
                          result_rows, searcher_study, short_tmp, tuner_env)

NAME = "stopped"
CONDITIONS = ["labeled_ratio=0.5", "labeled_ratio=1.0"]
EPOCHS = 4
SAMPLES = 3
SPLIT = "Validation"   # the tiny store's Test1 holds one utterance (no CCC)


class Command:
    """`python -m tuner ARGS` in its own session with its own RAY_TMPDIR; its output collected by threads."""

    def __init__(self, args: list[str], cwd: Path, ignore_sigint: bool = False):
        self.ray_tmp = short_tmp()
        # SIGINT ignored as in a background job, or at its default as at a terminal (whatever this test inherited)
        sigint = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
        preexec = lambda: signal.signal(signal.SIGINT, sigint)  # noqa: E731
        env = {**tuner_env(self.ray_tmp), "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=preexec)
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=lambda s=s, o=o: o.extend(s), daemon=True)
                        for s, o in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self.readers:
            r.start()

    def processes(self) -> dict[int, str]:
        return command_processes(self.proc.pid, self.ray_tmp)

    def wait_until(self, what: str, ready, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"ended before {what}: {self.tail()}"
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.1)

    def finish(self, timeout: float = 120) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:   # where it hangs: faulthandler prints every thread's stack on SIGABRT
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=30)
            for r in self.readers:
                r.join(timeout=30)
            raise AssertionError(f"still running {timeout} s later: {self.tail()}") from None
        for r in self.readers:
            r.join(timeout=30)
        return rc

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def tail(self) -> str:
        return self.text()[-6000:]

    def close(self) -> None:
        """Never leave the command or anything it started behind; its RAY_TMPDIR removed."""
        if self.proc.poll() is None:
            kill_session(self.proc)
        for pid in self.processes():   # what a failing test found left behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def ray_tree(processes: dict[int, str]) -> None:
    """The listing sees what a leak would be: the driver, Ray's GCS, raylet and agents, a trial worker."""
    cmds = list(processes.values())
    for part in ("-m tuner", "gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::ImplicitFunc"):
        assert any(part in c for c in cmds), (part, cmds)


def left_after(cmd: Command, grace: float = 5) -> dict[int, str]:
    """The processes the command started that are left `grace` seconds after it exited (a worker Ray's shutdown
    ended takes a moment to be torn down and reaped on a loaded machine)."""
    deadline = time.monotonic() + grace
    while (left := cmd.processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def stop_cleanly(cmd: Command, signum: int = signal.SIGTERM, message: bool = True) -> dict[int, str]:
    """Send `signum` to the driver: it exits 128 + signum and no process it started is left; returns the
    processes before the signal. `message`: the search said it is stopping (the signal came during a Tune fit)."""
    before = cmd.processes()
    cmd.proc.send_signal(signum)
    rc = cmd.finish()
    assert rc == 128 + signum, cmd.tail()
    assert (left := left_after(cmd)) == {}, left
    text = cmd.text()
    assert not message or f"[tuner] {signal.Signals(signum).name}: stopping; the state is saved" in text
    assert "SIGTERM received at time" not in text   # Ray's C++ stack dump on SIGTERM
    return before


def rows(storage: Path, experiments: list[str]) -> int:
    return sum(len(result_rows(d)) for e in experiments for d in (storage / NAME / e).glob("trial_*"))


def check_resumable(storage: Path) -> None:
    """Both studies recorded as running; each Ray trial is one Optuna trial; the trials that reported have a
    checkpoint to continue from."""
    manifest = json.loads((storage / NAME / "run.json").read_text())
    assert [c["state"] for c in manifest["conditions"]] == ["running", "running"]
    for label in CONDITIONS:
        exp = storage / NAME / label
        trials = experiment_trials(exp)
        assert any(t["status"] != "TERMINATED" for t in trials), trials
        check_study_matches_ray(searcher_study(exp), [t["trial_id"] for t in trials])
        for t in trials:
            if t.get("relative_logdir") and result_rows(exp / t["relative_logdir"]):
                assert list((exp / t["relative_logdir"]).glob("checkpoint_*")), t["trial_id"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_store):
    work = tmp_path_factory.mktemp("stop_signals")
    space = yaml.safe_load(SMOKE.read_text())
    space["budget"] = {"num_samples": SAMPLES, "max_epochs": EPOCHS}
    space["scheduler"] = "none"   # trials run all their epochs: the signals land mid-trial
    (work / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    return work


@pytest.fixture(scope="module")
def run_stopped(work, tiny_store):
    """`run`, SIGTERMed once a trial reported (a row in its result.json)."""
    storage = work / "results"
    cmd = Command(["run", "--space", "space.yaml", "--store", str(tiny_store), "--name", NAME, "--storage",
                   "results", "--num-cpus", "2"], work)
    try:
        cmd.wait_until("a trial's report", lambda: rows(storage, CONDITIONS) >= 1)
        cmd.wait_until("a running trial worker", lambda: "ray::ImplicitFunc" in " ".join(cmd.processes().values()))
        return stop_cleanly(cmd), cmd.text()
    finally:
        cmd.close()


def test_sigterm_stops_run_like_ctrl_c(run_stopped, work):
    before, text = run_stopped
    ray_tree(before)
    assert f"interrupted: continue with `python -m tuner resume {NAME}`" in text
    check_resumable(work / "results")


def resume(work: Path, **kw) -> Command:
    return Command(["resume", NAME, "--storage", "results", "--num-cpus", "2"], work, **kw)


@pytest.fixture(scope="module")
def resume_stopped(run_stopped, work):
    """`resume` started with SIGINT ignored: a SIGINT once a restored trial reported is ignored; a SIGTERM
    after the next report stops it."""
    storage = work / "results"
    start = rows(storage, CONDITIONS)
    cmd = resume(work, ignore_sigint=True)
    try:
        cmd.wait_until("a report of the resumed search", lambda: rows(storage, CONDITIONS) > start)
        cmd.proc.send_signal(signal.SIGINT)
        after_sigint = rows(storage, CONDITIONS)
        cmd.wait_until("a report after the ignored SIGINT", lambda: rows(storage, CONDITIONS) > after_sigint)
        return stop_cleanly(cmd), cmd.text()
    finally:
        cmd.close()


def test_sigterm_stops_resume_started_with_sigint_ignored(resume_stopped, work):
    before, text = resume_stopped
    assert "restoring the interrupted study" in text
    assert "[tuner] SIGINT" not in text   # ignored, as the shell asked
    check_resumable(work / "results")


@pytest.fixture(scope="module")
def finished(resume_stopped, work):
    cmd = resume(work)
    try:
        rc = cmd.finish(timeout=600)
        return rc, left_after(cmd), cmd.text()
    finally:
        cmd.close()


def test_resume_finishes_the_search_stopped_twice(finished, work):
    rc, after, text = finished
    assert rc == 0, text[-6000:]
    assert after == {}
    storage = work / "results"
    for label in CONDITIONS:
        exp = storage / NAME / label
        trials = experiment_trials(exp)
        assert len(trials) == SAMPLES and all(t["status"] == "TERMINATED" for t in trials), trials
        for t in trials:
            epochs = sorted({r["training_iteration"] for r in result_rows(exp / t["relative_logdir"])})
            assert epochs == list(range(1, EPOCHS + 1)), (t["trial_id"], epochs)
        study = searcher_study(exp)
        check_study_matches_ray(study, [t["trial_id"] for t in trials])
        assert all(t.state.name == "COMPLETE" for t in study.trials)
    manifest = json.loads((storage / NAME / "run.json").read_text())
    assert [c["state"] for c in manifest["conditions"]] == ["done", "done"]


# ---- issue 21 §3: Ctrl+C and SIGTERM stop `confirm` within seconds in every phase, its state kept --------------
# (while its trials run: test_sigterm_stops_confirm_and_confirm_continues below)
CONFIRM = ["confirm", NAME, "--storage", "results", "--num-cpus", "2", "--top", "1", "--seeds", "1", "--split", SPLIT]


def lock_holder_pid(work: Path) -> int | None:
    """The pid in the run's lock file (None while there is none)."""
    try:
        return json.loads((work / "results" / f".{NAME}.lock").read_text()).get("pid")
    except (OSError, ValueError):
        return None


def stop_quickly(cmd: Command, signum: int, seconds: float) -> str:
    """The signal, then the command's exit (128 + signum) within `seconds`, nothing it started left; its output."""
    sent = time.monotonic()
    stop_cleanly(cmd, signum, message=False)
    assert time.monotonic() - sent < seconds, (time.monotonic() - sent, cmd.tail())
    return cmd.text()


def test_sigterm_stops_confirm_while_it_plans(finished, work):
    """SIGTERM once `confirm` holds the run's lock: it is planning (or importing Ray), nothing of Ray runs yet."""
    cmd = Command(CONFIRM, work)
    try:
        cmd.wait_until("confirm's lock", lambda: lock_holder_pid(work) == cmd.proc.pid, timeout=120)
        text = stop_quickly(cmd, signal.SIGTERM, seconds=10)
    finally:
        cmd.close()
    assert "interrupted" in text and "Traceback" not in text
    assert not (work / "results" / NAME / "confirm" / "confirm.json").exists()
    assert not [p for p in (work / "results" / NAME).rglob("*.tmp*")]   # no half-written plan


def test_ctrl_c_stops_confirm_while_ray_starts(finished, work):
    """Ctrl+C as soon as Ray's raylet exists: the command stops once Ray is up; the plan is kept (the
    confirmation below continues it)."""
    cmd = Command(CONFIRM, work)
    try:
        cmd.wait_until("Ray's raylet", lambda: "raylet" in " ".join(cmd.processes().values()), timeout=120)
        text = stop_quickly(cmd, signal.SIGINT, seconds=30)
    finally:
        cmd.close()
    assert "interrupted" in text and "Traceback" not in text
    assert json.loads((work / "results" / NAME / "confirm" / "plan.json").read_text())["seeds"] == [1]


@pytest.fixture(scope="module")
def confirm_stopped(finished, work):
    """`confirm` (2 configurations x 1 seed), SIGTERMed once a seed reported; then `confirm` again."""
    storage = work / "results"
    cmd = Command(["confirm", NAME, "--storage", "results", "--num-cpus", "2", "--top", "1", "--seeds", "1",
                   "--split", SPLIT], work)
    try:
        cmd.wait_until("a seed's report", lambda: rows(storage, ["confirm"]) >= 1)
        cmd.wait_until("a running trial worker", lambda: "ray::ImplicitFunc" in " ".join(cmd.processes().values()))
        stopped = stop_cleanly(cmd), cmd.text()
    finally:
        cmd.close()
    again = Command(["confirm", NAME, "--storage", "results", "--num-cpus", "2"], work)
    try:
        rc = again.finish(timeout=600)
        return stopped, (rc, left_after(again), again.text())
    finally:
        again.close()


def test_sigterm_stops_confirm_and_confirm_continues(confirm_stopped, work):
    (before, text), (rc, after, again) = confirm_stopped
    ray_tree(before)
    assert f"interrupted: continue with `python -m tuner confirm {NAME}`" in text
    assert rc == 0, again[-6000:]
    assert after == {}
    assert "continuing the confirmation" in again
    confirm = json.loads((work / "results" / NAME / "confirm" / "confirm.json").read_text())
    assert confirm["state"] == "complete"
    assert [s["status"] for c in confirm["configurations"] for s in c["seeds"]] == ["done", "done"]


def test_ctrl_c_stops_confirm_while_it_writes_its_results(confirm_stopped, work):
    """Ctrl+C once the trainings are over and Ray is shut down (`confirm` computes its bootstraps, many resamples
    here, and writes confirm.json): it stops within seconds; the confirm.json written before is left whole."""
    results = work / "results" / NAME / "confirm" / "confirm.json"
    before = results.read_bytes()
    cmd = Command(["confirm", NAME, "--storage", "results", "--num-cpus", "2", "--resamples", "2000000"], work)
    try:
        cmd.wait_until("Ray's raylet", lambda: "raylet" in " ".join(cmd.processes().values()), timeout=120)
        cmd.wait_until("Ray shut down after the trainings",
                       lambda: "raylet" not in " ".join(cmd.processes().values()), timeout=120)
        text = stop_quickly(cmd, signal.SIGINT, seconds=10)
    finally:
        cmd.close()
    assert "interrupted" in text and "Traceback" not in text and "results: " not in text   # before it finished
    assert results.read_bytes() == before
    assert not [p for p in results.parent.glob("*.tmp*")]


def test_a_second_signal_stops_at_once_and_kills_what_the_command_started(work, tiny_store):
    """`run` (its own), SIGTERMed once a trial reported, SIGTERMed again once it said it is stopping: it exits
    at once, every process it started killed; on disk, what a killed driver leaves (the studies `running`)."""
    storage = work / "twice"
    cmd = Command(["run", "--space", "space.yaml", "--store", str(tiny_store), "--name", NAME, "--storage", "twice",
                   "--num-cpus", "2"], work)
    try:
        cmd.wait_until("a trial's report", lambda: rows(storage, CONDITIONS) >= 1)
        cmd.wait_until("a running trial worker", lambda: "ray::ImplicitFunc" in " ".join(cmd.processes().values()))
        before = cmd.processes()
        cmd.proc.send_signal(signal.SIGTERM)
        cmd.wait_until("the first signal's message", lambda: "stopping; the state is saved" in "".join(cmd.err))
        sent = time.monotonic()
        cmd.proc.send_signal(signal.SIGTERM)
        rc = cmd.finish(timeout=30)
        seconds = time.monotonic() - sent
        after = left_after(cmd)   # the driver exits right after its SIGKILLs
    finally:
        cmd.close()
    ray_tree(before)
    assert rc == 143, cmd.tail()
    assert "SIGTERM again: stopping at once" in cmd.text()
    assert seconds < 10, seconds
    assert after == {}, after
    manifest = json.loads((storage / NAME / "run.json").read_text())
    assert [c["state"] for c in manifest["conditions"]] == ["running", "running"]


def test_sigterm_while_ray_starts(work, tiny_store):
    """A SIGTERM as soon as Ray's raylet exists (`ray.init` is still starting the driver's side, with Ray's own
    SIGTERM handlers) stops the command as cleanly, once Ray is up."""
    cmd = Command(["run", "--space", "space.yaml", "--store", str(tiny_store), "--name", "early", "--storage",
                   "early", "--num-cpus", "2"], work)
    try:
        cmd.wait_until("Ray's raylet", lambda: "raylet" in " ".join(cmd.processes().values()), timeout=120)
        stop_cleanly(cmd, message=False)
    finally:
        cmd.close()
    assert "interrupted" in cmd.text()


def test_sigterm_stops_train_which_resumes(tiny_store, tmp_path):
    from model.checkpoint import read_checkpoint

    out = tmp_path / "run"
    fast = ["width=0.25", "chunk_frames=16", "chunks_per_sentence=4", "batch_size=8", "num_clusters=4",
            "kmeans_iterations=5", "precision=fp32", "num_threads=1", "temporal=gru"]
    sets = [a for s in fast for a in ("--set", s)]
    cmd = Command(["train", "--store", str(tiny_store), "--out", str(out), *sets, "--set", "epochs=200"], tmp_path)
    try:
        cmd.wait_until("an epoch", lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text())
        cmd.proc.send_signal(signal.SIGTERM)
        assert cmd.finish() == 143, cmd.tail()
        assert cmd.processes() == {}
    finally:
        cmd.close()
    assert "interrupted: the checkpoint of the last complete epoch" in cmd.text()
    done = read_checkpoint(out / "checkpoint")["epoch"]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["epoch"] == done >= 1
    again = Command(["train", "--store", str(tiny_store), "--out", str(out), "--resume", "--set", f"epochs={done + 1}"],
                    tmp_path)
    try:
        assert again.finish() == 0, again.tail()
    finally:
        again.close()
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, done + 2))
