"""The feature store on every node: copy it once per node from a bucket to local disk, or upload it.

A store URI is either a plain path (a shared filesystem that every node mounts: used as is) or a
bucket URI (`s3://`, `gs://`, `file://`, pyarrow's options in its query) read with pyarrow.fs
(shipped with ray); a bucket that cannot be reached is a StoreError naming the URI. A bucket store
is copied to `<cache>/<name>-<fingerprint>/` once per node: a `fcntl` lock makes concurrent trials
on one node wait for a single copy, which goes to a temporary folder, is verified (sizes, the
sha256 manifest when the upload wrote one, meta.json unchanged) and is then renamed into place.
The fingerprint is the sha256 of the store's meta.json (which holds the corpus fingerprint, the
feature spec and the normalisation terms), so a re-prepared store lands in a new folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from model.atomic_files import replace_dir
from model.errors import StoreError
from model.store import STORE_FILES, FeatureStore
from tuner.storage.uris import display_uri, is_uri, open_filesystem, reaching, uri_basename

MANIFEST = "sync_manifest.json"    # written by upload: {file: {"size": n, "sha256": hex}}
MARKER = "sync.json"               # written into a verified local copy before it is renamed into place
CACHE_ENV = "DEEPEMOCLUSTER_STORE_CACHE"
BLOCK = 8 << 20


def default_cache_dir() -> Path:
    """$DEEPEMOCLUSTER_STORE_CACHE, else ~/.cache/deepemocluster/stores."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepemocluster" / "stores"


def fingerprint(meta_bytes: bytes) -> str:
    """The cache key of a store: sha256 of its meta.json bytes (first 16 hex digits)."""
    return hashlib.sha256(meta_bytes).hexdigest()[:16]


def _filesystem(uri: str):
    fs, root = open_filesystem(uri, StoreError)
    return fs, root.rstrip("/")


def _reaching(uri: str) -> contextlib.AbstractContextManager[None]:
    """Errors of the bucket (endpoint, credentials, no such bucket) as one StoreError naming the URI."""
    return reaching(f"store URI {display_uri(uri)}", StoreError)


def _read_remote(fs, path: str, uri: str) -> bytes:
    try:
        with _reaching(uri), fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise StoreError(f"store URI {display_uri(uri)!r}: {path.rsplit('/', 1)[-1]} not found; "
                         "expected a feature store folder (frames.npy, index.npy, meta.json, report.json)") from None


def _remote_sizes(fs, root: str, uri: str) -> dict[str, int]:
    import pyarrow.fs as pafs

    with _reaching(uri):
        infos = fs.get_file_info([f"{root}/{name}" for name in STORE_FILES])
    missing = [name for name, info in zip(STORE_FILES, infos) if info.type != pafs.FileType.File]
    if missing:
        raise StoreError(f"store URI {display_uri(uri)!r}: missing {', '.join(missing)}; "
                         "expected a feature store folder (frames.npy, index.npy, meta.json, report.json)")
    return {name: int(info.size) for name, info in zip(STORE_FILES, infos)}


