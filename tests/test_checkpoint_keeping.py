"""Which trial checkpoints a search keeps (tuner.experiment CHECKPOINTS_KEPT): the most recent ones, so that
the checkpoint Ray's last experiment snapshot names still exists when a killed driver is resumed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tune_helpers import REPO, short_tmp, tuner_env

SCORES = [0.5, 0.6, 0.7, 0.4, 0.3]   # epochs 3's is the best; epochs 4 and 5 are worse than the first three

# make_tuner as `run` builds it, with a trainable that reports SCORES as val_ccc_mean, a checkpoint each epoch
SCRIPTED_SEARCH = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    from ray import tune
    import tuner.experiment as experiment
    from tuner.optuna_studies import JOURNAL_STORAGE
    from tuner.run_dir import RunDir
    from tuner.search_space import load_space

    scores = json.loads(sys.argv[3])

    def scripted(config):
        for epoch, score in enumerate(scores, start=1):
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "epoch").write_text(str(epoch))
                tune.report({"val_ccc_mean": score, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))

    experiment.make_trainable = lambda space, store, **params: scripted
    space, run = load_space(sys.argv[1]), RunDir(sys.argv[2], "keep")
    experiment._prepare_env()
    experiment.start_ray(None, num_cpus=1)
    run.write_manifest(experiment.start_manifest(space, "", "no-store", run.name, JOURNAL_STORAGE, False))
    experiment.make_tuner(space, {}, 0, run, "no-store", JOURNAL_STORAGE).fit()
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
    from tuner.experiment import CHECKPOINTS_KEPT

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    done = subprocess.run([sys.executable, "-c", SCRIPTED_SEARCH, str(space), str(tmp_path / "runs"),
                           json.dumps(SCORES)], cwd=REPO, env=tuner_env(short_tmp()), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = [p for p in (tmp_path / "runs" / "keep").glob("*/*") if p.is_dir() and p.name.startswith("trial_")]
    assert len(trials) == 1, trials
    kept = sorted(p for p in trials[0].glob("checkpoint_*"))
    epochs = [int((p / "epoch").read_text()) for p in kept]
    newest = list(range(len(SCORES) - CHECKPOINTS_KEPT + 1, len(SCORES) + 1))
    assert epochs == newest, f"kept the checkpoints of epochs {epochs}, expected the newest ones {newest}"
