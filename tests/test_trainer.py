"""The trainer: every variant trains, SSL pool, labeled ratio, resume equivalence, failures."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import BEST_MODEL_FILE, find_checkpoint, read_checkpoint
from model.config import TrainConfig
from model.errors import UserError
from model.model_file import load_model
from model.network import TEMPORAL_MODULES
from model.store import FeatureStore
from model.trainer import Trainer, TrainingDiverged, resolve_precision, stage_seed

FAST = dict(width=0.25, chunk_frames=16, chunks_per_sentence=4, batch_size=8, num_clusters=4,
            kmeans_iterations=5, precision="fp32", epochs=2, num_threads=1)
ALWAYS = {"epoch", "val_ccc_act", "val_ccc_dom", "val_ccc_val", "val_ccc_mean", "loss_total", "loss_ce",
          "loss_ccc", "nmi", "cluster_min", "cluster_max", "cluster_empty", "time_embed_s", "time_kmeans_s",
          "time_train_s", "time_validate_s", "time_epoch_s", "is_best", "chunks_per_s", "time_batch_s"}
TIMING = {k for k in ALWAYS if k.startswith("time_")} | {"chunks_per_s", "time_ssl_train_s"}


def config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**FAST, **changes})


def copy_store(src: Path, dst: Path, meta_edit=None, index_edit=None) -> Path:
    """A copy of a store (frames linked, not copied) with meta.json and/or index.npy edited."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "frames.npy":
            (dst / f.name).symlink_to(f.resolve())
        elif f.is_file():
            shutil.copy(f, dst / f.name)
    if meta_edit:
        meta = json.loads((dst / "meta.json").read_text())
        meta_edit(meta)
        (dst / "meta.json").write_text(json.dumps(meta))
    if index_edit:
        index = np.load(dst / "index.npy").copy()
        index_edit(index)
        np.save(dst / "index.npy", index)
    return dst


@pytest.mark.parametrize("temporal", TEMPORAL_MODULES)
def test_every_variant_trains_with_finite_metrics(tiny_store, temporal):
    trainer = Trainer(config(temporal=temporal), tiny_store)
    first, second = trainer.run_epoch(), trainer.run_epoch()
    assert trainer.epoch == 2 and (first["epoch"], second["epoch"]) == (1, 2)
    for m in (first, second):
        assert ALWAYS <= m.keys()
        assert ("loss_triplet" in m) == (temporal == "triplet")
        assert "ssl_loss_ce" in m and math.isfinite(m["ssl_loss_ce"])  # tiny_store has an unlabeled pool
        for key, value in m.items():
            if key != "nmi" or m["epoch"] > 1:
                assert math.isfinite(float(value)), (key, value)
        assert -1 <= m["val_ccc_mean"] <= 1 and m["loss_ce"] > 0
        assert 1 <= m["cluster_min"] <= m["cluster_max"]
        assert m["time_epoch_s"] >= m["time_train_s"] > m["time_batch_s"] > 0
    assert math.isnan(first["nmi"]) and 0 <= second["nmi"] <= 1   # no previous assignments at epoch 1
    assert first["is_best"]


def test_bf16_autocast_trains(tiny_store):
    trainer = Trainer(config(temporal="gru", precision="bf16", epochs=1), tiny_store)
    assert trainer.amp_dtype == torch.bfloat16
    m = trainer.run_epoch()
    assert math.isfinite(m["loss_total"]) and math.isfinite(m["val_ccc_mean"])
    assert resolve_precision("fp32", torch.device("cpu")) is None
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", torch.device("cpu"))


def test_ssl_stage_runs_only_with_a_pool(tiny_store):
    store = FeatureStore.open(tiny_store)
    pool = store.pool_ids()
    assert len(pool) > 0
    with_pool = Trainer(config(epochs=1), store)
    assert np.array_equal(with_pool.pool_ids, np.sort(pool))
    m = with_pool.run_epoch()
    assert m["ssl_sentences"] == len(pool) and math.isfinite(m["ssl_loss_ce"])

    without = Trainer(config(epochs=1, unlabeled_pool=0), store)
    m = without.run_epoch()
    assert len(without.pool_ids) == 0 and not any(k.startswith("ssl_") for k in m)

    capped = [Trainer(config(epochs=1, unlabeled_pool=5, seed=s), store).pool_ids for s in (0, 0, 1)]
    assert len(capped[0]) == 5 and set(capped[0]) <= set(pool)
    assert np.array_equal(capped[0], capped[1])          # seeded
    assert not np.array_equal(capped[0], capped[2])      # a different seed draws another subset


