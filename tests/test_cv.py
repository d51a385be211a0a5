"""Speaker-grouped cross-validation: folds, lock-step CVTrainer, exact resume, fold-model ensembles."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from model.cv import CVTrainer, fold_seed, make_trainer
from model.errors import UserError
from model.folds import assign_folds, cv_splits
from model.inference import evaluate_store, predict_files, resolve_models
from model.store import FeatureStore
from model.trainer import Trainer
from test_trainer import _comparable, config
from tuner.cli import main as cli


def test_folds_keep_groups_together_balanced_and_seeded():
    groups = np.repeat(np.arange(10), [9, 8, 7, 6, 5, 5, 4, 3, 2, 1])
    groups = np.concatenate([groups, [-1, -1, -1]])            # unknown: each its own group
    fold = assign_folds(groups, 3, seed=0)
    for g in range(10):
        assert len(set(fold[groups == g])) == 1               # a speaker never spans two folds
    sizes = np.bincount(fold, minlength=3)
    assert sizes.max() - sizes.min() <= 2 and sizes.sum() == len(groups)
    assert np.array_equal(fold, assign_folds(groups, 3, seed=0))
    with pytest.raises(UserError, match="cv_folds=5 needs at least 5 groups, but Train . Validation hold 3"):
        assign_folds(np.array([0, 0, 1, 2]), 5, seed=0)


def test_cv_splits_partition_train_and_validation_by_speaker(tiny_store):
    store = FeatureStore.open(tiny_store)
    pool = np.concatenate([store.ids("Train", labeled=True), store.ids("Validation", labeled=True)])
    splits = cv_splits(store, 3, "speaker", seed=0)
    vals = np.concatenate([s.validation for s in splits])
    assert sorted(vals) == sorted(pool)                          # every labeled Train/Validation utterance once
    assert not set(vals) & set(store.ids("Test1"))               # test never in a fold
    for s in splits:
        assert sorted(np.concatenate([s.train, s.validation])) == sorted(pool)
        assert not set(store.groups(s.train)) & set(store.groups(s.validation))
    with pytest.raises(UserError, match="no session ids"):
        cv_splits(store, 2, "session", seed=0)


def test_cv_trainer_reports_fold_means_and_each_fold(tiny_store):
    cv = make_trainer(config(epochs=2, cv_folds=2, unlabeled_pool=0), tiny_store)
    assert isinstance(cv, CVTrainer) and len(cv.folds) == 2
    assert [t.config.seed for t in cv.folds] == [fold_seed(0, 0), fold_seed(0, 1)]
    assert isinstance(make_trainer(config(), tiny_store), Trainer)
    m = cv.run_epoch()
    folds = [t.history[-1] for t in cv.folds]
    for key in ("val_ccc_mean", "val_ccc_act", "loss_total"):
        assert m[key] == pytest.approx(np.mean([f[key] for f in folds]))
    assert m["fold1_val_ccc_mean"] == folds[0]["val_ccc_mean"] and m["fold2_val_ccc_val"] == folds[1]["val_ccc_val"]
    assert m["time_epoch_s"] == pytest.approx(sum(f["time_epoch_s"] for f in folds))
    assert m["is_best"] and m["epoch"] == 1 == cv.epoch and cv.best_metric == m["val_ccc_mean"]


def test_cv_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_store, tmp_path):
    cfg = config(temporal="gru", cv_folds=2, labeled_ratio=0.75)
    straight = CVTrainer(cfg, tiny_store)
    expected = [straight.run_epoch() for _ in range(2)]
    first = CVTrainer(cfg, tiny_store)
    first.run_epoch()
    first.save_checkpoint(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck" / "best_model").iterdir()) == ["fold_1.pt", "fold_2.pt"]
    del first
    resumed = CVTrainer(cfg, tiny_store)
    resumed.load_checkpoint(tmp_path / "ck")
    assert resumed.epoch == 1
    assert _comparable(resumed.run_epoch()) == _comparable(expected[1])
    for a, b in zip(straight.folds, resumed.folds):
        sa, sb = a.network.state_dict(), b.network.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(UserError, match="cv_folds=2"):
        Trainer(config(temporal="gru", labeled_ratio=0.75), tiny_store).load_checkpoint(tmp_path / "ck")


def test_train_cli_writes_fold_models_that_evaluate_and_predict_average(tiny_store, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "--store", str(tiny_store), "--out", str(out), "--set", "cv_folds=2", "epochs=1",
                "width=0.25", "chunk_frames=16", "chunks_per_sentence=4", "batch_size=8", "num_clusters=4",
                "kmeans_iterations=5", "precision=fp32", "num_threads=1", "unlabeled_pool=0"]) == 0
    folder = out / "best_model"
    assert sorted(p.name for p in folder.iterdir()) == ["fold_1.pt", "fold_2.pt"]
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"fold1_val_ccc_mean", "fold2_val_ccc_mean", "val_ccc_mean"} <= line.keys()
    capsys.readouterr()

    members = resolve_models(folder)
    assert len(members) == 2
    single = [evaluate_store(m, tiny_store, "Test1") for m in members]
    ensemble = evaluate_store(folder, tiny_store, "Test1")
    assert ensemble["models"] == 2 and ensemble["utterances"] == single[0]["utterances"]
    assert cli(["evaluate", str(folder), "--store", str(tiny_store), "--split", "Test1", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["ccc_mean"] == pytest.approx(ensemble["ccc_mean"])

    store = FeatureStore.open(tiny_store)
    clips = [tiny_corpus / "Audio" / f"{n}.wav" for n in store.names(store.ids("Test1"))[:3]]
    each = [predict_files(m, clips)[0] for m in members]
    averaged, _ = predict_files(folder, clips)
    for row, a, b in zip(averaged, *each):
        for attr in ("act", "dom", "val"):
            assert row[attr] == pytest.approx((a[attr] + b[attr]) / 2, abs=1e-6)
            assert a[attr] != b[attr]                            # the folds are different models


def test_session_column_groups_folds(tiny_corpus, tmp_path):
    """A label table with a Session column: prepare keeps it, cv_group=session makes folds of sessions."""
    from model.store_build import prepare_store

    corpus = tmp_path / "corpus"
    (corpus / "Labels").mkdir(parents=True)
    (corpus / "Audio").symlink_to(tiny_corpus / "Audio")
    table = tiny_corpus / "Labels" / "labels_consensus.csv"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(corpus / "Labels" / "labels_consensus.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0].keys(), "Session"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "Session": f"S{i % 4}"})
    prepare_store(corpus, tmp_path / "s.store", workers=1, progress=False)
    store = FeatureStore.open(tmp_path / "s.store")
    assert store.meta["sessions"] == ["S0", "S1", "S2", "S3"]
    splits = cv_splits(store, 4, "session", seed=0)
    for s in splits:
        assert len(set(store.groups(s.validation, "session"))) == 1      # one session per fold
        assert not set(store.groups(s.train, "session")) & set(store.groups(s.validation, "session"))
    trainer = CVTrainer(config(epochs=1, cv_folds=2, cv_group="session", unlabeled_pool=0), store)
    assert trainer.folds[0].val_name == "fold 1/2 (session)"


def test_a_checkpoint_from_before_the_new_keys_resumes(tiny_store, tmp_path):
    """Checkpoints written before cv_folds, specaug_*, init_model ... existed hold none of them: defaults."""
    from model.checkpoint import read_checkpoint, write_checkpoint

    trainer = Trainer(config(epochs=2), tiny_store)
    trainer.run_epoch()
    state = trainer.checkpoint_state()
    for key in ("cv_folds", "cv_group", "specaug_prob", "attribute_weights", "init_model", "freeze_encoder_epochs"):
        del state["config"][key]
    write_checkpoint(tmp_path / "old", state)
    resumed = Trainer(config(epochs=2), tiny_store)
    resumed.load_checkpoint(tmp_path / "old")
    assert resumed.epoch == 1 and "cv_folds" not in read_checkpoint(tmp_path / "old")["config"]


def test_confirm_evaluates_a_cv_configuration_with_its_fold_ensemble(tiny_store, tmp_path):
    """Its validation is the best epoch's mean-over-folds val_ccc_mean, whatever metric picked that epoch."""
    from tuner.answers.confirm.trial import evaluate_seed
    from tuner.runs.confirm_files import EVALUATION_FILE

    cv = CVTrainer(config(epochs=1, cv_folds=2, unlabeled_pool=0), tiny_store)
    cv.selection = ("loss_total", "min")   # best_metric is then the best epoch's loss_total
    cv.run_epoch()
    cv.save_checkpoint(tmp_path / "ck")
    summary = evaluate_seed(cv, str(tmp_path / "ck"), ["Test1"])
    evaluation = json.loads((tmp_path / "ck" / EVALUATION_FILE).read_text())
    assert cv.best_metric == cv.best_metrics["loss_total"] != cv.best_metrics["val_ccc_mean"]
    assert evaluation["validation"] == {"ccc_mean": cv.best_metrics["val_ccc_mean"], "cv_folds": 2}
    assert evaluation["test"]["Test1"]["models"] == 2
    assert summary["confirm_Test1_ccc_mean"] == evaluation["test"]["Test1"]["ccc_mean"]
    assert evaluation["validation_split"] == "2-fold CV of Train + Validation (speaker)"