def _copy_down(fs, src: str, dst: Path) -> str:
    """Stream one remote file to a local path; returns its sha256."""
    digest = hashlib.sha256()
    with fs.open_input_stream(src) as fin, open(dst, "wb") as fout:
        while chunk := fin.read(BLOCK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_local_store(path: Path, uri: str) -> Path:
    missing = [name for name in STORE_FILES if not (path / name).is_file()]
    if missing:
        raise StoreError(f"store {display_uri(uri)!r}: missing {', '.join(missing)} in {path}; expected a feature store "
                         "folder made by `python -m tuner prepare` (on a shared filesystem every node mounts)")
    return path


def _local_name(uri: str, key: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", uri_basename(uri)) or "store"
    return f"{base}-{key}"


def check_store(uri: str | os.PathLike) -> str:
    """Check that `uri` holds a feature store without copying it (for the driver); returns its fingerprint."""
    uri = str(uri)
    if not is_uri(uri):
        path = _check_local_store(Path(uri).expanduser(), uri)
        FeatureStore.open(path).verify()   # meta, index and frames agree: refused here, before Ray starts
        return fingerprint((path / "meta.json").read_bytes())
    fs, root = _filesystem(uri)
    _remote_sizes(fs, root, uri)
    return fingerprint(_read_remote(fs, f"{root}/meta.json", uri))


def ensure_local_store(uri: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder holding the store at `uri`: the path itself, or a verified per-node copy."""
    uri = str(uri)
    if not is_uri(uri):
        return _check_local_store(Path(uri).expanduser(), uri)
    fs, root = _filesystem(uri)
    meta = _read_remote(fs, f"{root}/meta.json", uri)
    key = fingerprint(meta)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    dest = cache / _local_name(uri, key)
    if (dest / MARKER).is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{dest.name}.lock"):
        if (dest / MARKER).is_file():  # another process on this node finished the copy
            return dest
        for stale in cache.glob(f".{dest.name}.tmp-*"):  # left by a killed copy; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if dest.exists():  # renamed in but without a marker: not ours to trust
            shutil.rmtree(dest)
        _download(fs, root, uri, meta, cache, dest)
    return dest


def _download(fs, root: str, uri: str, meta: bytes, cache: Path, dest: Path) -> None:
    sizes = _remote_sizes(fs, root, uri)
    need = sum(sizes.values())
    free = shutil.disk_usage(cache).free
    if free < need * 1.05:
        raise StoreError(f"store URI {display_uri(uri)!r} needs {need / 1e9:.2f} GB but {cache} has {free / 1e9:.2f} GB free; "
                         f"set --cache or ${CACHE_ENV} to a larger local disk")
    manifest = None
    import pyarrow.fs as pafs

    with _reaching(uri):
        if fs.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.File:
            manifest = json.loads(_read_remote(fs, f"{root}/{MANIFEST}", uri))
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{dest.name}.tmp-"))
    try:
        with _reaching(uri):
            hashes = {name: _copy_down(fs, f"{root}/{name}", tmp / name) for name in STORE_FILES}
        _verify(uri, tmp, sizes, hashes, manifest, meta)
        if _read_remote(fs, f"{root}/meta.json", uri) != meta:
            raise StoreError(f"store URI {display_uri(uri)!r} changed while it was being copied; run again")
        marker = {"uri": uri, "fingerprint": fingerprint(meta), "files": {
            name: {"size": sizes[name], "sha256": hashes[name]} for name in STORE_FILES}}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
        replace_dir(tmp, dest, overwrite=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _verify(uri: str, tmp: Path, sizes: dict, hashes: dict, manifest: dict | None, meta: bytes) -> None:
    for name in STORE_FILES:
        got = (tmp / name).stat().st_size
        if got != sizes[name]:
            raise StoreError(f"store URI {display_uri(uri)!r}: copied {name} has {got} bytes, the bucket says {sizes[name]}")
        if manifest is not None:
            want = manifest.get(name, {})
            if want.get("sha256") != hashes[name] or want.get("size") != sizes[name]:
                raise StoreError(f"store URI {display_uri(uri)!r}: {name} does not match {MANIFEST} (sha256 or size); "
                                 "the upload is incomplete or was overwritten, upload the store again")
    if (tmp / "meta.json").read_bytes() != meta:
        raise StoreError(f"store URI {display_uri(uri)!r}: copied meta.json differs from the one read first (fingerprint)")


def upload_store(local: str | os.PathLike, uri: str) -> dict:
    """Copy a local store folder to a bucket URI with a sha256 manifest; returns the manifest."""
    src = _check_local_store(Path(local).expanduser(), str(local))
    FeatureStore.open(src).verify()   # never upload a corrupt store
    if not is_uri(uri):
        raise StoreError(f"upload target {display_uri(uri)!r}: expected a bucket URI (s3://, gs:// or file://)")
    fs, root = _filesystem(uri)
    with _reaching(uri):
        fs.create_dir(root, recursive=True)
        manifest = {}
        for name in STORE_FILES:
            if name != "meta.json":
                manifest[name] = _upload_file(fs, src / name, f"{root}/{name}")
        meta_bytes = (src / "meta.json").read_bytes()
        manifest["meta.json"] = {"size": len(meta_bytes), "sha256": hashlib.sha256(meta_bytes).hexdigest()}
        _write_remote(fs, f"{root}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
        _upload_file(fs, src / "meta.json", f"{root}/meta.json")  # last: readers key on meta.json
    return manifest


def _upload_file(fs, src: Path, dst: str) -> dict:
    digest = hashlib.sha256()
    size = 0

    def chunks():
        nonlocal size
        with open(src, "rb") as f:
            while chunk := f.read(BLOCK):
                digest.update(chunk)
                size += len(chunk)
                yield chunk

    _write_remote(fs, dst, chunks())
    return {"size": size, "sha256": digest.hexdigest()}


def _write_remote(fs, dst: str, data) -> None:
    """Write bytes (or an iterable of chunks); on a local filesystem via a temporary name and rename."""
    import pyarrow.fs as pafs

    local = isinstance(fs, pafs.LocalFileSystem)
    target = f"{dst}.partial-{os.getpid()}" if local else dst  # bucket objects appear atomically anyway
    with fs.open_output_stream(target) as out:
        for chunk in ([data] if isinstance(data, bytes) else data):
            out.write(chunk)
    if local:
        fs.move(target, dst)