def test_labeled_ratio_keeps_a_fraction_and_pools_the_rest(tiny_store):
    store = FeatureStore.open(tiny_store)
    train = store.ids("Train", labeled=True)
    trainer = Trainer(config(labeled_ratio=0.5, epochs=1), store)
    kept = trainer.train_ids
    assert len(kept) == round(0.5 * len(train)) and set(kept) <= set(train)
    dropped = np.setdiff1d(train, kept)
    assert set(dropped) <= set(trainer.pool_ids) and set(store.pool_ids()) <= set(trainer.pool_ids)
    # labels are z-normalised with the terms of the kept subset, not the store's
    raw = store.labels(kept, ["act", "dom", "val"]).astype(np.float64)
    for j, a in enumerate(["act", "dom", "val"]):
        assert trainer.label_terms[a][0] == pytest.approx(np.nanmean(raw[:, j]), abs=1e-5)
        assert np.nanmean(trainer.train_labels[:, j]) == pytest.approx(0.0, abs=1e-5)
    m = trainer.run_epoch()
    assert m["train_sentences"] == len(kept) and m["ssl_sentences"] == len(trainer.pool_ids)


def test_single_attribute_head(tiny_store):
    trainer = Trainer(config(attributes=["act"], epochs=1), tiny_store)
    assert trainer.network.attribute_head.out_features == 1
    m = trainer.run_epoch()
    assert "val_ccc_act" in m and "val_ccc_dom" not in m and m["val_ccc_mean"] == m["val_ccc_act"]


def test_stage_seeds_differ_by_epoch_and_stage():
    seeds = {stage_seed(0, e, s) for e in range(1, 6) for s in (1, 2)}
    assert len(seeds) == 10 and stage_seed(3, 2, 1) == stage_seed(3, 2, 1)


