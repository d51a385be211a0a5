"""A whole search with the store and the results in an S3 bucket (moto on loopback, the endpoint in
the URIs' query), on a local Ray: the driver is SIGKILLed at a fixed point of the search (tuner.search.hold: one
trial finished, the second held after epoch 2, the third held after its last epoch), the second trial's
orphaned worker trains epoch 3 after the driver died, the kill's cut upload of the third trial's last rows
is reproduced, then `resume` finishes the search from the bucket on a machine without the killed
driver's files (every epoch once in the rows, the TensorBoard curves and the Optuna study: docs/search.md
"What a resume owes each epoch"), `confirm` runs on it, and `status`, `export`, `tensorboard` and
`report` then work from the bucket alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tuner.runs.checkpoint_reports import REPORTED
from tune_helpers import SMOKE, check_study_matches_ray, end_session, kill_session, short_tmp, tuner_env

NAME = "inbucket"
LABEL = "labeled_ratio=1.0"
EPOCHS = 6


class Bucket:
    """The run's files as the bucket holds them (read with the test's own pyarrow client)."""

    def __init__(self, server, prefix: str):
        self.server, self.prefix = server, prefix

    def entries(self) -> list[tuple[dict, dict]]:
        """(trial, run metadata) entries of the newest experiment state the driver uploaded ([] before the first)."""
        exp = f"{self.prefix}/{NAME}/{LABEL}"
        states = sorted(n for n in self.server.files(exp) if n.startswith("experiment_state-"))
        if not states:
            return []
        try:
            state = json.loads(self.server.read(f"{exp}/{states[-1]}"))
        except (json.JSONDecodeError, FileNotFoundError):  # read while Ray's background sync was replacing it
            return []
        return [(json.loads(entry[0]), json.loads(entry[1])) for entry in state["trial_data"]]

    def trials(self) -> list[dict]:
        return [trial for trial, _ in self.entries()]

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
    """smoke.yaml with one condition, three trials on two CPUs and no early stopping."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["conditions"] = {"labeled_ratio": [1.0]}
    raw["budget"] = {"num_samples": 3, "max_epochs": EPOCHS}
    raw["scheduler"] = "none"
    path = tmp / "bucket.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Where the driver is killed (tuner.search.hold): the second trial to start holds after epoch 2, so the first one runs
# alone to its end and the third one starts and holds after its last epoch, before its function returns.
HELD = {2: 2, 3: EPOCHS}
SENTINEL = 99.0


def env(ray_tmp: str, cache: Path, machine: Path) -> dict[str, str]:
    """A driver's environment: its store cache and its own local Optuna journal cache (`machine`)."""
    return {**tuner_env(ray_tmp), "DEEPEMOCLUSTER_STORE_CACHE": str(cache),
            "DEEPEMOCLUSTER_OPTUNA_CACHE": str(machine / "optuna")}


def wait_for_holds(bucket: Bucket, proc: subprocess.Popen, timeout: float = 300) -> dict[str, dict]:
    """Poll until the bucket's experiment state shows one trial finished and the held ones RUNNING at the
    epochs they hold after; returns the trials by role: finished, second (held at 2), third (held at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it could be killed:\n" + proc.stderr.read()[-3000:]
        at = {(t["status"], (meta.get("last_result") or {}).get("training_iteration")): t
              for t, meta in bucket.entries()}
        roles = {"finished": ("TERMINATED", EPOCHS), "second": ("RUNNING", HELD[2]), "third": ("RUNNING", HELD[3])}
        if len(at) == 3 and all(state in at for state in roles.values()):
            return {role: at[state] for role, state in roles.items()}
        time.sleep(0.5)
    raise AssertionError(f"the bucket never showed the held trials: {bucket.entries()}")


def orphan_epoch(bucket: Bucket, trial: dict, epoch: int) -> None:
    """What a trial worker that outlived its driver leaves: the checkpoint of the epoch it was in, uploaded after
    the driver died, which no driver recorded. (On a local Ray the workers exit about a second after their
    raylet, killed with the driver's process group: whether one finishes its epoch first is a race, so the test
    writes that checkpoint itself: the previous one's files, its reports plus one for `epoch` with a value no
    trial reports, SENTINEL.)"""
    folder = f"{bucket.prefix}/{NAME}/{LABEL}/{trial['relative_logdir']}"
    last, orphan = f"checkpoint_{epoch - 2:06d}", f"checkpoint_{epoch - 1:06d}"
    for name in bucket.trial_files(trial):
        if name.startswith(last + "/"):
            data = bucket.server.read(f"{folder}/{name}")
            if name.endswith("/" + REPORTED):
                reports = json.loads(data)
                data = json.dumps([*reports, {**reports[-1], "epoch": float(epoch), "val_ccc_mean": SENTINEL}]).encode()
            bucket.server.write(f"{folder}/{orphan}/{name[len(last) + 1:]}", data)


def cut_last_upload(bucket: Bucket, trial: dict, epochs: int) -> None:
    """What a kill during Ray's upload of an experiment snapshot leaves: the snapshot's experiment state is in
    the bucket, the trial's rows after `epochs` and its TensorBoard events are not."""
    folder = f"{bucket.prefix}/{NAME}/{LABEL}/{trial['relative_logdir']}"
    kept = "".join(json.dumps(r) + "\n" for r in bucket.rows(trial)[:epochs])
    bucket.server.write(f"{folder}/result.json", kept.encode())
    fs = bucket.server.filesystem()
    for name in bucket.trial_files(trial):
        if name.startswith("events.out.tfevents."):
            fs.delete_file(f"{bucket.server.bucket}/{folder}/{name}")


