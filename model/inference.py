"""Prediction with a trained model: from audio files, and evaluation (CCC) on a feature store split.

A sentence's prediction is the mean of its C chunk predictions, mapped back to the 1..7 scale with
the model's label terms. Chunks of many sentences go through the network together.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import numpy as np
import torch

from model.audio import load_audio_checked
from model.chunking import chunk_frames, make_chunks
from model.corpora import ATTRIBUTES
from model.devices import resolve_device
from model.errors import UserError
from model.features import SHORT_FRAMES, FeatureSpec, NormTerms, extract
from model.metrics import ccc
from model.model_file import ModelInfo, load_model
from model.network import DeepEmoCluster

ModelLike = Union[str, Path, tuple[DeepEmoCluster, ModelInfo]]
BATCH_SENTENCES = 64


def resolve_model(model: ModelLike, device: str | torch.device = "cpu") -> tuple[DeepEmoCluster, ModelInfo]:
    """A model file path or a (network, info) pair, as an eval-mode network on `device` and its info."""
    device = resolve_device(device)
    if isinstance(model, (str, Path)):
        network, info = load_model(model, device)
    else:
        network, info = model
        network = network.to(device)
    return network.eval(), info


MODEL_SUFFIX = ".pt"


def resolve_models(model, device: str | torch.device = "cpu") -> list[tuple[DeepEmoCluster, ModelInfo]]:
    """A model file, a folder of model files (an ensemble, e.g. a CV run's fold models), a (network, info)
    pair or a list of them, as eval-mode networks on `device`; an ensemble's members must share their
    features and attributes (their predictions are averaged)."""
    if isinstance(model, list):
        members = [resolve_model(m, device) for m in model]
        source = "ensemble"
    elif isinstance(model, (str, Path)) and Path(model).is_dir():
        files = sorted(Path(model).glob(f"*{MODEL_SUFFIX}"))
        if not files:
            raise UserError(f"{model}: the folder holds no model files (*{MODEL_SUFFIX}); expected a model file "
                            "or a folder of fold models written by a cv_folds run")
        members = [resolve_model(f, device) for f in files]
        source = str(model)
    else:
        return [resolve_model(model, device)]
    first = members[0][1]
    for i, (_, info) in enumerate(members[1:], start=1):
        same_terms = np.allclose(info.norm_mean, first.norm_mean) and np.allclose(info.norm_std, first.norm_std)
        if info.feature_spec != first.feature_spec or not same_terms \
                or list(info.config.attributes) != list(first.config.attributes):
            raise UserError(f"{source}: member {i + 1} was trained on other features or attributes than member 1 "
                            f"({info.feature_spec.get('kind')}, {info.config.attributes} vs "
                            f"{first.feature_spec.get('kind')}, {first.config.attributes}); an ensemble's models "
                            "must come from one store")
    return members


def label_scale(info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per model attribute, in the order of the network's outputs."""
    missing = [a for a in info.config.attributes if a not in info.label_terms]
    if missing:
        raise UserError(f"model has no label terms for attribute(s) {', '.join(missing)}")
    terms = [info.label_terms[a] for a in info.config.attributes]
    return np.array([m for m, _ in terms], dtype=np.float64), np.array([s for _, s in terms], dtype=np.float64)


@contextmanager
def full_fp32_cudnn() -> Iterator[None]:
    """cuDNN convolutions and RNNs in full fp32 (no TF32) inside the block, so GPU predictions match CPU ones."""
    backends = (torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    saved = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "ieee"
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


def predict_chunks(network: DeepEmoCluster, chunks: torch.Tensor, C: int) -> np.ndarray:
    """Sentence predictions [n, A] (normalised scale) from their chunks [n*C, 1, m, n_mels]."""
    device = next(network.parameters()).device
    with torch.inference_mode(), full_fp32_cudnn() if device.type == "cuda" else nullcontext():
        out = network(chunks.to(device)).attributes     # [n*C, A]
    return out.view(-1, C, out.shape[-1]).mean(dim=1).double().cpu().numpy()


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most `size` items."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_files(model, paths: Iterable[str | Path], device: str | torch.device = "cpu",
                  batch_sentences: int = BATCH_SENTENCES,
                  notes: dict[str, str] | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Predict each audio file: rows {'file', attr: value on 1..7} and failures (path, reason).

    `model` is anything `resolve_models` takes; an ensemble's predictions are averaged on the 1..7 scale.
    A file `prepare` would list as implausible or short (model.audio.load_audio_checked, SHORT_FRAMES) is
    predicted, and why it is doubtful is put in `notes` (path -> text) when given."""
    members = resolve_models(model, device)
    info = members[0][1]
    spec = FeatureSpec.from_dict(info.feature_spec)
    terms = NormTerms(info.norm_mean, info.norm_std)
    rows: list[dict] = []
    failures: list[tuple[str, str]] = []

    def features() -> Iterator[tuple[str, np.ndarray]]:
        for path in paths:
            try:
                wave, doubts = load_audio_checked(path)
                feats = terms.normalise(extract(wave, spec.kind))
            except (UserError, ValueError) as exc:  # unreadable, corrupt or empty audio
                failures.append((str(path), str(exc)))
                continue
            if len(feats) < SHORT_FRAMES:
                doubts.append(f"{len(feats)} frames < {SHORT_FRAMES} (one chunk): padded")
            if doubts and notes is not None:
                notes[str(path)] = "; ".join(doubts)
            yield str(path), feats

    for batch in _batches(features(), batch_sentences):
        lengths = np.array([len(f) for _, f in batch], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        frames = np.concatenate([f for _, f in batch])
        preds = np.mean([_predict_member(net, inf, lambda m, C: chunk_frames(frames, offsets, lengths, m, C))
                         for net, inf in members], axis=0)
        for (name, _), values in zip(batch, preds):
            rows.append({"file": name, **{a: float(v) for a, v in zip(info.config.attributes, values)}})
    return rows, failures


def _predict_member(network: DeepEmoCluster, info: ModelInfo, chunks) -> np.ndarray:
    """One model's sentence predictions on the 1..7 scale; `chunks(m, C)` cuts the batch for its m and C."""
    m, C = info.config.chunk_frames, info.config.chunks_per_sentence
    mean, std = label_scale(info)
    return predict_chunks(network, chunks(m, C), C) * std + mean


def predict_by_attribute(choice: dict[str, Any], paths: Iterable[str | Path], device: str | torch.device = "cpu",
                         batch_sentences: int = BATCH_SENTENCES,
                         notes: dict[str, str] | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Like predict_files, each attribute of `choice` (attribute -> model) from its own model."""
    paths = [str(p) for p in paths]
    by_model: dict[str, list[str]] = {}
    for attr, model in choice.items():
        by_model.setdefault(str(model), []).append(attr)
    merged: dict[str, dict] = {p: {"file": p} for p in paths}
    failures: dict[str, str] = {}
    for model, attrs in by_model.items():
        members = resolve_models(model, device)
        has = list(members[0][1].config.attributes)
        missing = [a for a in attrs if a not in has]
        if missing:
            raise UserError(f"{model}: the model does not predict {', '.join(missing)} (it predicts "
                            f"{', '.join(has)})")
        rows, failed = predict_files(members, paths, device, batch_sentences, notes)
        for row in rows:
            merged[row["file"]].update({a: row[a] for a in attrs})
        for path, reason in failed:
            failures.setdefault(path, reason)
    order = [a for a in ATTRIBUTES if a in choice]
    rows = [{"file": p, **{a: merged[p][a] for a in order}} for p in paths
            if p not in failures and all(a in merged[p] for a in order)]
    return rows, [(p, failures[p]) for p in paths if p in failures]


def check_store_matches(info: ModelInfo, store, atol: float = 1e-5) -> None:
    """Raise UserError unless the store's frames were computed and normalised the way the model expects."""
    model_kind = FeatureSpec.from_dict(info.feature_spec).kind
    store_kind = FeatureSpec.from_dict(store.feature_spec).kind
    if model_kind != store_kind:
        raise UserError(f"{store.path}: the store holds {store_kind!r} features but the model expects "
                        f"{model_kind!r} features; prepare a store with the model's feature kind")
    terms = store.norm_terms
    s_mean = np.asarray(terms.mean, dtype=np.float64).reshape(-1)
    s_std = np.asarray(terms.std, dtype=np.float64).reshape(-1)
    m_mean = np.asarray(info.norm_mean, dtype=np.float64).reshape(-1)
    m_std = np.asarray(info.norm_std, dtype=np.float64).reshape(-1)
    if s_mean.shape != m_mean.shape or s_std.shape != m_std.shape:
        raise UserError(f"{store.path}: the store has {s_mean.size} feature bands but the model expects {m_mean.size}")
    for what, a, b in (("mean", s_mean, m_mean), ("std", s_std, m_std)):
        if not np.allclose(a, b, rtol=1e-4, atol=atol):
            worst = int(np.argmax(np.abs(a - b)))
            raise UserError(
                f"{store.path}: the store's frames were normalised with different feature terms than the "
                f"model's (band {worst} {what}: store {a[worst]:.6g}, model {b[worst]:.6g}); a model "
                "only applies to stores normalised with the terms it was trained with")


def evaluate_store(model, store, split: str = "Test1", device: str | torch.device = "cpu",
                   batch_sentences: int = BATCH_SENTENCES, predictions: bool = False) -> dict:
    """CCC per model attribute (`ccc_<attr>`), their mean `ccc_mean`, and `utterances` over a split's labeled set
    (`model`: anything `resolve_models` takes; an ensemble's predictions are averaged, `models` counts them).

    With `predictions`, also `predictions`: {"index": store rows [n], "labels": [n, A], "preds": [n, A]}
    (numpy, 1..7 scale, attributes in the model's order), e.g. for a bootstrap over utterances."""
    from model.store import FeatureStore

    members = resolve_models(model, device)
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    store.verify()
    for _, info in members:
        check_store_matches(info, store)
    if split not in store.splits:
        raise UserError(f"{store.path}: no split {split!r}; the store has {', '.join(map(str, store.splits))}")
    idx = store.ids(split=split, labeled=True)
    if len(idx) == 0:
        raise UserError(f"{store.path}: split {split!r} has no labeled utterances")
    store.check_frames(idx)   # every frame it evaluates: a NaN would turn into a CCC of 0
    attributes = list(members[0][1].config.attributes)
    batches = np.array_split(idx, -(-len(idx) // batch_sentences))
    preds = np.mean([np.concatenate([_predict_member(net, info, lambda m, C: make_chunks(store, b, m, C))
                                     for b in batches]) for net, info in members], axis=0)
    labels = np.asarray(store.labels(idx, attributes), dtype=np.float64)
    result = {f"ccc_{a}": ccc(labels[:, i], preds[:, i]) for i, a in enumerate(attributes)}
    result["ccc_mean"] = float(np.mean([result[f"ccc_{a}"] for a in attributes]))
    result["utterances"] = int(len(idx))
    if len(members) > 1:
        result["models"] = len(members)
    if predictions:
        result["predictions"] = {"index": np.asarray(idx, dtype=np.int64), "labels": labels, "preds": preds}
    return result
