"""The run's durable Optuna studies without a Ray cluster: a searcher restored from Ray's snapshot takes
over the study trials started after that snapshot (no duplicates), and a bad --optuna-storage is refused."""
from __future__ import annotations

import json

import yaml

from tune_helpers import SMOKE

LABEL = "labeled_ratio=1.0"


def make_searcher(run, space):
    from tuner.search.experiment import make_searcher as make

    return make(space, {"labeled_ratio": 1.0}, 0, run, "journal")


def write_ray_snapshot(run, trials: dict[str, str]) -> None:
    """The newest experiment state Ray restores from: its trial table (trial id -> status)."""
    entries = [[json.dumps({"trial_id": tid, "status": status}), "{}"] for tid, status in trials.items()]
    run.write_bytes(json.dumps({"trial_data": entries}).encode(), LABEL, "experiment_state-2026-01-01_00-00-00.json")


def test_a_restored_searcher_takes_over_trials_started_after_the_snapshot(tmp_path):
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import parse_space

    space = parse_space(yaml.safe_load(SMOKE.read_text()), "smoke.yaml")
    run = RunDir(tmp_path, "r")
    run.write_manifest({"name": "r", "optuna_storage": "journal", "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": [{"label": LABEL, "values": {}, "state": "pending"}]})
    first = make_searcher(run, space)
    configs = {tid: first.suggest(tid) for tid in ("a", "b")}
    first.on_trial_result("a", {"val_ccc_mean": 0.1, "training_iteration": 1})
    first.on_trial_complete("a", {"val_ccc_mean": 0.2, "training_iteration": 4})
    first.save(str(tmp_path / "searcher.pkl"))          # Ray's snapshot: trials a (done) and b (running)
    lost = first.suggest("c")                           # asked after the snapshot, then the driver dies
    write_ray_snapshot(run, {"a": "TERMINATED", "b": "RUNNING"})

    restored = make_searcher(run, space)                # Tuner.restore: the searcher from tuner.pkl ...
    restored.restore(str(tmp_path / "searcher.pkl"))    # ... and its state from the snapshot
    assert restored.suggest("d") == lost                # the new trial takes over c's study trial
    assert restored.suggest("e") not in (lost, configs["a"], configs["b"])
    restored.on_trial_complete("b", {"val_ccc_mean": 0.3, "training_iteration": 4})

    study = load_studies(run)[LABEL]
    assert study.study_name == f"r/{LABEL}"
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert len(study.trials) == 4 and set(trials) == {"a", "b", "d", "e"}
    assert trials["a"].state.name == "COMPLETE" and trials["a"].intermediate_values == {1: 0.1, 4: 0.2}
    assert trials["b"].state.name == "COMPLETE" and trials["b"].value == 0.3
    assert trials["d"].state.name == trials["e"].state.name == "RUNNING"


def test_a_trial_in_ray_snapshot_but_not_in_the_searchers_is_finished_by_its_ray_trial(tmp_path):
    """A driver killed while Ray uploaded a snapshot can leave the snapshot's experiment state (trials a, b, c)
    next to the previous snapshot's searcher state (a, b): c is Ray's, restored and run by Ray, and its
    study trial must follow it to COMPLETE (not be left RUNNING, nor be handed to a new trial)."""
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import parse_space

    space = parse_space(yaml.safe_load(SMOKE.read_text()), "smoke.yaml")
    run = RunDir(tmp_path, "r")
    run.write_manifest({"name": "r", "optuna_storage": "journal", "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": [{"label": LABEL, "values": {}, "state": "pending"}]})
    first = make_searcher(run, space)
    for tid in ("a", "b"):
        first.suggest(tid)
    first.on_trial_complete("a", {"val_ccc_mean": 0.2, "training_iteration": 4})
    first.save(str(tmp_path / "searcher.pkl"))          # snapshot 1: its searcher state reached the storage
    first.suggest("c")                                  # snapshot 2's experiment state did, its searcher state not
    write_ray_snapshot(run, {"a": "TERMINATED", "b": "RUNNING", "c": "RUNNING"})

    restored = make_searcher(run, space)
    restored.restore(str(tmp_path / "searcher.pkl"))
    new = restored.suggest("d")                         # a new trial gets a new study trial, not c's
    for tid, first_value, value in (("b", 0.25, 0.3), ("c", 0.35, 0.4), ("d", 0.45, 0.5)):
        restored.on_trial_result(tid, {"val_ccc_mean": first_value, "training_iteration": 1})
        restored.on_trial_complete(tid, {"val_ccc_mean": value, "training_iteration": 4})

    study = load_studies(run)[LABEL]
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert len(study.trials) == 4 and set(trials) == {"a", "b", "c", "d"}
    assert {tid: t.state.name for tid, t in trials.items()} == dict.fromkeys("abcd", "COMPLETE")
    assert trials["c"].value == 0.4 and trials["c"].intermediate_values == {1: 0.35, 4: 0.4}
    assert trials["d"].params == {k: v for k, v in new.items() if k in trials["d"].params}