def test_search_in_the_bucket_killed_resumed_then_read_from_the_bucket(s3_server, tiny_store, tmp_path, monkeypatch):
    from tuner.storage.store_sync import upload_store

    prefix = f"lifecycle-{os.getpid()}"
    store_uri = s3_server.uri(f"{prefix}/stores/tiny.store")
    storage = s3_server.uri(f"{prefix}/results")
    upload_store(tiny_store, store_uri)
    bucket = Bucket(s3_server, f"{prefix}/results")
    ray_tmp, cache, work = short_tmp(), tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    release = tmp_path / "release"
    hold = {"DEEPEMOCLUSTER_TEST_HOLD": ",".join(f"{k}:{e}" for k, e in HELD.items()),
            "DEEPEMOCLUSTER_TEST_RELEASE": str(release)}
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--space", str(space(tmp_path)), "--store",
                             store_uri, "--storage", storage, "--name", NAME, "--num-cpus", "2"], cwd=work,
                            env={**env(ray_tmp, cache, tmp_path / "head1"), **hold}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        held = wait_for_holds(bucket, proc)
        kill_session(proc)  # the driver, the local Ray it started and its trial workers
        finished = {held["finished"]["trial_id"]: bucket.rows(held["finished"])}
        orphan_epoch(bucket, held["second"], HELD[2] + 1)
        # the third trial's last upload is cut: its state (RUNNING at its final epoch) arrived, epochs 5-6 did not
        cut_last_upload(bucket, held["third"], EPOCHS - 2)

        # resumed as on a new head: the killed driver's local Optuna journal is not there, only the bucket's
        resumed = subprocess.run([sys.executable, "-m", "tuner", "resume", NAME, "--storage", storage,
                                  "--num-cpus", "2"], cwd=work, env=env(ray_tmp, cache, tmp_path / "head2"),
                                 capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert f"python -m tuner export {NAME} --storage" in resumed.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        end_session(proc.pid)

    after = {t["trial_id"]: t for t in bucket.trials()}
    assert len(after) == 3 and all(t["status"] == "TERMINATED" for t in after.values())
    for trial_id, rows in finished.items():  # the finished trial kept as it was, not trained again
        assert bucket.rows(after[trial_id]) == rows
    rows = {trial_id: bucket.rows(trial) for trial_id, trial in after.items()}
    for trial_id, trial_rows in rows.items():  # every epoch once: none lost with the driver, none twice
        assert [(r["training_iteration"], r["epoch"]) for r in trial_rows] == \
            [(e, e) for e in range(1, EPOCHS + 1)], (trial_id, trial_rows)
    second = rows[held["second"]["trial_id"]]   # continued from epoch 2's checkpoint, not from the orphan's epoch 3
    assert [r["iterations_since_restore"] for r in second] == [1, 2, 1, 2, 3, 4]
    assert SENTINEL not in [r["val_ccc_mean"] for r in second]
    for trial in after.values():  # checkpoints of every trial are in the bucket
        names = bucket.trial_files(trial)
        assert any(n.startswith("checkpoint_") and n.endswith("best_model.pt") for n in names), names
    # the Optuna study was continued: read from the bucket's journal on a third machine, it holds each of the
    # three Ray trials once, finished, linked to its Ray trial folder in the bucket, with one intermediate
    # value per epoch (the row's) and the best epoch of the rows
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import open_run

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "reader-optuna"))
    study = load_studies(open_run(NAME, storage))[LABEL]
    check_study_matches_ray(study, list(after))
    assert len(study.trials) == 3
    for t in study.trials:
        trial_rows = rows[t.user_attrs["ray_trial_id"]]
        assert t.state.name == "COMPLETE", t
        assert t.intermediate_values == {r["training_iteration"]: r["val_ccc_mean"] for r in trial_rows}
        best = max(trial_rows, key=lambda r: r["val_ccc_mean"])
        assert (t.user_attrs["best_epoch"], t.user_attrs["best_value"]) == (best["epoch"], best["val_ccc_mean"])
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
    # no trial looks stopped early (the third one ended under `resume` without training), the best is the rows'
    assert (status["conditions"][0]["stopped_early"], status["conditions"][0]["epochs_trained"]) == (0, 3 * EPOCHS)
    best_id, best_row = max(((t, r) for t, trial_rows in rows.items() for r in trial_rows),
                            key=lambda pair: pair[1]["val_ccc_mean"])
    assert (status["conditions"][0]["best"]["trial_id"], status["conditions"][0]["best"]["epoch"]) == \
        (best_id, best_row["training_iteration"])
    best = yaml.safe_load((reader / "best.yaml").read_text())
    assert (best["metadata"]["trial_id"], best["metadata"]["best_epoch"], best["metadata"]["epochs_trained"]) == \
        (best_id, best_row["training_iteration"], EPOCHS)
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

    for trial_id, trial in after.items():  # every trial's curve, across its event files: each epoch once
        steps = [event.step for path in (reader / "tb" / LABEL / trial["relative_logdir"]).glob("events.out.*")
                 for event in EventFileLoader(str(path)).Load()
                 if any(v.tag == "val/ccc_mean" for v in event.summary.value)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (trial_id, sorted(steps))