def _comparable(metrics: dict) -> dict:
    """Metrics without timings, NaN as None (so that equal runs compare equal)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in metrics.items() if k not in TIMING}


@pytest.mark.parametrize("temporal", ["triplet", "none"])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_store, tmp_path, temporal):
    cfg = config(temporal=temporal, labeled_ratio=0.75)
    straight = Trainer(cfg, tiny_store)
    expected = [straight.run_epoch() for _ in range(2)]

    first = Trainer(cfg, tiny_store)
    assert _comparable(first.run_epoch()) == _comparable(expected[0])
    first.save_checkpoint(tmp_path / "ck")
    assert (tmp_path / "ck" / BEST_MODEL_FILE).is_file()
    del first

    resumed = Trainer(cfg, tiny_store)
    resumed.load_checkpoint(tmp_path / "ck")
    assert resumed.epoch == 1
    got = resumed.run_epoch()
    assert _comparable(got) == _comparable(expected[1])
    a, b = straight.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_epoch == straight.best_epoch
    assert _comparable(resumed.history[0]) == _comparable(straight.history[0])


def test_saving_checkpoints_and_best_models_does_not_change_the_run(tiny_store, tmp_path):
    plain = Trainer(config(), tiny_store)
    expected = [plain.run_epoch() for _ in range(2)]
    saving = Trainer(config(), tiny_store)
    got = [saving.run_epoch()]
    saving.save_best_model(tmp_path / "best.pt")
    saving.save_checkpoint(tmp_path / "ck")
    got.append(saving.run_epoch())
    assert [_comparable(m) for m in got] == [_comparable(m) for m in expected]


def test_checkpoint_rejects_another_config_and_unpicklable_content(tiny_store, tmp_path):
    trainer = Trainer(config(epochs=1), tiny_store)
    trainer.run_epoch()
    trainer.save_checkpoint(tmp_path / "ck")
    with pytest.raises(UserError, match="num_clusters=4"):
        Trainer(config(num_clusters=5), tiny_store).load_checkpoint(tmp_path / "ck")
    Trainer(config(epochs=3), tiny_store).load_checkpoint(tmp_path / "ck")  # epochs may change
    state = read_checkpoint(tmp_path / "ck")
    assert state["epoch"] == 1 and isinstance(state["rng"]["numpy"], dict)
    (tmp_path / "bad").mkdir()
    torch.save({"format": "deepemocluster-checkpoint/1", "x": Path("/")}, tmp_path / "bad" / "state.pt")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "bad")
    with pytest.raises(UserError, match="no checkpoint"):
        read_checkpoint(tmp_path / "nothing")


def test_fit_checkpoints_every_epoch_and_resumes(tiny_store, tmp_path):
    seen = []
    trainer = Trainer(config(epochs=3), tiny_store)
    summary = trainer.fit(lambda m: seen.append(m["epoch"]) or m["epoch"] == 2, tmp_path / "ck")
    assert seen == [1, 2] and summary["epochs"] == 2
    assert read_checkpoint(tmp_path / "ck")["epoch"] == 2
    network, info = load_model(tmp_path / "ck" / BEST_MODEL_FILE)
    assert info.label_terms == trainer.label_terms and info.metadata["epoch"] == trainer.best_epoch
    assert info.config.temporal == "gru"

    again = Trainer(config(epochs=3), tiny_store)
    summary = again.fit(lambda m: seen.append(m["epoch"]), tmp_path / "ck")
    assert seen == [1, 2, 3] and summary["epochs"] == 3 and len(again.history) == 3


def test_store_without_validation_split_is_an_error(tiny_store, tmp_path):
    def drop_validation(meta):
        meta["splits"] = ["Train" if s == "Train" else f"Test{i + 5}" for i, s in enumerate(meta["splits"])]
        meta["roles"]["validation"] = None

    store = copy_store(Path(tiny_store), tmp_path / "noval.store", meta_edit=drop_validation)
    with pytest.raises(UserError, match="no Validation .or Development. split"):
        Trainer(config(), store)


def test_development_split_is_accepted_as_validation(tiny_store, tmp_path):
    def rename(meta):
        meta["splits"] = ["Development" if s == "Validation" else s for s in meta["splits"]]
        meta["roles"]["validation"] = None   # an older store: found by name

    trainer = Trainer(config(epochs=1), copy_store(Path(tiny_store), tmp_path / "dev.store", meta_edit=rename))
    assert trainer.val_name == "Development" and len(trainer.val_ids) > 0


def test_too_few_labeled_chunks_for_k_is_an_error(tiny_store):
    with pytest.raises(UserError, match="fewer than num_clusters=100"):
        Trainer(config(num_clusters=100, labeled_ratio=0.5), tiny_store)


def test_attribute_without_labels_is_an_error(tiny_store, tmp_path):
    def no_valence(index):
        index["val"] = np.nan

    store = copy_store(Path(tiny_store), tmp_path / "noval_labels.store", index_edit=no_valence)
    with pytest.raises(UserError, match="attribute 'val' has no labels"):
        Trainer(config(), store)
    Trainer(config(attributes=["act", "dom"]), store)   # without it the store is fine


def test_nan_loss_stops_the_run_and_keeps_the_good_checkpoint(tiny_store, tmp_path, monkeypatch):
    trainer = Trainer(config(epochs=3), tiny_store)
    trainer.fit(checkpoint_dir=tmp_path / "ck", on_epoch=lambda m: True)   # one good epoch
    good = {k: v.clone() for k, v in trainer.best_state.items()}
    import model.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "ccc_loss", lambda p, t: torch.full((p.shape[1],), float("nan")))
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        trainer.fit(checkpoint_dir=tmp_path / "ck")
    assert isinstance(TrainingDiverged("x"), UserError) and trainer.failed
    assert read_checkpoint(tmp_path / "ck")["epoch"] == 1
    assert trainer.best_epoch == 1 and all(torch.equal(good[k], trainer.best_state[k]) for k in good)
    _, info = load_model(find_checkpoint(tmp_path / "ck") / BEST_MODEL_FILE)
    assert info.metadata["epoch"] == 1


def test_cuda_out_of_memory_names_the_config(tiny_store, monkeypatch):
    trainer = Trainer(config(epochs=1), tiny_store)

    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.network, "forward", boom)
    with pytest.raises(UserError) as info:
        trainer.run_epoch()
    message = str(info.value)
    for part in ("out of GPU memory", "batch_size=8", "m=16", "C=4", "width=0.25"):
        assert part in message


def test_a_checkpoint_keeps_the_metric_its_best_model_was_picked_by(tiny_store, tmp_path):
    """A search trial picks its best model by the search's metric (`selection`); continued from its checkpoint
    it keeps that metric, and from a checkpoint written before trials picked by their metric, val_ccc_mean
    (what that checkpoint's best so far was picked by)."""
    first = Trainer(config(), tiny_store)
    first.selection = ("loss_total", "min")
    first.run_epoch()
    first.save_checkpoint(tmp_path / "ck")
    resumed = Trainer(config(), tiny_store)
    resumed.load_checkpoint(tmp_path / "ck")
    assert resumed.selection == ("loss_total", "min") and resumed.best_metric == first.history[0]["loss_total"]
    older = {k: v for k, v in first.checkpoint_state().items() if k != "selection"}
    trial = Trainer(config(), tiny_store)
    trial.selection = ("loss_total", "min")
    trial.restore_state(older, "an older checkpoint")
    assert trial.selection == ("val_ccc_mean", "max")


@pytest.mark.parametrize("ratio,advice", [(1.0, "or use a store with more Train utterances"),
                                          (0.5, "or raise labeled_ratio=0.5")])
def test_too_many_clusters_says_what_can_be_changed(tiny_store, ratio, advice):
    with pytest.raises(UserError, match="fewer than num_clusters=4000") as caught:
        Trainer(config(num_clusters=4000, labeled_ratio=ratio), tiny_store)
    assert advice in str(caught.value)
    assert (ratio < 1) == ("raise labeled_ratio" in str(caught.value))   # 1.0 cannot be raised