def test_bad_optuna_storage_url_is_refused_before_anything_is_written(tiny_store, tmp_path):
    from tune_helpers import short_tmp, tuner

    proc = tuner(["run", "--space", str(SMOKE), "--store", str(tiny_store), "--name", "x", "--storage",
                  str(tmp_path / "results"), "--optuna-storage", "not a url"], cwd=tmp_path, ray_tmp=short_tmp(),
                 timeout=120)
    assert proc.returncode == 2
    assert "error: --optuna-storage 'not a url': expected an RDB URL" in proc.stderr
    assert not (tmp_path / "results" / "x").exists()


def test_bucket_run_keeps_a_local_journal_and_copies_it_into_the_run(s3_server, tmp_path, monkeypatch):
    """With --storage s3://... the journal is written locally, uploaded into the run folder, and a
    machine without the local copy (another cache) reads the studies from the bucket's copy."""
    import uuid

    import optuna

    from tuner.runs import studies as optuna_studies
    from tuner.runs.studies import JOURNAL, journal_path, load_studies, open_storage, study_name, upload_journal
    from tuner.runs.run_dir import RunDir

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "driver-cache"))
    run = RunDir(s3_server.uri(f"results-{uuid.uuid4().hex[:6]}"), "b")
    run.write_manifest({"name": "b", "optuna_storage": "journal", "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": [{"label": "all", "values": {}, "state": "pending"}]})
    study = optuna.create_study(study_name=study_name("b", "all"), storage=open_storage(run, "journal"),
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    assert journal_path(run).is_relative_to(tmp_path / "driver-cache") and not run.exists(JOURNAL)
    upload_journal(run)
    assert run.exists(JOURNAL)

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "other-machine"))
    monkeypatch.setattr(optuna_studies, "_OPEN", {})   # a fresh process on another machine
    studies = load_studies(RunDir(run.storage, "b"))
    assert [t.value for t in studies["all"].trials] == [0.5]
    assert journal_path(run).is_relative_to(tmp_path / "other-machine")


def test_journal_uploads_of_the_studies_threads_do_not_overlap(tmp_path, monkeypatch):
    """Two threads upload one journal: the second reads it only after the first has written, so the
    bucket never ends with the copy that was read first."""
    import threading
    from types import SimpleNamespace

    from tuner.runs import studies as optuna_studies

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path))
    writing, release, calls, written = threading.Event(), threading.Event(), [], []

    def write_bytes(data, name):
        calls.append(data)
        if len(calls) == 1:                               # the first upload is slow
            writing.set()
            release.wait(10)
        written.append(data)

    run = SimpleNamespace(local=None, uri="s3://bucket/results/r", write_bytes=write_bytes,
                          read_manifest=lambda: {"run_id": "0" * 32})
    local = optuna_studies.journal_path(run)
    local.parent.mkdir(parents=True)
    local.write_bytes(b"1\n")
    first = threading.Thread(target=optuna_studies.upload_journal, args=(run,))
    first.start()
    assert writing.wait(10)
    local.write_bytes(b"1\n2\n")                          # the journal grows while the first upload writes
    second = threading.Thread(target=optuna_studies.upload_journal, args=(run,))
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive() and calls == [b"1\n"]       # waits for the first upload
    release.set()
    first.join(10)
    second.join(10)
    assert written == [b"1\n", b"1\n2\n"]                 # the longer journal is written last



def bucket_run(storage: str, name: str):
    """A new run's folder with its manifest (a new run id), as `run` writes it."""
    from tuner.runs.run_dir import RunDir, new_manifest
    from tuner.space.parse import parse_space

    space = parse_space(yaml.safe_load(SMOKE.read_text()), "smoke.yaml")
    run = RunDir(storage, name)
    run.write_manifest(new_manifest(space, SMOKE.read_text(), "store", name, "journal"))
    return run


def new_study(run, value: float):
    """The run's first condition's study, with one finished trial of `value`; returns the condition's label."""
    import optuna

    from tuner.runs.studies import open_storage, study_name

    label = run.read_manifest()["conditions"][0]["label"]
    study = optuna.create_study(study_name=study_name(run.name, label), storage=open_storage(run, "journal"),
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    return label


def test_a_new_bucket_run_never_inherits_a_deleted_runs_study(s3_server, tmp_path, monkeypatch):
    """Delete a bucket run and start a new one of the same name on the same driver machine: the local
    journal copy belongs to one run (its run id in run.json), so the new run's studies start empty."""
    import uuid

    from tuner.runs.studies import load_studies, upload_journal

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "driver-cache"))
    storage = s3_server.uri(f"results-{uuid.uuid4().hex[:6]}")
    old = bucket_run(storage, "b")
    label = new_study(old, 0.5)
    upload_journal(old)
    assert [t.value for t in load_studies(old)[label].trials] == [0.5]
    old_id = old.read_manifest().get("run_id")
    old.fs.delete_dir(old.path())                          # the user deletes the run ...

    new = bucket_run(storage, "b")                         # ... and starts a new one with its name
    assert load_studies(new) == {}
    assert new.read_manifest().get("run_id") != old_id


