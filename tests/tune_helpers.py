"""Helpers shared by the Ray Tune tests: run the CLI in a subprocess with Ray kept in a short temp dir."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "search_spaces" / "smoke.yaml"


def tuner_env(ray_tmp: str) -> dict[str, str]:
    """Environment for `python -m tuner`: the repo importable by Ray's workers, Ray's files in `ray_tmp`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RAY_TMPDIR"] = ray_tmp
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)  # the CLI starts its own local Ray
    return env


def short_tmp() -> str:
    """Ray's socket paths must stay short: a fresh folder directly under /tmp."""
    return tempfile.mkdtemp(prefix="rt", dir="/tmp")


def tuner(args: list[str], cwd: Path, ray_tmp: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=tuner_env(ray_tmp),
                          capture_output=True, text=True, timeout=timeout, **kw)


def experiment_trials(exp_dir: Path) -> list[dict]:
    """Trial entries (status, config, trial_id, relative_logdir) of the newest experiment state file."""
    files = sorted(exp_dir.glob("experiment_state-*.json"))
    if not files:
        return []
    try:
        state = json.loads(files[-1].read_text())
    except json.JSONDecodeError:  # being rewritten
        return []
    return [json.loads(entry[0]) for entry in state["trial_data"]]


def result_rows(trial_dir: Path) -> list[dict]:
    """The complete rows of a trial's result.json."""
    from tuner.runs.checkpoint_reports import read_rows

    return read_rows(trial_dir / "result.json")


def trial_rows(exp_dir: Path) -> dict[str, list[dict]]:
    """trial id -> the complete rows of its result.json, for every trial of the experiment that has a folder."""
    return {t["trial_id"]: result_rows(exp_dir / t["relative_logdir"])
            for t in experiment_trials(exp_dir) if t.get("relative_logdir")}


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll `check` until it returns a true value, which is returned; AssertionError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def free_port(host: str) -> int:
    """A TCP port free on `host` now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def searcher_study(exp_dir: Path):
    """The durable Optuna study of the condition whose Ray experiment is `exp_dir` (RUN/<label>)."""
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import RunDir

    studies = load_studies(RunDir(exp_dir.parent.parent, exp_dir.parent.name))
    assert exp_dir.name in studies, f"no Optuna study for {exp_dir} (studies: {list(studies)})"
    return studies[exp_dir.name]


def session_processes(sid: int) -> list[int]:
    """Processes of session `sid` (Ray's trial workers get their own process group, not their own session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":   # after pid (comm): state ppid pgrp session; a zombie is gone
            pids.append(int(stat.parent.name))
    return pids


def kill_session(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL the driver's process group, then its trial workers, and wait until none is left."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    end_session(proc.pid, timeout)


def end_session(sid: int, timeout: float = 60) -> None:
    """SIGKILL every process left in session `sid` (a killed driver's trial workers) until none is left."""
    deadline = time.monotonic() + timeout
    while pids := session_processes(sid):
        assert time.monotonic() < deadline, f"processes {pids} of the killed driver's session survived"
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def check_study_matches_ray(study, ray_trial_ids) -> None:
    """Each Ray trial is exactly one study trial; any other study trial is one Ray forgot when its driver
    died (it finished after Ray's last snapshot), finished and listed in `trials_ray_lost`."""
    owners = [t.user_attrs["ray_trial_id"] for t in study.trials]
    assert all(owners.count(r) == 1 for r in ray_trial_ids), (owners, ray_trial_ids)
    extra = [t for t in study.trials if t.user_attrs["ray_trial_id"] not in set(ray_trial_ids)]
    assert all(t.state.is_finished() for t in extra)
    assert sorted(t.number for t in extra) == sorted(study.user_attrs.get("trials_ray_lost", []))


def command_processes(sid: int, ray_tmp: str) -> dict[int, str]:
    """pid -> command line of every live process of session `sid` (a command started with
    start_new_session=True: Ray's processes and trial workers stay in its session) and of every process whose
    command line mentions `ray_tmp` (the command's RAY_TMPDIR)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if fields[0] != "Z" and (int(fields[3]) == sid or ray_tmp in cmdline):   # a zombie is gone
            found[int(proc.name)] = cmdline
    return found
