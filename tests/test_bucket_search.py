"""A whole search with the store and the results in an S3 bucket (moto on loopback, the endpoint in
the URIs' query), on a local Ray: the driver is SIGKILLed mid-search, `resume` finishes it from the
bucket on a machine without the killed driver's files, `confirm` runs on it, and `status`, `export`,
`tensorboard` and `report` then work from the bucket alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tune_helpers import SMOKE, check_study_matches_ray, short_tmp, tuner_env

NAME = "inbucket"
LABEL = "labeled_ratio=1.0"
EPOCHS = 6


class Bucket:
    """The run's files as the bucket holds them (read with the test's own pyarrow client)."""

    def __init__(self, server, prefix: str):
        self.server, self.prefix = server, prefix

    def trials(self) -> list[dict]:
        """Trial entries of the newest experiment state the driver uploaded ([] before the first)."""
        exp = f"{self.prefix}/{NAME}/{LABEL}"
        states = sorted(n for n in self.server.files(exp) if n.startswith("experiment_state-"))
        if not states:
            return []
        try:
            state = json.loads(self.server.read(f"{exp}/{states[-1]}"))
        except json.JSONDecodeError:  # read while Ray's background sync was replacing it: try again later
            return []
        return [json.loads(entry[0]) for entry in state["trial_data"]]

    def rows(self, trial: dict) -> list[dict]:
        path = f"{self.prefix}/{NAME}/{LABEL}/{trial['relative_logdir']}/result.json"
        try:
            text = self.server.read(path).decode()
        except FileNotFoundError:
            return []
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a copy taken while Ray was writing it
                break
        return rows

    def trial_files(self, trial: dict) -> dict[str, int]:
        return self.server.files(f"{self.prefix}/{NAME}/{LABEL}/{trial['relative_logdir']}")



def space(tmp: Path) -> Path:
    """smoke.yaml with one condition, three trials and no early stopping: one is still running after
    the first two finished, which is where the driver is killed."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["conditions"] = {"labeled_ratio": [1.0]}
    raw["budget"] = {"num_samples": 3, "max_epochs": EPOCHS}
    raw["scheduler"] = "none"
    path = tmp / "bucket.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def env(ray_tmp: str, cache: Path, machine: Path) -> dict[str, str]:
    """A driver's environment: its store cache and its own local Optuna journal cache (`machine`)."""
    return {**tuner_env(ray_tmp), "DEEPEMOCLUSTER_STORE_CACHE": str(cache),
            "DEEPEMOCLUSTER_OPTUNA_CACHE": str(machine / "optuna")}


