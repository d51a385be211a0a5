"""A run's Optuna studies: one per condition, in durable Optuna storage (no Ray needed to read them).

The run's manifest says where they are (`optuna_storage`):
- `journal` (the default): an Optuna JournalStorage file, RUN/optuna.journal. For a run whose
  storage is a bucket (s3://, gs://) the driver writes a local copy, `<cache>/<key>/optuna.journal`
  ($DEEPEMOCLUSTER_OPTUNA_CACHE, else ~/.cache/deepemocluster/optuna; the key is a hash of the run's
  URI and its `run_id` in run.json, so a new run that reuses a deleted run's name starts a new copy),
  and copies it into the run folder at every Ray experiment snapshot (tuner.search.study_searcher), after
  each condition and at the end (`upload_journal`, up to the last complete line); readers and
  `resume` on another machine fetch it back first (`fetch_journal`).
- an RDB URL (`sqlite:///...`, `postgresql://...`): `run --optuna-storage URL`.

Each condition's study is named `<run>/<condition label>`. Its trials carry the searched parameters,
the value, per-epoch intermediate values, the state (COMPLETE, PRUNED when the scheduler stopped
the trial early, FAIL) and user attributes: `ray_trial_id`, `trial_folder`, `best_model`,
`best_value`, `best_epoch` (tuner.search.study_searcher writes them).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.atomic_files import atomic_write
from model.errors import UserError
from tuner.runs.run_dir import RunDir

if TYPE_CHECKING:
    import optuna

JOURNAL = "optuna.journal"
JOURNAL_STORAGE = "journal"
_OPEN: dict[str, Any] = {}   # one storage object per journal path or URL in this process (thread-safe)
_OPEN_LOCK = threading.Lock()
_UPLOAD_LOCK = threading.Lock()   # one journal upload at a time in this process


def study_name(run_name: str, label: str) -> str:
    """The Optuna study of one condition: `<run>/<condition label>`."""
    return f"{run_name}/{label}"


def check_storage_url(url: str) -> str:
    """An `--optuna-storage` value: an RDB URL SQLAlchemy understands (sqlite:///..., postgresql://...)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise UserError(f"--optuna-storage {url!r}: expected an RDB URL such as sqlite:///studies.db "
                        "or postgresql://user@host/db") from None
    return url


