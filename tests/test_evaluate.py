"""`python -m tuner evaluate` and model.inference.evaluate_store on the tiny synthetic store."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.config import TrainConfig
from model.errors import UserError
from model.features import FeatureSpec
from model.inference import evaluate_store
from model.model_file import ModelInfo, build_network, save_model
from model.store import FeatureStore
from tuner.cli import main as cli


def _model_for(store: FeatureStore, path, kind=None, norm_shift=0.0, temporal="gru"):
    """A small untrained model (seeded) saved with the store's feature spec, norm terms and label terms."""
    torch.manual_seed(3)
    config = TrainConfig(temporal=temporal, num_clusters=4, chunk_frames=24, chunks_per_sentence=4, width=0.25)
    network = build_network(config)
    with torch.no_grad():   # larger head weights than the init's N(0, 0.01), so predictions vary by utterance
        network.attribute_head.weight.normal_(0.0, 1.0)
        network.regressor[0].weight.normal_(0.0, 0.2)
    spec = dict(store.feature_spec)
    if kind is not None:
        spec["kind"] = kind
    terms = store.norm_terms
    info = ModelInfo(config, spec, terms.mean + norm_shift, terms.std, store.label_terms, {})
    save_model(path, network, info)
    return path, network, info


@pytest.fixture(scope="module")
def store(tiny_store) -> FeatureStore:
    return FeatureStore.open(tiny_store)


def _ccc(y, p):
    """CCC written out independently: 2 cov / (var y + var p + (mean y - mean p)^2), population moments."""
    keep = ~np.isnan(y)
    y, p = y[keep].astype(np.float64), p[keep].astype(np.float64)
    cov = ((y - y.mean()) * (p - p.mean())).mean()
    return 2 * cov / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)


def test_evaluate_command_prints_ccc_json(store, tmp_path, capsys):
    model, _, _ = _model_for(store, tmp_path / "m.pt")
    assert cli(["evaluate", str(model), "--store", str(store.path), "--split", "Validation", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"ccc_act", "ccc_dom", "ccc_val", "ccc_mean", "utterances"}
    assert result["utterances"] == len(store.ids("Validation", labeled=True)) >= 2
    for attr in ("act", "dom", "val"):
        assert -1.0 <= result[f"ccc_{attr}"] <= 1.0 and result[f"ccc_{attr}"] != 0.0
    assert result["ccc_mean"] == pytest.approx(np.mean([result[f"ccc_{a}"] for a in ("act", "dom", "val")]))


def test_default_split_is_test1(store, tmp_path, capsys):
    model, _, _ = _model_for(store, tmp_path / "m.pt")
    assert cli(["evaluate", str(model), "--store", str(store.path), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    n_test = len(store.ids("Test1", labeled=True))
    assert json.loads(captured.out)["utterances"] == n_test > 0
    assert ("a CCC needs at least 2" in captured.err) == (n_test < 2)


def test_evaluate_matches_a_per_utterance_loop(store, tmp_path):
    """Batched evaluation equals predicting each utterance on its own from the raw frames."""
    from model.chunking import chunk_frames

    _, network, info = _model_for(store, tmp_path / "m.pt")
    result = evaluate_store((network, info), store, split="Validation", batch_sentences=5)
    idx = store.ids("Validation", labeled=True)
    m, C = info.config.chunk_frames, info.config.chunks_per_sentence
    preds = []
    network.eval()
    for i in idx:
        row = store.index[i]
        frames = np.asarray(store.frames[row["offset"]:row["offset"] + row["length"]], dtype=np.float32)
        with torch.no_grad():
            out = network(chunk_frames(frames, [0], [len(frames)], m, C)).attributes
        preds.append(out.mean(dim=0).numpy())
    preds = np.array(preds, dtype=np.float64)
    labels = store.labels(idx, ["act", "dom", "val"])
    assert result["utterances"] == len(idx)
    for j, attr in enumerate(("act", "dom", "val")):
        mean, std = store.label_terms[attr]
        expected = _ccc(labels[:, j], preds[:, j] * std + mean)
        assert result[f"ccc_{attr}"] == pytest.approx(expected, abs=1e-5)
        assert abs(expected) > 1e-6      # a real, non-degenerate value is being compared
    with_preds = evaluate_store((network, info), store, split="Validation", batch_sentences=5, predictions=True)
    per_utt = with_preds.pop("predictions")
    assert with_preds == result
    assert list(per_utt["index"]) == list(idx)
    np.testing.assert_array_equal(per_utt["labels"], labels)
    for j, attr in enumerate(("act", "dom", "val")):
        mean, std = store.label_terms[attr]
        np.testing.assert_allclose(per_utt["preds"][:, j], preds[:, j] * std + mean, atol=1e-5)
        assert _ccc(per_utt["labels"][:, j], per_utt["preds"][:, j]) == result[f"ccc_{attr}"]


def test_single_attribute_model_reports_only_its_attribute(store, tmp_path):
    _, network, info = _model_for(store, tmp_path / "m.pt", temporal="none")
    info.config = info.config.replace(attributes=["val"])
    network = build_network(info.config)
    result = evaluate_store((network, info), store)
    assert set(result) == {"ccc_val", "ccc_mean", "utterances"} and result["ccc_mean"] == result["ccc_val"]


def test_mismatched_feature_kind_is_refused(store, tmp_path, capsys):
    other = "reference" if FeatureSpec.from_dict(store.feature_spec).kind == "logmel" else "logmel"
    model, _, _ = _model_for(store, tmp_path / "m.pt", kind=other)
    assert cli(["evaluate", str(model), "--store", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert f"expects {other!r} features" in err and str(store.path) in err


def test_mismatched_norm_terms_are_refused(store, tmp_path):
    model, _, _ = _model_for(store, tmp_path / "m.pt", norm_shift=0.5)
    with pytest.raises(UserError, match="normalised with different feature terms"):
        evaluate_store(model, store)


def test_unknown_split_is_refused(store, tmp_path, capsys):
    model, _, _ = _model_for(store, tmp_path / "m.pt")
    assert cli(["evaluate", str(model), "--store", str(store.path), "--split", "Test9"]) == 2
    err = capsys.readouterr().err
    assert "'Test9'" in err and "Test1" in err


def test_reference_store_evaluation_matches_prediction_from_audio(tiny_corpus, reference_models, tmp_path):
    """An imported reference model on a reference-feature store (its own NormTerm): the CCC from the
    store's frames equals the CCC of predicting the same utterances from their audio files."""
    from conftest import REFERENCE_MODELS
    from model.inference import predict_files
    from model.store_build import prepare_store

    out = tmp_path / "reference.store"
    prepare_store(tiny_corpus, out, features="reference", norm_terms=REFERENCE_MODELS / "NormTerm",
                  workers=1, dtype="float32", progress=False)
    store = FeatureStore.open(out)
    result = evaluate_store(reference_models["act"], store, split="Validation")
    idx = store.ids("Validation", labeled=True)
    rows, failures = predict_files(reference_models["act"], [tiny_corpus / "Audio" / f"{n}.wav" for n in store.names(idx)])
    assert failures == [] and result["utterances"] == len(rows) == len(idx)
    expected = _ccc(store.labels(idx, ["act"])[:, 0], np.array([r["act"] for r in rows]))
    assert result["ccc_act"] == pytest.approx(expected, abs=1e-4)
    assert set(result) == {"ccc_act", "ccc_mean", "utterances"}
