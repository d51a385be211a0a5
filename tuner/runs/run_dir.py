"""The folder of one search run, STORAGE/NAME: its manifest and one Ray experiment per condition.

Layout:
    STORAGE/NAME/run.json               the manifest: run id, space (text), store, conditions and their state
    STORAGE/NAME/events.out.tfevents.*  the HParams experiment summary (TensorBoard root run)
    STORAGE/NAME/<condition>/           one Ray Tune experiment (one Optuna study) per condition,
                                        e.g. `labeled_ratio=0.1/`, or `all/` without conditions
    STORAGE/NAME/best.yaml (+ siblings) the exported best configs

STORAGE is a local folder or a URI pyarrow understands (s3://, gs://, file://; options such as
`?endpoint_override=HOST:PORT&scheme=http&region=R` in its query, paths joined before it); all
writes are atomic (a temporary name, then a rename). A bucket that cannot be reached or written is
a UserError naming the URI (`check_writable` probes before a run starts).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import yaml

from model.atomic_files import atomic_write
from model.errors import UserError
from model.json_shape import shape_problem
from model.locks import (LockHeld, command_line, current_holder, describe_holder, holder_gone, holder_info,
                         writer_lock)
from tuner.space.schema import SearchSpace, condition_label
from tuner.storage.uris import display_uri, is_uri, join_uri, open_filesystem, reaching

MANIFEST = "run.json"
MANIFEST_VERSION = 1
DEFAULT_STORAGE = "results"
TRAINABLE = "train_trial"   # the trial function's name (tuner.search.trainable.train_trial); conditions add their label
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RUN_ID = re.compile(r"[0-9a-f]{32}")   # run.json's `run_id` (runs made before ids were written have none)


def check_name(name: str) -> str:
    """A run name is a plain folder name (letters, digits, . _ -)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"--name {name!r}: expected a folder name of letters, digits, '.', '_' or '-'")
    return name


