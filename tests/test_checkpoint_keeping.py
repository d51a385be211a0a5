"""Which trial checkpoints a search keeps (tuner.search.experiment CHECKPOINTS_KEPT): the most recent ones, so that
the checkpoint Ray's last experiment snapshot names still exists when a killed driver is resumed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tune_helpers import REPO, kill_session, short_tmp, tuner_env, wait_until

SCORES = [0.5, 0.6, 0.7, 0.4, 0.3]   # epochs 3's is the best; epochs 4 and 5 are worse than the first three

# make_tuner as `run` builds it (`run`), or Tuner.restore as `resume` does (`resume`), with a trainable that
# reports SCORES as val_ccc_mean and a checkpoint each epoch. With a GATE folder, a trial that did not start
# from a checkpoint holds after epoch 4 until GATE/release exists, then reports epoch 5, writes GATE/epoch-5
# and holds until it is killed; a restored trial writes GATE/restored-<epoch of its checkpoint>.
SCRIPTED_SEARCH = textwrap.dedent("""
    import json, sys, tempfile, time
    from pathlib import Path
    from ray import tune
    import tuner.search.experiment as experiment
    from tuner.runs.studies import JOURNAL_STORAGE
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import load_space

    what, scores, gate = sys.argv[3], json.loads(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else ""

    def wait_for(path):
        while not path.exists():
            time.sleep(0.05)

    def scripted(config):
        start = 0
        if tune.get_checkpoint() is not None:
            with tune.get_checkpoint().as_directory() as folder:
                start = int(Path(folder, "epoch").read_text())
            Path(gate, f"restored-{start}").touch()
        for epoch, score in list(enumerate(scores, start=1))[start:]:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "epoch").write_text(str(epoch))
                tune.report({"val_ccc_mean": score, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))
            if gate and start == 0 and epoch == 4:
                wait_for(Path(gate, "release"))
            if gate and start == 0 and epoch == 5:
                Path(gate, "epoch-5").touch()
                wait_for(Path(gate, "never"))

    experiment.make_trainable = lambda space, store, **params: scripted
    space, run = load_space(sys.argv[1]), RunDir(sys.argv[2], "keep")
    experiment._prepare_env()
    experiment.start_ray(None, num_cpus=1)
    if what == "run":
        run.write_manifest(experiment.start_manifest(space, "", "no-store", run.name, JOURNAL_STORAGE, False))
        experiment.make_tuner(space, {}, 0, run, "no-store", JOURNAL_STORAGE).fit()
    else:
        results = tune.Tuner.restore(run.child_uri("all"), trainable=scripted, resume_unfinished=True,
                                     resume_errored=True).fit()
        print(json.dumps({"errors": [str(e)[-300:] for e in results.errors],
                          "epochs": [r.metrics.get("epoch") for r in results]}))
""")

SPACE = """\
metric: val_ccc_mean
mode: max
budget: {num_samples: 1, max_epochs: 5}
scheduler: {type: none}
searcher: {type: random, seed: 0}
resources: {cpu: 1, gpu: 0, max_concurrent_trials: 1}
parameters:
  lr_adam: {low: 1.0e-4, high: 1.0e-2, log: true}