def test_a_journal_upload_stops_at_the_last_complete_line(s3_server, tmp_path, monkeypatch):
    """The upload may read the local journal while another thread appends a line: the bucket gets the
    complete lines only, so a driver that resumes on another machine (fetches the bucket's journal and
    appends to it) reads its study back (after a half line, its first line would be 'Invalid log format')."""
    import uuid

    import optuna

    from tuner.runs import studies as optuna_studies
    from tuner.runs.studies import JOURNAL, journal_path, load_studies, upload_journal
    from tuner.runs.run_dir import RunDir

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "driver-cache"))
    run = bucket_run(s3_server.uri(f"results-{uuid.uuid4().hex[:6]}"), "b")
    label = new_study(run, 0.5)
    with open(journal_path(run), "ab") as f:
        f.write(b'{"op_code":4,"worker_id":"')         # a line half-written by another thread
    upload_journal(run)

    monkeypatch.setenv("DEEPEMOCLUSTER_OPTUNA_CACHE", str(tmp_path / "other-machine"))
    monkeypatch.setattr(optuna_studies, "_OPEN", {})       # a driver on another machine resumes the run
    resumed = RunDir(run.storage, "b")
    load_studies(resumed)[label].add_trial(optuna.trial.create_trial(value=0.7, params={}, distributions={}))
    monkeypatch.setattr(optuna_studies, "_OPEN", {})       # and a reader after it
    assert [t.value for t in load_studies(resumed)[label].trials] == [0.5, 0.7]
    assert run.read_bytes(JOURNAL).endswith(b"}\n")           # the bucket's copy: complete lines only


def test_epochs_a_killed_driver_recorded_after_its_snapshot_are_replaced_when_trained_again(tmp_path):
    """Ray's snapshot named trial a's checkpoint of epoch 2; the killed driver had recorded epochs 3-4 (epoch 3
    its best) in the study. The restored trial trains epochs 3-4 again: their new values replace the old ones,
    and the best epoch is judged again from them."""
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import parse_space

    space = parse_space(yaml.safe_load(SMOKE.read_text()), "smoke.yaml")
    run = RunDir(tmp_path, "r")
    run.write_manifest({"name": "r", "optuna_storage": "journal", "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": [{"label": LABEL, "values": {}, "state": "pending"}]})
    first = make_searcher(run, space)
    first.suggest("a")
    for epoch, value in ((1, 0.1), (2, 0.2)):
        first.on_trial_result("a", {"val_ccc_mean": value, "training_iteration": epoch})
    first.save(str(tmp_path / "searcher.pkl"))          # the snapshot: a at epoch 2
    for epoch, value in ((3, 0.5), (4, 0.3)):           # recorded after it, then the driver dies
        first.on_trial_result("a", {"val_ccc_mean": value, "training_iteration": epoch})
    write_ray_snapshot(run, {"a": "RUNNING"})

    restored = make_searcher(run, space)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"val_ccc_mean": 0.25, "training_iteration": 3})
    restored.on_trial_complete("a", {"val_ccc_mean": 0.35, "training_iteration": 4})

    trial = load_studies(run)[LABEL].trials[0]
    assert trial.state.name == "COMPLETE" and trial.value == 0.35
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.25, 4: 0.35}
    assert (trial.user_attrs["best_epoch"], trial.user_attrs["best_value"]) == (4, 0.35)


def test_the_best_model_attribute_names_the_newest_checkpoint_once_the_metric_has_a_value(tmp_path):
    """Ray keeps a trial's newest checkpoints, each holding the best model so far: `best_model` follows the
    newest checkpoint, not the best epoch's (deleted three epochs later), and is set only once the (first)
    metric had a value (before, the checkpoint holds no best model; a multi-objective search's result may
    lack it)."""
    from tuner.runs.studies import load_studies
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import parse_space

    raw = {**yaml.safe_load(SMOKE.read_text()), "metric": ["val_ccc_mean", "nmi"], "mode": "max",
           "scheduler": {"type": "none"}, "searcher": {"type": "multi_objective", "seed": 0}}
    space = parse_space(raw, "smoke.yaml")
    run = RunDir(tmp_path, "r")
    run.write_manifest({"name": "r", "optuna_storage": "journal", "metrics": space.metrics, "modes": space.modes,
                        "conditions": [{"label": LABEL, "values": {}, "state": "pending"}]})
    searcher = make_searcher(run, space)
    searcher.suggest("a")

    def attrs(epoch: int, value: float | None) -> dict:
        result = {"training_iteration": epoch, "checkpoint_dir_name": f"checkpoint_{epoch - 1:06d}", "nmi": 0.1,
                  "config": {}}
        searcher.on_trial_result("a", result if value is None else {**result, "val_ccc_mean": value})
        return load_studies(run)[LABEL].trials[0].user_attrs

    assert "best_model" not in attrs(1, None)
    assert attrs(2, 0.5)["best_model"] == run.child_uri(LABEL, "trial_a", "checkpoint_000001", "best_model.pt")
    later = attrs(3, 0.2)
    assert later["best_model"] == run.child_uri(LABEL, "trial_a", "checkpoint_000002", "best_model.pt")
    assert (later["best_epoch"], later["best_value"]) == (2, 0.5)