def wait_mid_search(bucket: Bucket, proc: subprocess.Popen, timeout: float = 300) -> list[dict]:
    """Poll the bucket until its experiment state shows a finished trial and a running one with a checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it could be killed:\n" + proc.stderr.read()[-3000:]
        trials = bucket.trials()
        done = [t for t in trials if t["status"] == "TERMINATED"]
        running = [t for t in trials if t["status"] == "RUNNING" and t.get("relative_logdir")
                   and any(n.startswith("checkpoint_") for n in bucket.trial_files(t))
                   and len(bucket.rows(t)) < EPOCHS - 1]
        if done and running:
            return trials
        time.sleep(0.5)
    raise AssertionError("the bucket never showed a finished and a running trial at once")


# Fails in about 1 of 3 runs, also on aadc87c (before session 3): the trial workers outlive the SIGKILLed
# driver and finish, so "mid-search" is often not mid-search; seen: a resumed trial's result.json ending
# before its last epoch, a trial not TERMINATED, a fourth trial. Kill and resume are also covered by
# test_tune_resume.py (local) and test_multinode.py (node loss, bucket checkpoints). Run: pytest -m racy.
@pytest.mark.racy
def test_search_in_the_bucket_killed_resumed_then_read_from_the_bucket(s3_server, tiny_store, tmp_path, monkeypatch):
    from tuner.store_sync import upload_store

    prefix = f"lifecycle-{os.getpid()}"
    store_uri = s3_server.uri(f"{prefix}/stores/tiny.store")
    storage = s3_server.uri(f"{prefix}/results")
    upload_store(tiny_store, store_uri)
    bucket = Bucket(s3_server, f"{prefix}/results")
    ray_tmp, cache, work = short_tmp(), tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--space", str(space(tmp_path)), "--store",
                             store_uri, "--storage", storage, "--name", NAME, "--num-cpus", "2"], cwd=work,
                            env=env(ray_tmp, cache, tmp_path / "head1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_mid_search(bucket, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait(timeout=30)
        before = bucket.trials()  # the last state the killed driver uploaded
        finished = {t["trial_id"]: bucket.rows(t) for t in before if t["status"] == "TERMINATED"}
        unfinished = [t["trial_id"] for t in before if t["status"] != "TERMINATED"]
        assert finished and unfinished

        # resumed as on a new head: the killed driver's local Optuna journal is not there, only the bucket's
        resumed = subprocess.run([sys.executable, "-m", "tuner", "resume", NAME, "--storage", storage,
                                  "--num-cpus", "2"], cwd=work, env=env(ray_tmp, cache, tmp_path / "head2"),
                                 capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert f"python -m tuner export {NAME} --storage" in resumed.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    after = {t["trial_id"]: t for t in bucket.trials()}
    assert len(after) == 3 and all(t["status"] == "TERMINATED" for t in after.values())
    for trial_id, rows in finished.items():  # finished trials kept as they were, not trained again
        assert bucket.rows(after[trial_id]) == rows
    restored = 0
    for trial_id in unfinished:  # continued from a checkpoint in the bucket: epoch 1 ran once
        rows = bucket.rows(after[trial_id])
        epochs = [r["epoch"] for r in rows]
        assert epochs.count(1) <= 1 and epochs[-1] == EPOCHS, (trial_id, epochs)
        restored += any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)
    assert restored >= 1  # the running trial did not start over
    for trial in after.values():  # checkpoints and TensorBoard events of every trial are in the bucket
        names = bucket.trial_files(trial)
        assert any(n.startswith("checkpoint_") and n.endswith("best_model.pt") for n in names), names
        assert any(n.startswith("events.out.tfevents.") for n in names), names
    # the Optuna study was continued: read from the bucket's journal on a third machine, it holds each of the
    # three Ray trials once (plus any trial Ray's snapshot forgot, listed as such), each finished and linked
    # to its Ray trial folder in the bucket
    from tuner.optuna_studies import load_studies
    from tuner.run_dir import open_run

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "reader-optuna"))
    study = load_studies(open_run(NAME, storage))[LABEL]
    check_study_matches_ray(study, list(after))
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in study.trials}
    assert set(states.values()) == {"COMPLETE"}, (states, unfinished)
    assert all(t.user_attrs["trial_folder"].endswith(storage[storage.index("?"):]) for t in study.trials)
    # the store was copied to this node once (one folder: the run's and the resume's trials shared it)
    assert [p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith(".")] == ["tiny.store"]
    assert not (work / "results").exists()  # nothing went to the local default storage

    # confirm (retrains the best config with a new seed and tests it) with the run in the bucket
    confirmed = subprocess.run([sys.executable, "-m", "tuner", "confirm", NAME, "--storage", storage, "--top", "1",
                                "--seeds", "1", "--num-cpus", "2"], cwd=work,
                               env=env(short_tmp(), tmp_path / "cache-confirm", tmp_path / "head3"),
                               capture_output=True, text=True, timeout=400)
    assert confirmed.returncode == 0, confirmed.stdout[-3000:] + confirmed.stderr[-3000:]
    assert "confirm.json" in s3_server.files(f"{prefix}/results/{NAME}/confirm")

    # status, export, tensorboard and report from the bucket alone: a fresh folder, no Ray, no cache
    reader = tmp_path / "reader"
    reader.mkdir()
    commands = {"report": ["report", NAME, "--storage", storage, "--out", str(reader / "report")],
                "status": ["status", NAME, "--storage", storage, "--json"],
                "export": ["export", NAME, "--storage", storage, "--out", str(reader / "best.yaml")],
                "tensorboard": ["tensorboard", NAME, "--storage", storage, "--mirror", str(reader / "tb")]}
    procs = {k: subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=reader, env=tuner_env(str(reader)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, args in commands.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, (k, stderr[-3000:])
        out[k] = stdout
    report = (reader / "report" / "report.md").read_text()
    assert all(t in report for t in after) or all(t[:8] in report for t in after), report[:2000]
    assert (reader / "report" / "report.html").stat().st_size > 0
    status = json.loads(out["status"])
    assert status["conditions"][0]["study"] == "done" and status["conditions"][0]["by_state"] == {"TERMINATED": 3}
    best = yaml.safe_load((reader / "best.yaml").read_text())
    ckpt = best["metadata"]["checkpoint"]
    assert ckpt.startswith(f"s3://tuner-test/{prefix}/results/{NAME}/{LABEL}/trial_")
    assert ckpt.endswith(storage[storage.index("?"):])  # the query stays at the end of every URI
    assert best["metadata"]["best_model"].split("?")[0].endswith("/best_model.pt")
    assert best["metadata"]["best_model"].split("?")[0].split(f"s3://tuner-test/{prefix}/results/")[1] in \
        {f"{NAME}/{LABEL}/{t['relative_logdir']}/{n}" for t in after.values() for n in bucket.trial_files(t)}
    assert f"--logdir {reader / 'tb'}" in out["tensorboard"]
    mirrored = sorted(p.relative_to(reader / "tb") for p in (reader / "tb").rglob("events.out.tfevents.*"))
    assert len(mirrored) >= 4  # the run's HParams summary and one file per trial at least
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for trial_id, trial in after.items():  # every trial's curve, across its event files (one per driver)
        steps = {event.step for path in (reader / "tb" / LABEL / trial["relative_logdir"]).glob("events.out.*")
                 for event in EventFileLoader(str(path)).Load()
                 if any(v.tag == "val/ccc_mean" for v in event.summary.value)}
        # events reach the bucket with Ray's experiment snapshots: a trial that finished just before the
        # kill may lack its last epoch there; every trial that finished under `resume` has all of them
        want = set(range(1, EPOCHS + 1)) if trial_id not in finished else set(range(1, EPOCHS))
        assert want <= steps <= set(range(1, EPOCHS + 1)), (trial_id, sorted(steps))