def test_fold_models_are_saved_at_the_epoch_of_the_best_fold_mean(tiny_store, tmp_path, monkeypatch):
    """Fold 1 is best alone at epoch 1, fold 2 at epoch 3, but their mean is best at epoch 2: every
    saved fold model is the epoch-2 one, the epoch the run reports as best."""
    from model.model_file import load_model

    scripted = {0: [0.6, 0.5, 0.1], 1: [0.1, 0.4, 0.5]}   # fold index -> val_ccc_mean per epoch
    cv = make_trainer(config(epochs=3, cv_folds=2, unlabeled_pool=0), tiny_store)
    for i, fold in enumerate(cv.folds):
        real = fold.validate

        def validate(real=real, fold=fold, values=scripted[i]):
            out = real()
            return {**out, "val_ccc_mean": values[fold.epoch]}   # fold.epoch: epochs finished before this one
        monkeypatch.setattr(fold, "validate", validate)
    for _ in range(3):
        cv.run_epoch()
    assert cv.best_epoch == 2 and cv.best_metric == pytest.approx(0.45)
    weights_at_2 = [{k: v.clone() for k, v in fold.best_state.items()} for fold in cv.folds]
    assert cv.save_best_model(tmp_path / "best_model")
    for i, fold in enumerate(cv.folds, start=1):
        network, info = load_model(tmp_path / "best_model" / f"fold_{i}.pt")
        assert info.metadata["epoch"] == 2, (i, info.metadata["epoch"])
        saved = network.state_dict()
        assert all(torch.equal(saved[k].cpu(), weights_at_2[i - 1][k]) for k in saved)
        assert fold.best_epoch == 2


