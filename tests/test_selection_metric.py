"""The metric that picks a run's best model (a search trial's `selection`) is one the run reports: a Trainer
refuses, before training, a metric its configuration (or its store) never reports, and an epoch that lacks the
metric anyway is an error naming it, never a run that ends without a best model; a search by nmi (no value in
epoch 1) waits for its first value. One rule (model.metrics beats) decides what beats the best so far, for the
trainer, the result rows and the Optuna study."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import yaml

from model.cv import make_trainer
from model.errors import UserError
from model.store import FeatureStore
from model.trainer import Trainer
from test_trainer import config, copy_store
from tune_helpers import SMOKE, short_tmp, tuner

NEVER_REPORTED = [   # (case, config changes, metric, what the message says of the configuration)
    ("triplet loss of a gru", {"temporal": "gru"}, "loss_triplet", "temporal='gru'"),
    ("CCC of an attribute not trained", {"attributes": ["act", "dom"]}, "val_ccc_val", "attributes=['act', 'dom']"),
    ("SSL loss without a pool", {"unlabeled_pool": 0}, "ssl_loss_ce", "unlabeled_pool=0"),
    ("nmi in one epoch", {"epochs": 1}, "nmi", "epochs=1"),
]


@pytest.mark.parametrize("case,changes,metric,why", NEVER_REPORTED, ids=[c[0] for c in NEVER_REPORTED])
def test_a_metric_the_configuration_never_reports_cannot_pick_the_best_model(tiny_store, case, changes, metric, why):
    trainer = Trainer(config(**changes), tiny_store)
    with pytest.raises(UserError) as info:
        trainer.select_best_by(metric, "min")
    assert str(info.value).startswith(f"the metric {metric!r} that picks the best model is never reported: {why}")
    assert trainer.selection == ("val_ccc_mean", "max")


def pool_less_store(tiny_store, tmp_path):
    """A copy of the tiny store whose unlabeled utterances (pool and unlabeled Train) are in its Test split."""
    store = FeatureStore.open(tiny_store)
    test, train = store.split_code(store.roles["test"][0]), store.split_code(store.roles["train"])

    def move(index):
        unlabeled = (index["split"] == -1) | ((index["split"] == train) & ~index["labeled"])
        index["split"][unlabeled] = test
    return copy_store(tiny_store, tmp_path / "no-pool.store", index_edit=move)


def test_the_ssl_loss_cannot_pick_the_best_model_of_a_run_without_unlabeled_utterances(tiny_store, tmp_path):
    store = pool_less_store(tiny_store, tmp_path)
    assert len(FeatureStore.open(store).pool_ids()) == 0
    with pytest.raises(UserError) as info:
        Trainer(config(), store).select_best_by("ssl_loss_ce", "min")
    assert str(info.value) == ("the metric 'ssl_loss_ce' that picks the best model is never reported: this run has "
                               "no unlabeled utterances (the store has no unlabeled pool and labeled_ratio=1.0 drops "
                               "no labels), so no SSL stage")
    half = Trainer(config(labeled_ratio=0.5), store)   # the labels it drops make a pool
    half.select_best_by("ssl_loss_ce", "min")
    assert half.selection == ("ssl_loss_ce", "min")


def test_a_cross_validated_run_refuses_a_metric_its_folds_never_report(tiny_store):
    cv = make_trainer(config(cv_folds=2, temporal="cnn"), tiny_store)
    with pytest.raises(UserError, match="'loss_triplet' that picks the best model is never reported: temporal='cnn'"):
        cv.select_best_by("loss_triplet", "min")
    assert cv.selection == ("val_ccc_mean", "max")


def test_a_metric_the_run_reports_picks_its_best_epoch(tiny_store):
    trainer = Trainer(config(temporal="triplet", epochs=2), tiny_store)
    trainer.select_best_by("loss_triplet", "min")
    trainer.fit()
    losses = [m["loss_triplet"] for m in trainer.history]
    assert trainer.best_state is not None and trainer.best_metric == min(losses)
    assert trainer.best_epoch == 1 + losses.index(min(losses))


def test_an_epoch_without_the_selection_metric_is_an_error_naming_it(tiny_store, tmp_path):
    """Defence in depth: a selection set without the check (here directly) still never ends a run silently
    without a best model; the epoch that lacks the metric stops it, naming the metric."""
    trainer = Trainer(config(temporal="gru", epochs=1), tiny_store)
    trainer.selection = ("loss_triplet", "min")
    with pytest.raises(UserError) as info:
        trainer.fit(checkpoint_dir=tmp_path / "ck")
    message = str(info.value)
    assert message.startswith("epoch 1 does not report 'loss_triplet', the metric that picks the best model (it "
                              "reports "), message
    assert "val_ccc_mean" in message and message.endswith("no best model could be kept")


def test_nmi_picks_from_the_second_epoch(tiny_store):
    """nmi is NaN in epoch 1 (no previous clusters): reported, so no error, and the best is from epoch 2."""
    trainer = Trainer(config(epochs=2), tiny_store)
    trainer.select_best_by("nmi", "max")
    first, second = trainer.run_epoch(), trainer.run_epoch()
    assert math.isnan(first["nmi"]) and not first["is_best"] and second["is_best"] and trainer.best_epoch == 2


BEATS = [   # (value, best, mode, beats?): None or NaN never beats; anything beats None or NaN
    (2.0, 1.0, "max", True), (2.0, 1.0, "min", False), (1.0, 2.0, "min", True), (1.0, 1.0, "max", False),
    (1.0, None, "max", True), (1.0, None, "min", True), (1.0, math.nan, "max", True), (-math.inf, None, "max", True),
    (None, 1.0, "max", False), (math.nan, 1.0, "max", False), (math.nan, None, "min", False),
    (None, None, "max", False), (np.float64(3.0), 2.0, "max", True),
]


@pytest.mark.parametrize("value,best,mode,expected", BEATS)
def test_one_rule_says_what_beats_the_best_so_far(value, best, mode, expected):
    from model.metrics import beats

    assert beats(value, best, mode) == expected


def search(tmp_path, store, **changes):
    """`run` of the smoke space with `changes`, one condition (labeled_ratio 1.0), on `store`."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(conditions={"labeled_ratio": [1.0]}, **changes)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    ray_tmp = short_tmp()
    try:
        return tuner(["run", "--space", space, "--store", str(store), "--name", "r", "--storage",
                      str(tmp_path / "results"), "--num-cpus", "2"], tmp_path, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_search_by_nmi_waits_for_its_first_value(tmp_path, tiny_store):
    """nmi has no value in epoch 1 (left out of that report): the study and ASHA wait for epoch 2 instead of
    failing on the missing key, and every trial keeps a best model."""
    proc = search(tmp_path, tiny_store, metric="nmi", budget={"num_samples": 2, "max_epochs": 2})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = sorted((tmp_path / "results" / "r" / "labeled_ratio=1.0").glob("trial_*"))
    assert len(trials) == 2 and all(list(t.glob("checkpoint_*/best_model.pt")) for t in trials)


def test_a_search_whose_metric_a_store_never_reports_ends_on_a_configuration_error(tmp_path, tiny_store):
    """The space cannot know the store: ssl_loss_ce on a store without unlabeled utterances (labeled_ratio 1.0)
    is refused by each trial as a configuration error (recorded, not retried), and the search exits 2 naming
    it (before: Ray's OptunaSearch failed on the result without the metric, an internal error, exit 1)."""
    proc = search(tmp_path, pool_less_store(tiny_store, tmp_path), metric="ssl_loss_ce", mode="min",
                  budget={"num_samples": 1, "max_epochs": 1}, scheduler="none")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "'ssl_loss_ce' that picks the best model is never reported" in errors[0], proc.stderr
    assert "1 trial(s) failed on it, not retried" in errors[0]
