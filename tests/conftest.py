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
    from model.store_build import prepare_store

    out = tmp_path_factory.mktemp("store") / "tiny.store"
    prepare_store(tiny_corpus, out, progress=False)
    return out


REFERENCE_MODELS = REFERENCE / "deepemoclusters-msp-podcast-v1.6"
REFERENCE_CHECKPOINTS = {  # attribute -> published checkpoint
    "act": REFERENCE_MODELS / "trained_models" / "Vgg16DeepEmoCluster_epoch50_batch64_10clusters_Act.pth.tar",
    "dom": REFERENCE_MODELS / "trained_models" / "Vgg16DeepEmoCluster_epoch50_batch64_30clusters_Dom.pth.tar",
    "val": REFERENCE_MODELS / "trained_models" / "Vgg16DeepEmoCluster_epoch50_batch64_30clusters_Val.pth.tar",
}


@pytest.fixture(scope="session")
def reference_models(tmp_path_factory) -> dict[str, Path]:
    """The three published checkpoints imported as model files: attribute -> path."""
    from model.model_file import save_model
    from model.reference import import_reference

    out = tmp_path_factory.mktemp("reference_models")
    paths = {}
    for attr, ckpt in REFERENCE_CHECKPOINTS.items():
        network, info = import_reference(ckpt, REFERENCE_MODELS / "NormTerm", attr)
        paths[attr] = out / f"reference_{attr}.pt"
        save_model(paths[attr], network, info)
    return paths


@pytest.fixture(scope="session")
def bucket_env():
    """Dummy cloud credentials and no metadata-server look-ups, in this process and its children."""
    import os

    from bucket_servers import BUCKET_ENV

    saved = {k: os.environ.get(k) for k in BUCKET_ENV}
    os.environ.update(BUCKET_ENV)
    yield dict(BUCKET_ENV)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_server(bucket_env, tmp_path_factory):
    """An S3 server (moto) on 127.0.0.1 with the bucket `tuner-test`; ended by pid at the end."""
    from bucket_servers import ObjectServer

    server = ObjectServer("s3", tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server(bucket_env, tmp_path_factory):
    """A GCS emulator on 127.0.0.1 with the bucket `tuner-test`; ended by pid at the end."""
    from bucket_servers import ObjectServer

    server = ObjectServer("gcs", tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()
