"""cluster/slurm/search.sbatch under a real Slurm (tests/slurm_cluster.py: munged, slurmctld and slurmd
on 127.0.0.2, one node, 2 CPUs): the job starts a Ray head inside its allocation, copies the store to
the node and starts the search; Slurm's own signal (`scancel --signal=TERM --batch`, what
`--signal=B:TERM@...` sends before the time limit) stops it mid-search; the job requeues itself and the
requeued job resumes the run to the end: every trial complete, no epoch trained twice, `status` and
`export` agreeing, no Ray process of the job left."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import HOST, SlurmCluster, missing_programs
from tune_helpers import REPO, SMOKE, experiment_trials, free_port, trial_rows, tuner

SBATCH = REPO / "cluster" / "slurm" / "search.sbatch"
NAME = "slurm"
LABELS = ("labeled_ratio=0.5", "labeled_ratio=1.0")   # smoke.yaml's two conditions


def _unavailable() -> str | None:
    missing = missing_programs()
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}; .ci/setup installs slurm-wlm and munge as root)"
    if os.geteuid() != 0:
        return "a Slurm of the test's own needs root (slurmd starts jobs as their user)"
    return None


@pytest.mark.parametrize("drop, message", [
    ("SLURM_JOB_ID", "error: not inside a Slurm job: submit this script with sbatch"),
    ("TUNER_NAME", "error: TUNER_NAME is not set"),
    ("TUNER_STORAGE", "error: TUNER_STORAGE is not set"),
    ("RAY_AUTH_TOKEN_PATH", "no Ray token; create it with `ray get-auth-token --generate`"),
    ("TUNER_SPACE", "error: TUNER_SPACE is not set: the search-space YAML of the new run slurm"),
])
def test_script_refuses_missing_settings_before_starting_anything(tmp_path, drop, message):
    """Each missing setting: one `error:` line naming it, exit 2, before Ray or the search starts."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "SLURM_JOB_ID": "1", "TUNER_NAME": NAME, "TUNER_STORAGE": str(tmp_path / "results"),
           "TUNER_SPACE": str(SMOKE), "TUNER_PYTHON": sys.executable, "PYTHONPATH": str(REPO),
           "RAY_AUTH_TOKEN_PATH": str(token), "HOME": str(tmp_path)}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop(drop)
    proc = subprocess.run(["bash", str(SBATCH)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [next(line for line in proc.stderr.splitlines() if message in line)]
    assert proc.stderr.startswith("error: ") and "Ray head" not in proc.stdout


@pytest.fixture
def slurm():
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))   # short: munge's and Ray's socket paths
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def job_env(slurm: SlurmCluster, store: Path, storage: Path, ray_tmp: Path) -> dict[str, str]:
    """What a user exports before `sbatch`: the run, the store as a URI (copied to the node by the
    job), token auth with a token of this test's own, and free ports for Ray on 127.0.0.2."""
    token = slurm.root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    ports = " ".join(f"--{option}={free_port(HOST)}" for option in (
        "object-manager-port", "node-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "runtime-env-agent-port", "metrics-export-port"))
    env = {k: v for k, v in slurm.env.items() if not k.startswith("RAY_")}
    env.update(TUNER_NAME=NAME, TUNER_SPACE=str(SMOKE), TUNER_STORE=f"file://{store}", TUNER_STORAGE=str(storage),
               TUNER_PYTHON=sys.executable, TUNER_RAY_PORT=str(free_port(HOST)),
               TUNER_RAY_ARGS=f"{ports} --include-dashboard=false", TUNER_STOP_WAIT="60",
               RAY_AUTH_TOKEN_PATH=str(token), RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(REPO),
               DEEPEMOCLUSTER_STORE_CACHE=str(slurm.root / "node-cache"),
               DEEPEMOCLUSTER_OPTUNA_CACHE=str(slurm.root / "optuna-cache"))
    return env


def wait_for(check, what: str, slurm: SlurmCluster, out: Path, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen in {timeout:.0f} s\n--- job output\n"
                         f"{out.read_text() if out.exists() else '(none)'}\n{slurm.logs()}")


def run_rows(storage: Path) -> dict[str, list[dict]]:
    """trial id -> its result rows, over the run's conditions."""
    return {trial: rows for label in LABELS for trial, rows in trial_rows(storage / NAME / label).items()}


def job_processes(ray_tmp: Path) -> list[int]:
    """Processes whose environment names this job's Ray temp folder: the job's Ray nodes and workers."""
    mark = f"RAY_TMPDIR={ray_tmp}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def command_line(pid: int) -> str:
    """A process's command line ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


STOPS = {   # how Slurm stops the job mid-search
    # the time-limit warning (`--signal=B:TERM@...`): SIGTERM to the batch script only; the job requeues itself
    "time-limit signal": ["scancel", "--signal=TERM", "--batch"],
    # a preemption by requeue: SIGTERM to every process of the job (Ray's too), SIGKILL after KillWait
    "requeue": ["scontrol", "requeue"],
}


@pytest.mark.slurm
@pytest.mark.parametrize("stop", [pytest.param("time-limit signal"),
                                  pytest.param("requeue", marks=pytest.mark.slow)])
def test_search_job_stopped_by_slurm_requeues_and_finishes_the_run(slurm, tiny_store, tmp_path, stop):
    storage = tmp_path / "results"
    out = tmp_path / "job.out"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    env = job_env(slurm, tiny_store, storage, ray_tmp)
    # the script as shipped; the command line overrides its GPU-partition settings for this 2-CPU node
    submit = subprocess.run(["sbatch", "--parsable", "--partition=debug", "--nodes=1", "--gpus-per-node=0",
                             "--cpus-per-task=2", f"--output={out}", str(SBATCH)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().split(";")[0]
    try:
        # mid-search: a trial has reported an epoch, and the run is far from done (8 trials x <= 4 epochs)
        wait_for(lambda: any(run_rows(storage).values()), "a trial's first epoch", slurm, out, 300)
        before = run_rows(storage)
        assert sum(len(r) for r in before.values()) < 8, before
        assert job_processes(ray_tmp), "the job's Ray processes are not recognisable by their RAY_TMPDIR"
        subprocess.run([*STOPS[stop], job_id], env=env, check=True, timeout=30)

        def requeued():   # past COMPLETING / REQUEUED: pending again (or already started)
            job = slurm.job(job_id)
            return job if job["Restarts"] == "1" and job["JobState"] in ("PENDING", "RUNNING", "COMPLETED") else None

        if wait_for(requeued, "the job requeued", slurm, out, 300)["JobState"] == "PENDING":
            # Slurm holds a requeued job back for cred_expire (120 s), until the node has forgotten the
            # stopped job's revoked credential: let it start once the node is idle, but in a later
            # second than the requeue. slurmd refuses a credential created in the second its job was
            # revoked ("Job N already killed, do not launch batch job"), and the job ends FAILED at once
            # (StartTime=now did, when the scheduler's next pass fell in the requeue's second)
            wait_for(slurm.node_idle, "the node idle after the stopped job", slurm, out, 120)
            slurm.scontrol("update", f"JobId={job_id}", "StartTime=now+1", check=False)

        def finished():
            job = slurm.job(job_id)
            return job if job["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None

        job = wait_for(finished, "the requeued job's end", slurm, out, 600)
        text = out.read_text()
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", \
            f"{job}\n--- the job's output:\n{text[-4000:]}\n--- Slurm's logs:\n{slurm.logs()[-3000:]}"
        assert job["Restarts"] == "1", (job, text)
        assert "SIGTERM: stopping the search" in text and "resuming run slurm" in text, text
        if stop == "time-limit signal":   # Ray was left alone: the driver stopped like Ctrl+C, then requeued
            assert "driver exited with 130" in text and f"requeueing job {job_id}" in text, text
        assert text.count("copying the store to each node") == 2, text
    finally:
        subprocess.run(["scancel", job_id], env=env, timeout=30)
        deadline = time.monotonic() + 15   # the job's end is recorded while its last processes are exiting
        while (left := {pid: command_line(pid) for pid in job_processes(ray_tmp)}) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:   # none, unless the job failed to stop its Ray: then the test ends them, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"Ray processes of the job outlived it: {left}"

    # every trial complete (run to its last epoch or stopped by ASHA), each epoch reported once, in order
    for label in LABELS:
        trials = experiment_trials(storage / NAME / label)
        assert len(trials) == 4 and all(t["status"] == "TERMINATED" for t in trials), (label, trials)
    after = run_rows(storage)
    for trial_id, rows in after.items():
        epochs = [r["training_iteration"] for r in rows]
        assert epochs == list(range(1, len(epochs) + 1)), (trial_id, epochs)
        assert 1 <= len(epochs) <= 4
        assert rows[:len(before.get(trial_id, []))] == before.get(trial_id, [])   # the first job's epochs kept
    # status and export agree
    status = tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=tmp_path, ray_tmp=str(tmp_path))
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    export_out = tmp_path / "export" / "best.yaml"
    export = tuner(["export", NAME, "--storage", str(storage), "--out", str(export_out)], cwd=tmp_path,
                   ray_tmp=str(tmp_path))
    assert export.returncode == 0, export.stderr
    exported = {}
    for path in export_out.parent.glob("best.*.rank1.yaml"):
        meta = yaml.safe_load(path.read_text())["metadata"]
        exported[meta["trial_id"]] = meta["metrics"]["val_ccc_mean"]
    for condition in summary["conditions"]:
        assert condition["study"] == "done" and condition["by_state"] == {"TERMINATED": 4}, condition
        assert condition["epochs_trained"] == sum(len(after[t["trial_id"]]) for t in
                                                  experiment_trials(storage / NAME / condition["condition"]))
        best = condition["best"]
        assert exported[best["trial_id"]] == pytest.approx(best["val_ccc_mean"]), (exported, best)
