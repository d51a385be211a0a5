"""Transfer: init_model loads the encoder and the heads that fit, freeze_encoder_epochs, feature checks."""
from __future__ import annotations

import pytest
import torch

from conftest import REFERENCE_MODELS
from model.errors import UserError
from model.model_file import load_model
from model.trainer import Trainer
from test_trainer import config


@pytest.fixture(scope="module")
def reference_store(tiny_corpus, tmp_path_factory):
    """The tiny corpus with the reference's features and normalisation terms."""
    from model.store_build import prepare_store

    out = tmp_path_factory.mktemp("refstore") / "reference.store"
    prepare_store(tiny_corpus, out, features="reference", norm_terms=REFERENCE_MODELS / "NormTerm",
                  workers=1, dtype="float32", progress=False)
    return out


@pytest.fixture(scope="module")
def small_model(tiny_store, tmp_path_factory):
    """A model file from one epoch of a small gru run (act, val) on the tiny logmel store."""
    trainer = Trainer(config(epochs=1, attributes=["act", "val"]), tiny_store)
    trainer.run_epoch()
    path = tmp_path_factory.mktemp("init") / "small.pt"
    assert trainer.save_best_model(path)
    return path


def _equal(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(a[k].float(), b[k].float()) for k in keys)


def test_published_model_initialises_the_encoder_and_its_attribute_row(reference_models, reference_store, capsys):
    ref, _ = load_model(reference_models["act"])
    trainer = Trainer(config(temporal="gru", width=1.0, chunk_frames=62, chunks_per_sentence=11,
                             init_model=str(reference_models["act"])), reference_store)
    line = capsys.readouterr().err
    assert f"init_model {reference_models['act']}: loaded encoder" in line
    assert "attribute_head (act)" in line and "fresh temporal (gru; the model's is none)" in line
    mine, theirs = trainer.network.state_dict(), ref.state_dict()
    assert _equal(mine, theirs, "encoder.") and _equal(mine, theirs, "classifier.") and _equal(mine, theirs, "regressor.")
    assert torch.equal(mine["attribute_head.weight"][0], theirs["attribute_head.weight"][0])
    assert not torch.equal(mine["attribute_head.weight"][1], theirs["attribute_head.weight"][0])  # dom: fresh
    assert "attribute_head (dom, val)" in line and "top_layer" in line


def test_a_store_with_other_features_is_refused_naming_both(reference_models, tiny_store):
    with pytest.raises(UserError) as err:
        Trainer(config(width=1.0, chunk_frames=62, chunks_per_sentence=11, init_model=str(reference_models["act"])),
                tiny_store)
    message = str(err.value)
    assert "'reference'" in message and "'logmel'" in message and str(tiny_store) in message
    assert "--features reference --norm-terms" in message


def test_an_encoder_of_another_shape_is_refused(small_model, tiny_store):
    with pytest.raises(UserError, match=r"width=0.25, chunk_frames=16"):
        Trainer(config(width=0.5, init_model=str(small_model)), tiny_store)
    with pytest.raises(UserError, match="model file not found"):
        Trainer(config(init_model=str(small_model) + ".missing"), tiny_store)


def test_heads_that_fit_are_loaded_and_frozen_encoder_stays_fixed(small_model, tiny_store, tmp_path, capsys):
    source, _ = load_model(small_model)
    theirs = source.state_dict()
    trainer = Trainer(config(temporal="transformer", epochs=2, freeze_encoder_epochs=1,
                             init_model=str(small_model)), tiny_store)
    line = capsys.readouterr().err
    assert "fresh temporal (transformer; the model's is gru)" in line
    assert "attribute_head (act, val)" in line and "attribute_head (dom)" in line
    start = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    assert _equal(start, theirs, "encoder.") and _equal(start, theirs, "classifier.")
    assert torch.equal(start["attribute_head.weight"][2], theirs["attribute_head.weight"][1])   # val row

    trainer.run_epoch()                                   # epoch 1: encoder frozen (weights and BN statistics)
    after = trainer.network.state_dict()
    assert _equal(after, start, "encoder.")
    assert not _equal(after, start, "classifier.") and not _equal(after, start, "temporal.")
    trainer.run_epoch()                                   # epoch 2: the encoder trains
    assert not _equal(trainer.network.state_dict(), start, "encoder.")
    trainer.save_best_model(tmp_path / "best.pt")
    _, info = load_model(tmp_path / "best.pt")
    assert info.metadata["init_model"]["path"] == str(small_model) and "encoder" in info.metadata["init_model"]["loaded"]


def test_search_space_model_paths_become_absolute_and_must_exist(small_model, tmp_path, monkeypatch):
    from tuner.space.parse import SpaceError, absolute_model_paths, parse_space

    monkeypatch.chdir(small_model.parent)
    raw = {"parameters": {"init_model": {"choices": [small_model.name, None]}, "width": 0.25}}
    assert absolute_model_paths(raw, "space.yaml")
    assert raw["parameters"]["init_model"]["choices"] == [str(small_model.resolve()), None]
    assert not absolute_model_paths(raw, "space.yaml")                      # already absolute
    space = parse_space(raw, "space.yaml")
    assert [p.choices for p in space.parameters if p.name == "init_model"] == [[str(small_model.resolve()), None]]
    with pytest.raises(SpaceError, match=r"space.yaml: parameters.init_model: 'gone.pt': model file not found"):
        absolute_model_paths({"parameters": {"init_model": "gone.pt"}}, "space.yaml")