def test_a_search_trials_metric_picks_the_epoch_of_the_fold_models(tiny_store, tmp_path, monkeypatch):
    """A search ranking by its own metric and mode (here val_ccc_mean, min) sets `selection`: the fold models
    saved are those of the epoch best by it (the folds' means 0.35, 0.45, 0.3: epoch 3)."""
    from model.model_file import load_model

    scripted = {0: [0.6, 0.5, 0.1], 1: [0.1, 0.4, 0.5]}
    cv = make_trainer(config(epochs=3, cv_folds=2, unlabeled_pool=0), tiny_store)
    cv.selection = ("val_ccc_mean", "min")
    for i, fold in enumerate(cv.folds):
        real = fold.validate

        def validate(real=real, fold=fold, values=scripted[i]):
            return {**real(), "val_ccc_mean": values[fold.epoch]}
        monkeypatch.setattr(fold, "validate", validate)
    reported = [cv.run_epoch() for _ in range(3)]
    assert [m["is_best"] for m in reported] == [True, False, True]
    assert cv.best_epoch == 3 and reported[-1]["best_val_ccc_mean"] == pytest.approx(0.3)
    assert cv.save_best_model(tmp_path / "best_model")
    assert [load_model(tmp_path / "best_model" / f"fold_{i}.pt")[1].metadata["epoch"] for i in (1, 2)] == [3, 3]
