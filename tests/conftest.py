"""Shared fixtures: a tiny synthetic corpus and its feature store, built once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """48 labelled utterances (Train/Validation/Test1, 8 speakers) and 16 unlabeled ones."""
    from model.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("corpus") / "tiny", utterances=48,
                             unlabeled=16, speakers=8, seed=1)


@pytest.fixture(scope="session")
def tiny_store(tiny_corpus, tmp_path_factory) -> Path:
    """The feature store of `tiny_corpus` (logmel features)."""
    from model.store import prepare_store

    out = tmp_path_factory.mktemp("store") / "tiny.store"
    prepare_store(tiny_corpus, out, progress=False)
    return out