def _cache_dir() -> Path:
    env = os.environ.get("DEEPEMOCLUSTER_OPTUNA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepemocluster" / "optuna"


def journal_path(run: RunDir) -> Path:
    """Where the driver reads and writes the run's journal: in the run folder, or a local copy for a bucket."""
    if run.local is not None:
        return run.local / JOURNAL
    return _cache_dir() / _copy_key(run) / JOURNAL


def _copy_key(run: RunDir) -> str:
    """The folder of a bucket run's local journal copy: a hash of the run's URI and its id (run.json),
    so that the copy belongs to this run and not to a deleted one of the same name; a run made before
    ids were written: a hash of its URI alone (where its driver kept the copy)."""
    run_id = run.read_manifest().get("run_id")
    owner = run.uri if run_id is None else f"{run.uri}\n{run_id}"
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


def is_copied(run: RunDir) -> bool:
    """True when the journal is a local copy of RUN/optuna.journal (bucket storage)."""
    return run.local is None


def upload_journal(run: RunDir) -> None:
    """Copy the local journal into the bucket run folder up to its last complete line (atomic; a no-op
    for local runs): another thread may be appending a line, and a half-written one would read as
    "Invalid log format" later.

    Serialised: the conditions' threads upload the one journal, and an upload that read it earlier
    must not finish last (the bucket would keep the shorter copy)."""
    if not is_copied(run):
        return
    local = journal_path(run)
    if local.exists():
        with _UPLOAD_LOCK:
            data = local.read_bytes()
            complete = data[:data.rfind(b"\n") + 1]
            if complete:
                run.write_bytes(complete, JOURNAL)


def fetch_journal(run: RunDir) -> None:
    """Bring the bucket's journal to the local copy when the bucket holds a longer one (journals only grow)."""
    if not is_copied(run) or not run.exists(JOURNAL):
        return
    local = journal_path(run)
    data = run.read_text(JOURNAL).encode()  # the journal is JSON lines
    if local.exists() and local.stat().st_size >= len(data):
        return
    atomic_write(local, data)


def storage_setting(manifest: dict[str, Any]) -> str | None:
    """The manifest's `optuna_storage`: `journal`, an RDB URL, or None for a run made before studies were kept."""
    return manifest.get("optuna_storage")


def storage_location(run: RunDir, setting: str) -> str:
    """The run's Optuna storage as a user finds it: the journal file (this machine's copy for a bucket run), or
    the RDB URL."""
    return str(journal_path(run)) if setting == JOURNAL_STORAGE else setting


def storage_file(run: RunDir, setting: str) -> Path | None:
    """The file holding the run's Optuna storage: the journal, or an `sqlite:///PATH` database (None for
    another database)."""
    if setting == JOURNAL_STORAGE:
        return journal_path(run)
    return Path(setting.removeprefix("sqlite:///")) if setting.startswith("sqlite:///") else None


def open_storage(run: RunDir, setting: str) -> "optuna.storages.BaseStorage":
    """The Optuna storage object of a run (one per journal file or URL in this process)."""
    import optuna

    key = storage_location(run, setting)
    with _OPEN_LOCK:
        if key not in _OPEN:
            if setting == JOURNAL_STORAGE:
                path = Path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                _OPEN[key] = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
            else:
                try:
                    _OPEN[key] = optuna.storages.RDBStorage(setting)
                except Exception as exc:  # sqlalchemy: bad driver, unreachable server, ...
                    raise UserError(f"--optuna-storage {setting!r}: cannot open the database: {exc}") from None
        return _OPEN[key]


def check_storage_kept(run: RunDir, manifest: dict[str, Any]) -> None:
    """For reading commands (report, dashboard): once a condition has begun, its storage (the journal, or a
    sqlite file) must be there and not empty; a missing one is refused, never read as "no studies" (and a
    sqlite file is never created by reading it)."""
    setting = storage_setting(manifest)
    begun = [c["label"] for c in manifest["conditions"] if c["state"] != "pending"]
    if setting is None or not begun:
        return
    if setting == JOURNAL_STORAGE:
        fetch_journal(run)
    path = storage_file(run, setting)
    if path is None:   # another database: not a file to check
        return
    if not path.is_file() or path.stat().st_size == 0:
        raise UserError(f"{path}: the run's Optuna storage is {'empty' if path.is_file() else 'missing'}, yet "
                        f"condition(s) {', '.join(begun)} have run; put the file back (moved or restored from a "
                        "backup?) to read the run's studies")
    if setting == JOURNAL_STORAGE:
        warn_cut_short(path)


def storage_exists(run: RunDir, setting: str) -> bool:
    """Whether the run's storage is there to be read: opening a missing journal or sqlite file creates it, which
    a reading command must not do (another database: assumed there)."""
    path = storage_file(run, setting)
    return path is None or path.exists()


def warn_cut_short(journal: Path) -> None:
    """A journal whose last record is cut short (a driver killed mid-write, a truncated copy): Optuna skips
    that record without a word, so the studies read from it may lack their latest trials: said on stderr."""
    with open(journal, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
    print(f"warning: {journal}: its last record is cut short (the file does not end with a complete line: "
          "a driver killed while writing it, or a truncated copy); Optuna skips that record, so the studies "
          "read from it may lack their latest trials", file=sys.stderr)


def load_studies(run: RunDir) -> dict[str, "optuna.Study"]:
    """condition label -> its Optuna study, for every condition whose study has begun (in manifest order)."""
    import optuna

    manifest = run.read_manifest()
    setting = storage_setting(manifest)
    if setting is None:
        raise UserError(f"{run.uri}: this run keeps no Optuna studies (it predates them); "
                        "start a new run to get them")
    if setting == JOURNAL_STORAGE:
        fetch_journal(run)
    if not storage_exists(run, setting):   # no condition has begun (check_storage_kept refuses it otherwise)
        return {}
    try:
        storage = open_storage(run, setting)
        names = {s.study_name for s in storage.get_all_studies()}
    # a journal of junk (json.JSONDecodeError is a ValueError), or of JSON lines that are not Optuna's records:
    # replaying those fails inside Optuna with KeyError, TypeError or AssertionError ("Should not reach.")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise UserError(f"{storage_location(run, setting)}: damaged Optuna storage: {exc.__class__.__name__}: "
                        f"{exc}") from None
    return {c["label"]: optuna.load_study(study_name=study_name(run.name, c["label"]), storage=storage)
            for c in manifest["conditions"] if study_name(run.name, c["label"]) in names}
