"""One real search (smoke.yaml: two labeled-ratio conditions of 4 trials, ASHA) on a local 2-CPU Ray and
the tiny store, shared by the assertions below: early stopping, conditional parameters, one study per
condition, TensorBoard tags and HParams, status, export and training from the exported file."""
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

from tune_helpers import (SMOKE, experiment_trials, result_rows, searcher_study, short_tmp, tuner,
                          tuner_env)

NAME = "smoke"
CONDITIONS = ["labeled_ratio=0.5", "labeled_ratio=1.0"]


@pytest.fixture(scope="module")
def search(tiny_store, tmp_path_factory):
    """Run `python -m tuner run` once, killing one trial's process in its last epoch (Ray must retry it
    from its checkpoint); yields (workdir, storage, ray_tmp, stdout, killed trial id)."""
    work = tmp_path_factory.mktemp("tune_run")
    ray_tmp = short_tmp()
    storage = work / "results"
    # the store as a path relative to the driver's folder: trials run elsewhere and must still find it
    store = os.path.relpath(tiny_store, work)
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", "--space", str(SMOKE), "--store",
                             store, "--name", NAME, "--storage", str(storage), "--num-cpus", "2"],
                            cwd=work, env=tuner_env(ray_tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.communicate()), daemon=True)
    reader.start()
    try:
        killed = kill_a_trial_in_its_last_epoch(storage / NAME / CONDITIONS[0], proc)
        reader.join(timeout=400)
        assert not reader.is_alive(), "the run did not finish"
    finally:
        if proc.poll() is None:  # never leave a driver (and its Ray) behind
            os.killpg(proc.pid, signal.SIGKILL)
            reader.join(timeout=30)
    stdout, stderr = out[0]
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    yield work, storage, ray_tmp, stdout, killed
    shutil.rmtree(ray_tmp, ignore_errors=True)