class RunDir:
    """STORAGE/NAME of one run, local or remote; `uri` is what Ray's storage_path gets."""

    def __init__(self, storage: str | os.PathLike, name: str):
        self.name = check_name(name)
        storage = str(storage)
        if is_uri(storage):
            self.storage = storage
            self.uri = join_uri(storage, name)
            self.fs, self._root = open_filesystem(self.uri)
            self._root = self._root.rstrip("/")
            self.local: Path | None = Path(self._root) if self.storage.startswith("file://") else None
        else:
            self.storage = str(Path(storage).expanduser().resolve())
            self.fs = None
            self._root = str(Path(self.storage) / name)
            self.uri = self._root
            self.local = Path(self._root)

    def __str__(self) -> str:
        return display_uri(self.uri)

    def _reaching(self) -> contextlib.AbstractContextManager[None]:
        """Bucket errors (endpoint, credentials, no such bucket) as one UserError naming the run's URI."""
        return contextlib.nullcontext() if self.fs is None else reaching(self.uri)

    # ---- files --------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Location of a file in the run (a local path or a path inside the remote filesystem)."""
        return "/".join([self._root, *parts])

    def child_uri(self, *parts: str) -> str:
        """The URI (or local path) of a file or folder in the run; a query stays at the end."""
        return join_uri(self.uri, *parts)

    def exists(self, *parts: str) -> bool:
        if self.fs is None:
            return Path(self.path(*parts)).exists()
        import pyarrow.fs

        with self._reaching():
            return self.fs.get_file_info(self.path(*parts)).type != pyarrow.fs.FileType.NotFound

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def read_bytes(self, *parts: str) -> bytes:
        if self.fs is None:
            return Path(self.path(*parts)).read_bytes()
        with self._reaching(), self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_text(self, text: str, *parts: str) -> None:
        """Atomic write: a temporary file next to the target, then a rename."""
        self.write_bytes(text.encode(), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Atomic write of bytes (see write_text)."""
        target = self.path(*parts)
        if self.fs is None:
            atomic_write(target, data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self._reaching():
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, target)

    def check_writable(self) -> None:
        """Write and delete a small object in the run's folder: a bucket's endpoint, credentials and
        permissions fail here, as a UserError naming the URI, before Ray starts."""
        if self.fs is None:
            return
        probe = self.path(f".write-probe-{uuid.uuid4().hex[:8]}")
        with self._reaching():
            self.fs.create_dir(self._root, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"probe")
            self.fs.delete_file(probe)

    def listdir(self, *parts: str) -> list[str]:
        """Names directly inside a folder of the run ([] when it does not exist)."""
        if self.fs is None:
            p = Path(self.path(*parts))
            return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
        import pyarrow.fs

        # listed recursively: a bucket has no folders, only object names, and a "folder" without its
        # marker object (written by another tool, or GCS listings that skip markers) must still show
        base = self.path(*parts)
        selector = pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True)
        with self._reaching():
            infos = self.fs.get_file_info(selector)
        return sorted({info.path[len(base) + 1:].split("/", 1)[0] for info in infos})

    def walk(self) -> list[tuple[str, int]]:
        """Every file of the run, recursively: (path relative to the run folder, size in bytes)."""
        if self.fs is None:
            root = Path(self._root)
            return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self._root, recursive=True, allow_not_found=True)
        with self._reaching():
            infos = self.fs.get_file_info(selector)
        return sorted((i.path[len(self._root) + 1:], i.size) for i in infos if i.type == pyarrow.fs.FileType.File)

    # ---- one driver at a time ----------------------------------------------------------------
    @contextlib.contextmanager
    def sole_driver(self) -> Iterator[None]:
        """Held by `run`, `resume` and `confirm` for as long as they drive the run: a second one fails naming
        the holder.

        Local storage (and file://): model.locks.writer_lock on STORAGE/.NAME.lock. A bucket has no
        file locks: the lock object STORAGE/.NAME.lock names its holder and is refused while it
        exists, unless its holder is a process of this host that is gone (best effort: two drivers
        starting in the same instant on two hosts are not told apart).
        """
        what = f"search run {self.name!r}"
        if self.local is not None:
            with writer_lock(self.local, what) as previous:
                if previous:
                    print(f"note: took over the lock of a driver that is gone ({describe_holder(previous)})",
                          file=sys.stderr)
                yield
            return
        holder = self.lock_holder()
        if holder is not None:
            raise LockHeld(f"{self}: {what} is in use by another process ({describe_holder(holder)}); "
                           f"wait for it to finish; if that process is gone, delete "
                           f"{display_uri(join_uri(self.storage, f'.{self.name}.lock'))}")
        me = holder_info()
        lock = self._remote_lock()
        with self._reaching():
            self.fs.create_dir(lock.rpartition("/")[0], recursive=True)
            with self.fs.open_output_stream(lock) as f:
                f.write(json.dumps(me).encode())
        try:
            yield
        finally:
            if self._remote_holder() == me:
                with self._reaching():
                    self.fs.delete_file(lock)

    def lock_holder(self) -> dict[str, Any] | None:
        """The driver holding the run's lock now (`run`, `resume`, `confirm`; {} when its lock does not say who),
        None when none does. Only looks: nothing is locked or created."""
        if self.local is not None:
            return current_holder(self.local)
        holder = self._remote_holder()
        return None if holder is None or holder_gone(holder) else holder

    def _remote_lock(self) -> str:
        parent, _, name = self._root.rpartition("/")
        return f"{parent}/.{name}.lock"

    def _remote_holder(self) -> dict[str, Any] | None:
        import pyarrow.fs

        lock = self._remote_lock()
        with self._reaching():
            if self.fs.get_file_info(lock).type == pyarrow.fs.FileType.NotFound:
                return None
        try:
            with self.fs.open_input_stream(lock) as f:
                holder = json.loads(f.read().decode())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    # ---- manifest -----------------------------------------------------------------------------
    def has_manifest(self) -> bool:
        return self.exists(MANIFEST)

    def read_manifest(self) -> dict[str, Any]:
        if not self.has_manifest():
            holder = self.lock_holder()
            if holder is not None:   # a `run` starting: it writes run.json once Ray is up
                raise LockHeld(f"{self}: search run {self.name!r} is being started by another process "
                               f"({describe_holder(holder)}) and has no {MANIFEST} yet; try again once it has "
                               "started")
            raise UserError(f"{self}: no search run here ({MANIFEST} missing); "
                            f"start one with `python -m tuner run --name {self.name}`")
        try:
            manifest = json.loads(self.read_text(MANIFEST))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.path(MANIFEST)}: damaged manifest: {exc}") from None
        if not isinstance(manifest, dict):
            raise UserError(f"{self.path(MANIFEST)}: damaged manifest: expected a JSON object, "
                            f"found {type(manifest).__name__}")
        if manifest.get("version") != MANIFEST_VERSION:
            raise UserError(f"{self.path(MANIFEST)}: manifest version {manifest.get('version')!r}, "
                            f"expected {MANIFEST_VERSION}")
        problem = manifest_problem(manifest)
        if problem:
            raise UserError(f"{self.path(MANIFEST)}: damaged manifest: {problem}")
        return manifest

    def read_json(self, *parts: str, what: str, shape: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON object the tool wrote in the run folder; damaged (not JSON, not an object, not of `shape`:
        model.json_shape) it is a UserError naming the file as a damaged `what`."""
        def damaged(problem: str) -> UserError:
            return UserError(f"{self.path(*parts)}: damaged {what}: {problem}")

        try:
            data = json.loads(self.read_text(*parts))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise damaged(str(exc)) from None
        if not isinstance(data, dict):
            raise damaged(f"expected a JSON object, found {type(data).__name__}")
        problem = shape_problem(data, shape or {})
        if problem:
            raise damaged(problem)
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_text(json.dumps({**manifest, "version": MANIFEST_VERSION}, indent=2, default=str), MANIFEST)

    def set_condition_state(self, label: str, state: str) -> dict[str, Any]:
        """Record that a condition's study is `pending`, `running` or `done`."""
        manifest = self.read_manifest()
        for c in manifest["conditions"]:
            if c["label"] == label:
                c["state"] = state
        self.write_manifest(manifest)
        return manifest


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's structure (None when every reader will find what it needs)."""
    metrics, modes, conditions = manifest.get("metrics"), manifest.get("modes"), manifest.get("conditions")
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
        return f"metrics {metrics!r}: expected a non-empty list of metric names"
    if not (isinstance(modes, list) and len(modes) == len(metrics) and all(m in ("max", "min") for m in modes)):
        return f"modes {modes!r}: expected max or min per metric"
    if not isinstance(conditions, list) or not all(
            isinstance(c, dict) and isinstance(c.get("label"), str) and isinstance(c.get("values"), dict)
            and isinstance(c.get("state"), str) and isinstance(c.get("trainable", ""), str) for c in conditions):
        return "conditions: expected a list of {label, values, state, trainable}"
    for key in ("space_yaml", "space_file", "store", "name"):
        if key in manifest and not isinstance(manifest[key], str):
            return f"{key} {manifest[key]!r}: expected a string"
    if "run_id" in manifest and not (isinstance(manifest["run_id"], str) and RUN_ID.fullmatch(manifest["run_id"])):
        return f"run_id {manifest['run_id']!r}: expected 32 hexadecimal digits"
    epochs = manifest.get("rung_epochs", [])
    if not (isinstance(epochs, list) and all(type(e) is int and e >= 1 for e in epochs)):
        return f"rung_epochs {epochs!r}: expected a list of epochs (integers >= 1)"
    return None


def add_storage_argument(parser) -> None:
    """The `--storage` option every run command shares (default ./results)."""
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="results folder or URI (default ./results)")


def open_run(name: str, storage: str | None) -> RunDir:
    """The existing run NAME under STORAGE (default ./results), or a UserError saying where it looked."""
    run = RunDir(storage or DEFAULT_STORAGE, name)
    run.read_manifest()
    return run


# ---- the manifest's content ----------------------------------------------------------------------
def new_manifest(space: SearchSpace, space_text: str, store: str, name: str,
                 optuna_storage: str, side_by_side: bool = True) -> dict[str, Any]:
    """The manifest of a new run: its id (new for every run, also one that reuses a deleted run's
    name), the space (as text), the store, the Optuna storage, whether the conditions' studies run
    side by side, and every condition, pending."""
    return {
        "name": name, "run_id": uuid.uuid4().hex, "space_file": space.source, "space_yaml": space_text,
        "store": store, "optuna_storage": optuna_storage, "side_by_side": side_by_side,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "metrics": space.metrics, "modes": space.modes,
        "conditions": [{"label": condition_label(c), "values": c, "state": "pending",
                        "trainable": trainable_name(condition_label(c))} for c in space.condition_values()],
    }


def trainable_name(label: str) -> str:
    """The name Ray registers condition `label`'s trainable under: one per condition (Ray's registry holds
    one trainable per name, and the studies side by side each need their own), recorded in the manifest
    because Tuner.restore requires the name the study began with."""
    return f"{TRAINABLE}_{label}"


def condition_trainable(manifest: dict[str, Any], label: str) -> str:
    """The registered name of a condition's trainable (`train_trial` for a run made before names were
    per condition: its Ray experiment keeps that name)."""
    entry = next(c for c in manifest["conditions"] if c["label"] == label)
    return entry.get("trainable", TRAINABLE)


def space_from_manifest(manifest: dict[str, Any]) -> SearchSpace:
    """The run's space, re-validated from the copy kept in the manifest."""
    from tuner.space.parse import parse_space   # here: it imports torch (via TrainConfig), which no CLI start needs

    try:
        raw = yaml.safe_load(manifest["space_yaml"])
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise UserError(f"run {manifest.get('name', '?')}: damaged manifest: its space_yaml is not a "
                        f"readable search space ({exc.__class__.__name__})") from None
    return parse_space(raw, manifest["space_file"])
