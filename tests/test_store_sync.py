"""Feature store on every node: bucket copy once per node (file lock, atomic, verified) and upload."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model.errors import StoreError
from tuner.storage.store_sync import (MANIFEST, MARKER, STORE_FILES, check_store, ensure_local_store,
                                      fingerprint, upload_store)

REPO = Path(__file__).resolve().parents[1]


def make_store(path: Path, seed: int = 0, frames: int = 500) -> Path:
    """A folder with the four store files, consistent as a real store (the frames are random)."""
    from model.store import FORMAT, index_dtype

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    np.save(path / "frames.npy", rng.standard_normal((frames, 128)).astype(np.float16))
    index = np.zeros(10, dtype=index_dtype(4))
    index["name"] = [f"u{i}".encode() for i in range(10)]
    index["length"] = frames // 10
    index["offset"] = np.arange(10) * (frames // 10)
    index["act"] = index["dom"] = index["val"] = 4.0
    index["labeled"], index["speaker"] = True, -1
    np.save(path / "index.npy", index)
    (path / "meta.json").write_text(json.dumps({
        "format": FORMAT, "fingerprint": f"corpus-{seed}", "feature_spec": {"n_mels": 128}, "dtype": "float16",
        "frames": frames, "utterances": 10, "splits": ["Train"], "speakers": [],
        "norm_terms": {"mean": [0.0] * 128, "std": [1.0] * 128}, "label_terms": {"act": [4.0, 1.0]}}))
    (path / "report.json").write_text(json.dumps({"utterances": 10}))
    return path


def uri(path: Path) -> str:
    return f"file://{path}"


def same_files(a: Path, b: Path) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in STORE_FILES)


def test_upload_then_copy_is_identical_and_cached(tmp_path):
    store = make_store(tmp_path / "src.store")
    bucket = tmp_path / "bucket" / "stores" / "tiny.store"
    manifest = upload_store(store, uri(bucket))
    assert set(manifest) == set(STORE_FILES)
    assert json.loads((bucket / MANIFEST).read_text()) == manifest
    assert not list(bucket.parent.glob("**/*.partial-*"))

    local = ensure_local_store(uri(bucket), tmp_path / "cache")
    assert local.parent == tmp_path / "cache"
    assert fingerprint((store / "meta.json").read_bytes()) in local.name
    assert same_files(store, local)
    marker = json.loads((local / MARKER).read_text())
    assert marker["uri"] == uri(bucket)
    assert marker["files"]["frames.npy"]["sha256"] == manifest["frames.npy"]["sha256"]

    # a second call reuses the copy (no re-download: the copy's mtime is unchanged)
    mtime = (local / "frames.npy").stat().st_mtime_ns
    assert ensure_local_store(uri(bucket), tmp_path / "cache") == local
    assert (local / "frames.npy").stat().st_mtime_ns == mtime


def test_reprepared_store_lands_in_a_new_folder(tmp_path):
    bucket = tmp_path / "bucket" / "s.store"
    upload_store(make_store(tmp_path / "a", seed=0), uri(bucket))
    first = ensure_local_store(uri(bucket), tmp_path / "cache")
    shutil.rmtree(bucket)
    upload_store(make_store(tmp_path / "b", seed=1), uri(bucket))
    second = ensure_local_store(uri(bucket), tmp_path / "cache")
    assert second != first
    assert same_files(tmp_path / "b", second)
    assert same_files(tmp_path / "a", first)


def test_bucket_without_manifest_is_verified_by_size(tmp_path):
    """A store copied into the bucket with `aws s3 cp`/`gsutil cp` (no manifest) still syncs."""
    store = make_store(tmp_path / "src")
    bucket = tmp_path / "bucket" / "plain.store"
    shutil.copytree(store, bucket)
    local = ensure_local_store(uri(bucket), tmp_path / "cache")
    assert same_files(store, local)


def test_corrupt_upload_is_rejected_and_leaves_nothing(tmp_path):
    bucket = tmp_path / "bucket" / "bad.store"
    upload_store(make_store(tmp_path / "src"), uri(bucket))
    data = bytearray((bucket / "frames.npy").read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (bucket / "frames.npy").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(StoreError, match=r"frames\.npy does not match sync_manifest\.json"):
        ensure_local_store(uri(bucket), cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_files_and_bad_uris_name_the_problem(tmp_path):
    bucket = tmp_path / "bucket" / "half.store"
    make_store(bucket)
    (bucket / "index.npy").unlink()
    with pytest.raises(StoreError, match=r"half\.store.*missing index\.npy"):
        ensure_local_store(uri(bucket), tmp_path / "cache")
    with pytest.raises(StoreError, match=r"meta\.json not found"):
        ensure_local_store(uri(tmp_path / "nothing"), tmp_path / "cache")
    with pytest.raises(StoreError, match=r"missing frames\.npy"):
        ensure_local_store(str(tmp_path / "nothing"))
    with pytest.raises(StoreError, match="expected a bucket URI"):
        upload_store(make_store(tmp_path / "src"), str(tmp_path / "plain-path"))


def test_check_store_reads_only_the_fingerprint(tmp_path):
    store = make_store(tmp_path / "src")
    bucket = tmp_path / "bucket" / "s.store"
    upload_store(store, uri(bucket))
    key = fingerprint((store / "meta.json").read_bytes())
    assert check_store(uri(bucket)) == key == check_store(str(store))
    (bucket / "frames.npy").unlink()
    with pytest.raises(StoreError, match="missing frames.npy"):
        check_store(uri(bucket))
    assert not (tmp_path / "cache").exists()


def test_shared_filesystem_path_is_used_in_place(tmp_path):
    store = make_store(tmp_path / "shared" / "s.store")
    assert ensure_local_store(str(store), tmp_path / "cache") == store
    assert not (tmp_path / "cache").exists()


def test_stale_temporary_copy_is_removed(tmp_path):
    bucket = tmp_path / "bucket" / "s.store"
    upload_store(make_store(tmp_path / "src"), uri(bucket))
    cache = tmp_path / "cache"
    key = fingerprint((bucket / "meta.json").read_bytes())
    stale = cache / f".s.store-{key}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "frames.npy").write_bytes(b"partial")
    local = ensure_local_store(uri(bucket), cache)
    assert not stale.exists()
    assert local.name == f"s.store-{key}"


def test_not_enough_disk_is_a_clear_error(tmp_path, monkeypatch):
    bucket = tmp_path / "bucket" / "s.store"
    upload_store(make_store(tmp_path / "src"), uri(bucket))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(StoreError, match=r"GB free; set --cache"):
        ensure_local_store(uri(bucket), tmp_path / "cache")


CONCURRENT = textwrap.dedent("""
    import contextlib, os, sys, time
    import tuner.storage.store_sync as ss
    copies, arrivals = sys.argv[3], sys.argv[3] + ".arrived"
    original_locked, original_download = ss._locked, ss._download

    @contextlib.contextmanager
    def logged_lock(path):
        with open(arrivals, "a") as log:  # about to take the lock: no copy is complete yet
            log.write(f"{os.getpid()}\\n")
        with original_locked(path):
            yield

    def download_when_all_arrived(*args, **kwargs):
        with open(copies, "a") as log:  # one line per real copy
            log.write(f"{os.getpid()}\\n")
        deadline = time.monotonic() + 60
        while len(open(arrivals).read().split()) < 4:  # every process reaches the lock during this copy
            if time.monotonic() > deadline:
                sys.exit("the other processes never reached the lock")
            time.sleep(0.01)
        return original_download(*args, **kwargs)

    ss._locked, ss._download = logged_lock, download_when_all_arrived
    while not os.path.exists(sys.argv[4]):  # start together
        time.sleep(0.01)
    print(ss.ensure_local_store(sys.argv[1], sys.argv[2]))
""")


def test_concurrent_processes_copy_once(tmp_path):
    store = make_store(tmp_path / "src", frames=20000)
    bucket = tmp_path / "bucket" / "s.store"
    upload_store(store, uri(bucket))
    log, go = tmp_path / "copies.log", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, uri(bucket), str(tmp_path / "cache"), str(log),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert len(log.read_text().splitlines()) == 1
    assert same_files(store, Path(paths.pop()))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", "sync-store", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_upload_then_sync_prints_the_local_path(tmp_path):
    store = make_store(tmp_path / "src")
    dest = uri(tmp_path / "bucket" / "cli.store")
    up = run_cli(str(store), "--upload", dest)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == dest
    down = run_cli(dest, "--cache", str(tmp_path / "cache"))
    assert down.returncode == 0, down.stderr
    local = Path(down.stdout.strip())
    assert local.parent == tmp_path / "cache" and same_files(store, local)
    bad = run_cli(uri(tmp_path / "missing.store"), "--cache", str(tmp_path / "cache"))
    assert bad.returncode == 2
    assert "error: store URI" in bad.stderr and "missing.store" in bad.stderr