def kill_a_trial_in_its_last_epoch(exp_dir: Path, proc, timeout: float = 300) -> str:
    """SIGKILL the process of a trial that has just checkpointed its 3rd of 4 epochs (ASHA has no rung at
    3, so it is in epoch 4). The trial process writes checkpoints straight into the run folder (result.json
    may lag: the driver syncs it), so the checkpoint folder is the timely signal; the pid comes from an
    earlier result row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for trial_dir in exp_dir.glob("trial_*"):
            if (trial_dir / "checkpoint_000002").exists() and not (trial_dir / "checkpoint_000003").exists():
                rows = result_rows(trial_dir)
                if rows:
                    os.kill(rows[0]["pid"], signal.SIGKILL)
                    return trial_dir.name.removeprefix("trial_")
        time.sleep(0.05)
    raise AssertionError("no trial reached its last epoch while the run was watched")


def all_trials(storage: Path) -> dict[str, list[dict]]:
    return {c: experiment_trials(storage / NAME / c) for c in CONDITIONS}


def test_every_trial_finished_and_asha_stopped_some_early(search):
    _, storage, _, stdout, _ = search
    space = yaml.safe_load(SMOKE.read_text())
    max_epochs = space["budget"]["max_epochs"]
    epochs = []
    for label, trials in all_trials(storage).items():
        assert len(trials) == space["budget"]["num_samples"], label
        for t in trials:
            assert t["status"] == "TERMINATED", (label, t["trial_id"])
            rows = result_rows(storage / NAME / label / t["relative_logdir"])
            # each epoch once, in order, the retried (killed) trial's too
            assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)), (label, t["trial_id"],
                                                                                 [r["epoch"] for r in rows])
            epochs.append(len(rows))
    assert max(epochs) == max_epochs           # some trials ran the whole budget
    assert min(epochs) < max_epochs            # ASHA stopped others early
    assert "Trial status" in stdout            # Ray's progress table was shown


def test_a_killed_trial_is_retried_from_its_checkpoint(search):
    _, storage, _, _, killed = search
    exp_dir = storage / NAME / CONDITIONS[0]
    state = json.loads(sorted(exp_dir.glob("experiment_state-*.json"))[-1].read_text())
    runtime = {json.loads(e[0])["trial_id"]: (json.loads(e[0]), json.loads(e[1])) for e in state["trial_data"]}
    static, dynamic = runtime[killed]
    assert static["status"] == "TERMINATED" and dynamic["num_failures"] >= 1
    rows = result_rows(exp_dir / static["relative_logdir"])
    # continued from the last checkpoint Ray took in (epoch 3's, or epoch 2's when the kill came before the
    # driver received epoch 3's report), not from scratch; result.json lists each epoch once (tuner.runs.result_log)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert len({r["pid"] for r in rows}) == 2               # the last epoch(s) ran in a new process


def test_conditional_parameter_present_exactly_when_condition_holds(search):
    _, storage, _, _, _ = search
    temporals = set()
    for trials in all_trials(storage).values():
        for t in trials:
            cfg = t["config"]
            temporals.add(cfg["temporal"])
            assert ("triplet_margin" in cfg) == (cfg["temporal"] == "triplet"), cfg
    assert temporals == {"gru", "triplet"}


def test_two_conditions_are_two_studies(search):
    _, storage, _, _, _ = search
    for label, trials in all_trials(storage).items():
        ratio = float(label.split("=")[1])
        assert {t["config"]["labeled_ratio"] for t in trials} == {ratio}
        study = searcher_study(storage / NAME / label)
        assert study.study_name == f"{NAME}/{label}"
        assert len(study.trials) == len(trials)   # this condition's trials only
        sampled = sorted(json.dumps(t.params, sort_keys=True) for t in study.trials)
        expected = sorted(json.dumps({k: v for k, v in t["config"].items() if k in t2.params}, sort_keys=True)
                          for t, t2 in zip(trials, study.trials))
        assert len(set(sampled)) == len(sampled) and len(expected) == len(sampled)


def test_tensorboard_curves_and_hparams(search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, storage, _, _, _ = search
    run_dir = storage / NAME
    root = EventAccumulator(str(run_dir))
    root.Reload()
    content = root.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    hparams = {h.name for h in experiment.hparam_infos}
    assert {"labeled_ratio", "temporal", "triplet_margin", "num_clusters", "lr_adam"} <= hparams
    assert "best/val_ccc_mean" in {m.name.tag for m in experiment.metric_infos}

    label = CONDITIONS[0]
    for t in experiment_trials(run_dir / label):
        acc = EventAccumulator(str(run_dir / label / t["relative_logdir"]))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        rows = result_rows(run_dir / label / t["relative_logdir"])
        assert {"val/ccc_mean", "val/ccc_act", "train/loss_ccc", "train/loss_total", "ssl/loss_ce",
                "cluster/min", "time/epoch_s", "best/val_ccc_mean"} <= tags, tags
        assert ("cluster/nmi" in tags) == (len(rows) > 1)  # NMI needs a previous epoch
        assert not any(tag.startswith("other/") for tag in tags), tags
        assert [e.value for e in acc.Scalars("val/ccc_mean")] == pytest.approx([r["val_ccc_mean"] for r in rows])
        session = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert session.hparams["temporal"].string_value == t["config"]["temporal"]
        assert session.hparams["labeled_ratio"].number_value == pytest.approx(0.5)
        assert ("triplet_margin" in session.hparams) == (t["config"]["temporal"] == "triplet")


def test_status_json_counts_trials_by_state(search):
    work, storage, ray_tmp, _, _ = search
    proc = tuner(["status", NAME, "--storage", str(storage), "--json"], cwd=work, ray_tmp=ray_tmp, timeout=120)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert [c["condition"] for c in status["conditions"]] == CONDITIONS
    for c in status["conditions"]:
        assert c["study"] == "done" and c["by_state"] == {"TERMINATED": 4}
        assert c["stopped_early"] == sum(1 for t in all_trials(storage)[c["condition"]]
                                         if len(result_rows(storage / NAME / c["condition"] / t["relative_logdir"])) < 4)
        best = c["best"]
        values = [max(r["val_ccc_mean"] for r in result_rows(storage / NAME / c["condition"] / t["relative_logdir"]))
                  for t in all_trials(storage)[c["condition"]]]
        assert best["val_ccc_mean"] == pytest.approx(max(values))
    text = tuner(["status", NAME, "--storage", str(storage)], cwd=work, ray_tmp=ray_tmp, timeout=120)
    assert "condition labeled_ratio=0.5: study done, 4/4 trials" in text.stdout


def test_run_printed_best_config_and_exported_it(search):
    _, storage, _, stdout, _ = search
    assert f"tensorboard --logdir {storage / NAME}" in stdout
    assert (storage / NAME / "best.yaml").exists()
    assert "best configs:" in stdout and "retrain:     python -m tuner train --config" in stdout


def test_tensorboard_command_points_at_the_run(search):
    work, storage, ray_tmp, _, _ = search
    proc = tuner(["tensorboard", NAME, "--storage", str(storage)], cwd=work, ray_tmp=ray_tmp, timeout=60)
    assert proc.returncode == 0 and f"--logdir {storage / NAME}" in proc.stdout


def test_export_then_train_from_the_exported_file(search, tiny_store):
    work, storage, ray_tmp, _, _ = search
    out = work / "export" / "best.yaml"
    proc = tuner(["export", NAME, "--storage", str(storage), "--top", "2", "--out", str(out)], cwd=work,
                 ray_tmp=ray_tmp, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written = [Path(p) for p in proc.stdout.split()]
    assert written[0] == out and len(written) == 1 + 2 * len(CONDITIONS)

    head = yaml.safe_load(out.read_text())
    meta = head["metadata"]
    status = {c["condition"]: c for c in json.loads(tuner(["status", NAME, "--storage", str(storage), "--json"],
                                                          cwd=work, ray_tmp=ray_tmp).stdout)["conditions"]}
    best_overall = max(status.values(), key=lambda c: c["best"]["val_ccc_mean"])
    assert meta["trial_id"] == best_overall["best"]["trial_id"]
    assert meta["metrics"]["val_ccc_mean"] == pytest.approx(best_overall["best"]["val_ccc_mean"])
    assert Path(meta["best_model"]).is_file()
    assert len(meta["files"]) == 2 * len(CONDITIONS)
    for path in written[1:]:
        doc = yaml.safe_load(path.read_text())
        assert doc["metadata"]["condition"]["labeled_ratio"] == doc["labeled_ratio"]
        assert doc["metadata"]["retrain"].startswith(f"python -m tuner train --config {path} ")
        assert doc["metadata"]["retrain"].endswith(" --set num_threads=1")  # smoke trials had 1 CPU

    # an existing file is kept without --force
    again = tuner(["export", NAME, "--storage", str(storage), "--out", str(out)], cwd=work, ray_tmp=ray_tmp)
    assert again.returncode == 2 and "exists already" in again.stderr and "--force" in again.stderr
    assert yaml.safe_load(out.read_text()) == head

    # the exported file trains unchanged
    train_out = work / "retrain"
    proc = tuner(["train", "--config", str(out), "--store", str(tiny_store), "--out", str(train_out),
                  "--set", "num_threads=1"], cwd=work, ray_tmp=ray_tmp, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    trained = yaml.safe_load((train_out / "config.yaml").read_text())
    for key, value in head.items():
        if key != "metadata":
            assert trained[key] == value, key
    rows = [json.loads(line) for line in (train_out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == head["epochs"]
    # same config, same seed, same thread count: the retrain reproduces the trial's best epoch
    best_epoch = int(meta["metrics"]["epoch"])
    assert rows[best_epoch - 1]["val_ccc_mean"] == pytest.approx(meta["metrics"]["val_ccc_mean"], abs=1e-6)


def test_resources_no_node_can_hold_fail_fast(tiny_store, tmp_path):
    ray_tmp = short_tmp()
    try:
        for resources, problem in (({"cpu": 1, "gpu": 0.5}, "resources.gpu=0.5 but the Ray cluster"),
                                   ({"cpu": 3, "gpu": 0}, "resources.cpu=3 but the largest node")):
            space = yaml.safe_load(SMOKE.read_text())
            space["resources"] = resources
            path = tmp_path / "space.yaml"
            path.write_text(yaml.safe_dump(space))
            proc = tuner(["run", "--space", str(path), "--store", str(tiny_store), "--name", "r",
                          "--storage", str(tmp_path / "results"), "--num-cpus", "2"], cwd=tmp_path,
                         ray_tmp=ray_tmp, timeout=180)
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert f"error: {path}: {problem}" in proc.stderr
            assert not (tmp_path / "results" / "r").exists()  # nothing written: the name stays free
            shutil.rmtree(tmp_path / "results", ignore_errors=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_each_condition_has_a_durable_optuna_study_of_its_trials(search):
    """optuna.load_study on the run's journal file: every Ray trial once, with its parameters, per-epoch
    values, final value, state (PRUNED when ASHA stopped it) and links to its folder and best model."""
    import optuna

    from model.model_file import load_model

    _, storage, _, _, _ = search
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(storage / NAME / "optuna.journal")))
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(journal)) == [f"{NAME}/{c}" for c in CONDITIONS]
    pruned = 0
    for label, trials in all_trials(storage).items():
        study = optuna.load_study(study_name=f"{NAME}/{label}", storage=journal)
        assert study.user_attrs["condition"] == {"labeled_ratio": float(label.split("=")[1])}
        by_ray_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
        assert len(study.trials) == len(trials) == len(by_ray_id)
        for ray_trial in trials:
            ot = by_ray_id[ray_trial["trial_id"]]
            rows = result_rows(storage / NAME / label / ray_trial["relative_logdir"])
            values = {r["training_iteration"]: r["val_ccc_mean"] for r in rows}
            assert ot.params == {k: ray_trial["config"][k] for k in ot.params} and "temporal" in ot.params
            assert ot.intermediate_values == pytest.approx(values)
            assert ot.value == pytest.approx(rows[-1]["val_ccc_mean"])
            assert ot.state.name == ("COMPLETE" if len(rows) == 4 else "PRUNED")
            pruned += ot.state.name == "PRUNED"
            assert ot.user_attrs["trial_folder"] == str(storage / NAME / label / ray_trial["relative_logdir"])
            best = max(rows, key=lambda r: r["val_ccc_mean"])
            assert ot.user_attrs["best_value"] == pytest.approx(best["val_ccc_mean"])
            assert ot.user_attrs["best_epoch"] == best["training_iteration"]
            # the newest checkpoint's best model (Ray keeps the newest checkpoints), the best epoch's model
            assert ot.user_attrs["best_model"] == str(storage / NAME / label / ray_trial["relative_logdir"]
                                                      / rows[-1]["checkpoint_dir_name"] / "best_model.pt")
            assert load_model(ot.user_attrs["best_model"])[1].metadata["epoch"] == best["training_iteration"]
    assert pruned >= 1   # ASHA stops some trials of smoke.yaml early


def test_dashboard_serves_the_studies_on_loopback(search):
    """`python -m tuner dashboard` starts optuna-dashboard on 127.0.0.1; its JSON API lists both studies."""
    import socket
    import urllib.request

    work, storage, ray_tmp, _, _ = search
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "dashboard", NAME, "--storage", str(storage),
                             "--port", str(port)], cwd=work, env=tuner_env(ray_tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, listed = time.monotonic() + 60, None
        while listed is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    listed = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.2)
        assert listed is not None, "the dashboard never answered"
        assert sorted(s["study_name"] for s in listed) == [f"{NAME}/{c}" for c in CONDITIONS]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{listed[0]['study_id']}", timeout=10) as r:
            assert len(json.loads(r.read())["trials"]) == 4
        proc.send_signal(signal.SIGTERM)   # stops it cleanly, as Ctrl+C does
        assert proc.wait(timeout=30) == 0
        assert "dashboard stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