"""


def test_the_newest_checkpoints_are_kept_so_the_last_snapshots_checkpoint_survives_worse_epochs(tmp_path):
    """Ray forces an experiment snapshot once a trial has reported CHECKPOINTS_KEPT checkpoints since the last
    one, so the checkpoint a snapshot names is among the trial's CHECKPOINTS_KEPT newest until the next
    snapshot: those must be kept, whatever their scores. Kept by score (3 best + latest, the old setting),
    the checkpoint of epoch 4 (the latest until epoch 5) is deleted at epoch 5 and a resume from a
    snapshot taken after epoch 4 cannot restore the trial."""
    from tuner.search.experiment import CHECKPOINTS_KEPT

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    done = subprocess.run([sys.executable, "-c", SCRIPTED_SEARCH, str(space), str(tmp_path / "runs"), "run",
                           json.dumps(SCORES)], cwd=REPO, env=tuner_env(short_tmp()), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = [p for p in (tmp_path / "runs" / "keep").glob("*/*") if p.is_dir() and p.name.startswith("trial_")]
    assert len(trials) == 1, trials
    kept = sorted(p for p in trials[0].glob("checkpoint_*"))
    epochs = [int((p / "epoch").read_text()) for p in kept]
    newest = list(range(len(SCORES) - CHECKPOINTS_KEPT + 1, len(SCORES) + 1))
    assert epochs == newest, f"kept the checkpoints of epochs {epochs}, expected the newest ones {newest}"



def snapshot_epoch(exp: Path) -> int | None:
    """The last epoch the newest experiment snapshot records for the (one) trial."""
    for state in sorted(exp.glob("experiment_state-*.json"))[-1:]:
        try:
            entry = json.loads(state.read_text())["trial_data"][0]
        except (json.JSONDecodeError, KeyError, IndexError):   # being rewritten
            return None
        return json.loads(entry[1]).get("last_result", {}).get("training_iteration")
    return None


def test_a_driver_killed_after_worse_epochs_resumes_the_trial_from_its_snapshots_checkpoint(tmp_path):
    """The snapshot names the checkpoint of epoch 4 (0.4, worse than epochs 1-3); the trial reports epoch 5
    (worse again) and the driver is SIGKILLed before Ray's next snapshot: the resumed trial restores from
    epoch 4's checkpoint and finishes. Kept by score, that checkpoint was deleted at epoch 5 and the trial
    errored on every restore ("Could not recover from checkpoint as it does not exist")."""
    space, runs, gate = tmp_path / "space.yaml", tmp_path / "runs", tmp_path / "gate"
    space.write_text(SPACE)
    gate.mkdir()
    ray_tmp = short_tmp()
    args = [sys.executable, "-c", SCRIPTED_SEARCH, str(space), str(runs)]
    driver = subprocess.Popen([*args, "run", json.dumps(SCORES), str(gate)], cwd=REPO, env=tuner_env(ray_tmp),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        exp = runs / "keep" / "all"
        wait_until(lambda: snapshot_epoch(exp) == 4, "a snapshot naming epoch 4's checkpoint")
        (gate / "release").touch()   # just after a snapshot: the next one is Ray's period (>= 10 s) away
        wait_until((gate / "epoch-5").exists, "epoch 5")
        [trial] = list(exp.glob("trial_*"))
        wait_until((trial / "checkpoint_000004").exists, "epoch 5's checkpoint")
        time.sleep(1)   # Ray deletes what it does not keep as it registers the checkpoint
    finally:
        kill_session(driver)
    assert snapshot_epoch(exp) == 4, "Ray saved a snapshot after epoch 5 before the kill: nothing was tested"
    resumed = subprocess.run([*args, "resume", json.dumps(SCORES), str(gate)], cwd=REPO,
                             env=tuner_env(short_tmp()), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert outcome == {"errors": [], "epochs": [5]}, outcome
    assert (gate / "restored-4").exists()


LOSS_SPACE = """\
metric: loss_total      # not what the trainer picks by default (val_ccc_mean)
mode: min
budget: {num_samples: 2, max_epochs: 5}
scheduler: {type: none}
searcher: {type: random, seed: 0}
resources: {cpu: 1, gpu: 0, max_concurrent_trials: 2}
parameters:
  temporal: gru
  num_clusters: {low: 2, high: 4}
  chunk_frames: 16
  chunks_per_sentence: 4
  lr_adam: {low: 1.0e-3, high: 3.0e-2, log: true}
  width: 0.125
  batch_size: 8
  kmeans_iterations: 5
  embed_batch_chunks: 512
  precision: fp32
  seed: 0
"""


def model_epoch(path: str) -> int:
    from model.model_file import load_model

    return int(load_model(path)[1].metadata["epoch"])


def test_export_and_study_name_the_best_epochs_model_by_the_searchs_metric(tiny_store, tmp_path):
    """A search on loss_total (min): each trial's study attribute `best_model` and the exported `best_model`
    are files that exist after Ray deleted older checkpoints (5 epochs, 3 kept) and hold the model of the
    trial's best epoch by loss_total, the epoch the study and the export record."""
    import optuna
    import yaml

    from tune_helpers import searcher_study, tuner

    space = tmp_path / "space.yaml"
    space.write_text(LOSS_SPACE)
    storage, ray_tmp = tmp_path / "runs", short_tmp()
    done = tuner(["run", "--space", str(space), "--store", str(tiny_store), "--name", "loss", "--storage",
                  str(storage), "--num-cpus", "2"], cwd=tmp_path, ray_tmp=ray_tmp, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [exp] = [p for p in (storage / "loss").iterdir() if p.is_dir() and any(p.glob("trial_*"))]
    study = searcher_study(exp)
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        best_epoch = min(trial.intermediate_values, key=trial.intermediate_values.get)
        assert trial.user_attrs["best_epoch"] == best_epoch
        assert model_epoch(trial.user_attrs["best_model"]) == best_epoch, trial.user_attrs
    out = tmp_path / "best.yaml"
    exported = tuner(["export", "loss", "--storage", str(storage), "--out", str(out)], cwd=tmp_path,
                     ray_tmp=ray_tmp, timeout=120)
    assert exported.returncode == 0, exported.stderr
    meta = yaml.safe_load(out.read_text())["metadata"]
    assert model_epoch(meta["best_model"]) == meta["best_epoch"] == int(meta["metrics"]["epoch"])
    best = min(study.trials, key=lambda t: t.user_attrs["best_value"])
    assert meta["trial_id"] == best.user_attrs["ray_trial_id"]
