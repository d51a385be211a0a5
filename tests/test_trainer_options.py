"""Trainer options that no other test trains with: optimizer=adam, channels_last=False, pca_whitening=True."""
from __future__ import annotations

import math

import numpy as np
import torch

from model import clustering
from model.config import TrainConfig
from model.trainer import Trainer

FAST = dict(width=0.25, chunk_frames=16, chunks_per_sentence=4, batch_size=8, num_clusters=4, temporal="gru",
            kmeans_iterations=5, precision="fp32", epochs=1, num_threads=1)


def trainer(store, **changes) -> Trainer:
    return Trainer(TrainConfig.from_dict({**FAST, **changes}), store)


def finite(metrics: dict) -> bool:
    return all(math.isfinite(float(v)) for k, v in metrics.items() if k != "nmi")


def test_adam_optimizer_alone_trains_every_parameter(tiny_store):
    t = trainer(tiny_store, optimizer="adam")
    assert [type(o) for o in t.optimizers] == [torch.optim.Adam]
    assert t.optimizers[0].defaults["lr"] == t.config.lr_adam
    before = {n: p.detach().clone() for n, p in t.network.named_parameters()}
    assert finite(t.run_epoch())
    moved = [n for n, p in t.network.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("encoder.") for n in moved) and any(n.startswith("top_layer.") for n in moved)
    assert t.optimizers[0].state   # Adam's moments exist for the parameters it stepped


def test_channels_last_off_keeps_the_default_layout_and_the_same_numbers(tiny_store):
    runs = {}
    for channels_last in (True, False):
        t = trainer(tiny_store, channels_last=channels_last)
        convs = [m.weight for m in t.network.encoder.conv.modules()   # (one input channel fits both layouts)
                 if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in convs)
        runs[channels_last] = t.run_epoch()
        assert finite(runs[channels_last])
    # the memory layout changes no arithmetic that matters: the same epoch either way
    assert runs[False]["loss_total"] == runs[True]["loss_total"] or \
        abs(runs[False]["loss_total"] - runs[True]["loss_total"]) < 1e-3 * abs(runs[True]["loss_total"])


def test_pca_whitening_is_applied_before_kmeans_in_training(tiny_store, monkeypatch):
    calls = []
    real = clustering.pca_whiten

    def spy(x):
        out = real(x)
        calls.append((x.shape, out))
        return out

    monkeypatch.setattr(clustering, "pca_whiten", spy)
    t = trainer(tiny_store, pca_whitening=True)
    metrics = t.run_epoch()
    assert finite(metrics) and calls   # every k-means of the epoch (SSL and labeled stage) whitened
    for shape, out in calls:
        assert out.shape[0] == shape[0] and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)   # L2-normalised
    assert 1 <= metrics["cluster_min"] <= metrics["cluster_max"]
