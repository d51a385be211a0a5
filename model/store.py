"""The feature store: every utterance's normalised frames in one memmappable array, plus an index.

A store is a folder (see docs/store.md): `frames.npy` [F, 128] z-normalised frames, `index.npy`
one structured row per utterance, `meta.json` (format, feature spec, norm and label terms, split
and speaker names, corpus fingerprint) and `report.json` (counts and problems by reason).

`prepare_store` builds it atomically (temporary folder beside the target, then rename) in two
passes: extract every utterance once in worker processes, caching raw float32 frames in the
temporary folder while accumulating the Train split's norm terms; then write the normalised frames.
`FeatureStore.open` maps it read-only in O(1) memory.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from itertools import islice
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from model.atomic_files import check_output_dir, replace_dir
from model.corpora import (ATTRIBUTES, EMPTY_AUDIO, IMPLAUSIBLE_AUDIO, KEPT_REASONS, LABEL_RANGE, POOL_SPLIT,
                           SHORT_UTTERANCE, SKIPPED_REASONS, TRAIN, UNREADABLE_AUDIO, Corpus, Problem, Utterance, read_corpus)
from model.devices import usable_cpus
from model.errors import CorpusError, StoreError, UserError
from model.locks import describe_holder, writer_lock

FORMAT = "deepemocluster-store/1"
DTYPES = ("float16", "float32")
DEFAULT_DTYPE = "float16"        # measured in docs/store.md: half the size, same batch time, error <= 1e-3
SHORT_FRAMES = 62                # utterances shorter than one reference chunk are counted (and kept)
VALIDATION_NAMES = ("validation", "development", "dev", "valid", "val")
SPLIT_ORDER = ("train", "validation", "development", "dev", "valid", "val")
EXAMPLES = 5                     # example paths per problem reason in the summary
STORE_FILES = ("frames.npy", "index.npy", "meta.json", "report.json")
WINDOW_PER_WORKER = 8           # extraction tasks in flight per worker process
BLOCK_ROWS = 1 << 16             # rows normalised per step in the second pass


def index_dtype(name_bytes: int) -> np.dtype:
    """The structured dtype of index.npy."""
    return np.dtype([("name", f"S{max(1, name_bytes)}"), ("offset", np.int64), ("length", np.int32),
                     ("act", np.float32), ("dom", np.float32), ("val", np.float32),
                     ("split", np.int8), ("speaker", np.int32), ("labeled", np.bool_)])


def open_hint(path: Path) -> str:
    return f"run `python -m tuner prepare CORPUS --out {path}` to build it"


def _load_array(file: Path) -> np.ndarray:
    """Memory-map one .npy file of a store (never unpickling); StoreError naming the file."""
    from model.safe_load import reason

    if not file.is_file():
        raise StoreError(f"{file.parent}: incomplete feature store (no {file.name}); {open_hint(file.parent)}")
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise StoreError(f"{file}: not a feature store array ({reason(exc)}); corrupt store, "
                         f"{open_hint(file.parent)}") from None


# ---- reading ------------------------------------------------------------------------------------
@dataclass
class FeatureStore:
    path: Path
    meta: dict[str, Any]
    frames: np.ndarray        # [F, n_mels] read-only memmap
    index: np.ndarray         # [N] structured, read-only memmap

    @classmethod
    def open(cls, path: str | Path) -> "FeatureStore":
        """Map a store read-only (O(1) memory); StoreError if it is missing, incomplete or another version."""
        path = Path(path)
        if not path.is_dir():
            raise StoreError(f"{path}: feature store not found; {open_hint(path)}")
        try:
            meta = json.loads((path / "meta.json").read_text())
        except FileNotFoundError:
            raise StoreError(f"{path}: incomplete feature store (no meta.json); {open_hint(path)}") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}/meta.json: unreadable ({exc}); {open_hint(path)}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise StoreError(f"{path}: store format {found!r}, this version reads {FORMAT!r}; {open_hint(path)}")
        frames, index = (_load_array(path / name) for name in ("frames.npy", "index.npy"))
        try:
            n_mels, n_frames, n_utts = meta["feature_spec"]["n_mels"], meta["frames"], meta["utterances"]
            for key in ("dtype", "splits", "speakers", "norm_terms", "label_terms"):
                meta[key]
        except (KeyError, TypeError) as exc:
            raise StoreError(f"{path}/meta.json: incomplete (missing {exc}); {open_hint(path)}") from None
        if (frames.ndim != 2 or frames.shape != (n_frames, n_mels) or frames.dtype.name != meta["dtype"]
                or index.shape != (n_utts,) or index.dtype.names is None
                or set(index_dtype(1).names) - set(index.dtype.names)):
            raise StoreError(f"{path}: frames.npy {frames.shape} {frames.dtype} / index.npy {index.shape} do not "
                             f"match meta.json ({meta['frames']} x {n_mels} {meta['dtype']}, {meta['utterances']} "
                             f"utterances); {open_hint(path)}")
        return cls(path, meta, frames, index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def feature_spec(self) -> dict[str, Any]:
        return self.meta["feature_spec"]

    @property
    def norm_terms(self):
        """The model.features.NormTerms the frames were normalised with."""
        from model.features import NormTerms

        return NormTerms(np.asarray(self.meta["norm_terms"]["mean"]), np.asarray(self.meta["norm_terms"]["std"]))

    @property
    def label_terms(self) -> dict[str, tuple[float, float]]:
        """attribute -> (mean, std) over the labeled Train utterances (1..7 scale)."""
        return {a: (float(m), float(s)) for a, (m, s) in self.meta["label_terms"].items()}

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    @property
    def speakers(self) -> list[str]:
        return list(self.meta["speakers"])

    @property
    def roles(self) -> dict[str, Any]:
        """Which split is train, which validation, which test ({"train": "Train", ...}; None if absent).

        meta.json's roles, each one it leaves empty (an older or hand-edited store) found by name."""
        given = {k: v for k, v in (self.meta.get("roles") or {}).items() if v is not None}
        return {**_roles(self.meta["splits"]), **given}

    def split_code(self, split: str) -> int:
        """Index code of a split name ("" = the unlabeled pool, -1)."""
        if split == POOL_SPLIT:
            return -1
        try:
            return self.meta["splits"].index(split)
        except ValueError:
            raise UserError(f"{self.path}: no split {split!r}; the store has "
                            f"{', '.join(self.meta['splits']) or 'only the unlabeled pool'}") from None

    def ids(self, split: str | Iterable[str] | None = None, labeled: bool | None = None) -> np.ndarray:
        """Row numbers (int64) of the utterances in `split` (a name, several, "" = pool) and/or labeled."""
        mask = np.ones(len(self.index), dtype=bool)
        if split is not None:
            names = [split] if isinstance(split, str) else list(split)
            mask &= np.isin(self.index["split"], [self.split_code(s) for s in names])
        if labeled is not None:
            mask &= self.index["labeled"] == bool(labeled)
        return np.flatnonzero(mask).astype(np.int64)

    def pool_ids(self) -> np.ndarray:
        """The unlabeled pool for SSL: pool utterances plus Train utterances without labels."""
        train = self.roles["train"]
        code = self.split_code(train) if train in self.meta["splits"] else -2
        rows = self.index
        return np.flatnonzero((rows["split"] == -1) | ((rows["split"] == code) & ~rows["labeled"])).astype(np.int64)

    def labels(self, idx, attributes: Iterable[str] = ATTRIBUTES, normalised: bool = False) -> np.ndarray:
        """[n, A] float32 labels (1..7, NaN if missing); z-normalised with label_terms if `normalised`."""
        attributes = list(attributes)
        rows = self.index[np.asarray(idx, dtype=np.int64)]
        out = np.zeros((len(rows), len(attributes)), dtype=np.float32)
        for j, a in enumerate(attributes):
            out[:, j] = rows[a]
        if normalised:
            terms = self.label_terms
            for j, a in enumerate(attributes):
                mean, std = terms[a]
                out[:, j] = (out[:, j] - mean) / std
        return out

    def names(self, idx) -> list[str]:
        return [n.decode() for n in self.index["name"][np.asarray(idx, dtype=np.int64)]]

    @property
    def report(self) -> dict[str, Any]:
        """report.json: counts and problems by reason."""
        return json.loads((self.path / "report.json").read_text())


# ---- building -----------------------------------------------------------------------------------
def fingerprint(corpus: Corpus, settings: dict[str, Any]) -> str:
    """Hash of the label table, each audio file's path, size and mtime, and the feature settings."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "kind": corpus.kind, **settings}, sort_keys=True).encode())
    if corpus.label_table is not None:
        h.update(corpus.label_table.read_bytes())
    for u in corpus.utterances:
        path = os.path.abspath(u.path)   # the same corpus named by a relative or absolute path
        try:
            st = os.stat(path)
            h.update(f"{u.name}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{u.name}\0{path}\0missing\n".encode())
    return h.hexdigest()


def _norm_files_digest(folder: Path | None) -> str | None:
    if folder is None:
        return None
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.mat")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


_KIND = "logmel"


def _init_worker(kind: str) -> None:
    """Set the feature kind this (worker) process extracts."""
    global _KIND
    _KIND = kind


def _extract_one(path: Path) -> tuple[np.ndarray | None, str, str, int]:
    """(features or None, problem reason, detail, samples) for one audio file.

    Readable but implausible audio (odd rate, silence, cut short) is kept: the reason is then
    IMPLAUSIBLE_AUDIO with the features.
    """
    from model.audio import EMPTY, AudioError, load_audio_checked
    from model.features import extract

    try:
        wave, warnings = load_audio_checked(path)
    except AudioError as exc:
        return None, EMPTY_AUDIO if exc.reason == EMPTY else UNREADABLE_AUDIO, str(exc), 0
    try:
        detail = f"{path}: " + "; ".join(warnings) + "; kept" if warnings else ""
        return extract(wave, _KIND), IMPLAUSIBLE_AUDIO if warnings else "", detail, int(wave.size)
    except Exception as exc:  # noqa: BLE001 - any failure of one file is recorded, not fatal
        return None, UNREADABLE_AUDIO, f"{path}: feature extraction failed ({exc.__class__.__name__}: {exc})", 0


def _extracted(paths: list[Path], kind: str, workers: int) -> Iterator[tuple]:
    """Yield _extract_one results in order, from `workers` processes (in-process for 1).

    At most WINDOW_PER_WORKER tasks per worker are in flight, so memory stays bounded and an
    interruption cancels the rest; a worker that dies (a decoder crash, out of memory) is an error.
    """
    if workers <= 1 or len(paths) <= 1:
        _init_worker(kind)
        for p in paths:
            yield _extract_one(p)
        return
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["model.store", "model.audio", "model.features"])
    else:
        ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(kind,))
    try:
        todo = iter(paths)
        pending = deque(pool.submit(_extract_one, p) for p in islice(todo, workers * WINDOW_PER_WORKER))
        while pending:
            try:
                result = pending.popleft().result()
            except BrokenProcessPool:
                raise UserError("a feature extraction worker died (out of memory, or a crash while decoding an "
                                "audio file); rerun with --workers 1 to find the file") from None
            for p in islice(todo, 1):
                pending.append(pool.submit(_extract_one, p))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _split_names(utterances: list[Utterance]) -> list[str]:
    """The utterances' split names, train and validation first, then the others by name."""
    return sorted({u.split for u in utterances if u.split != POOL_SPLIT},
                  key=lambda s: (SPLIT_ORDER.index(s.lower()) if s.lower() in SPLIT_ORDER else len(SPLIT_ORDER), s))


def _roles(splits: list[str]) -> dict[str, Any]:
    train = next((s for s in splits if s.lower() == TRAIN.lower()), None)
    validation = next((s for v in VALIDATION_NAMES for s in splits if s.lower() == v), None)
    return {"train": train, "validation": validation,
            "test": [s for s in splits if s not in (train, validation)]}


def _label_terms(index: np.ndarray, train_code: int | None, attributes: tuple[str, ...]) -> dict[str, list[float]]:
    if train_code is None:
        return {}
    rows = index[(index["split"] == train_code) & index["labeled"]]
    terms = label_terms(np.stack([rows[a] for a in attributes], axis=1), attributes)
    return {a: list(t) for a, t in terms.items()}


def label_terms(labels: np.ndarray, attributes: Iterable[str]) -> dict[str, tuple[float, float]]:
    """attribute -> (mean, std) of its labels ([n, A], NaN = missing; std 0 -> 1); attributes without a label left out."""
    terms = {}
    for j, a in enumerate(attributes):
        column = np.asarray(labels[:, j], dtype=np.float64)
        column = column[np.isfinite(column)]
        if len(column):
            std = float(column.std())
            terms[a] = (float(column.mean()), std if std > 0 else 1.0)
    return terms


def _summarise(problems: list[Problem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in problems:
        entry = out.setdefault(p.reason, {"count": 0, "kept": p.reason in KEPT_REASONS,
                                          "skipped": p.reason in SKIPPED_REASONS, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(p.path)
    return out


def prepare_store(corpus_path: str | Path, out: str | Path, features: str = "logmel",
                  norm_terms: str | Path | None = None, workers: int | None = None,
                  dtype: str = DEFAULT_DTYPE, unlabeled: Iterable[str | Path] = (), progress: bool = True,
                  force: bool = False, on_progress: Callable[[int], None] | None = None,
                  wait: bool = False, label_range: tuple[float, float] = LABEL_RANGE) -> dict[str, Any]:
    """Build (or confirm up to date) the store of a corpus; returns the report (status built|unchanged).

    One build per `out` at a time: another process preparing the same store is an error (LockHeld),
    or is waited for with wait=True.
    """
    from model.features import FeatureSpec, load_reference_norm_terms

    out = Path(out)
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    spec = FeatureSpec.from_dict({"kind": features})
    ref_terms = None
    if norm_terms is not None:
        if spec.kind != "reference":
            raise UserError(f"--norm-terms {norm_terms}: the reference's terms are for its mel power features; "
                            f"use them with --features reference (got --features {spec.kind})")
        ref_terms, _ = load_reference_norm_terms(norm_terms)   # the reference's label terms are not used
    check_output_dir(out)
    corpus = read_corpus(corpus_path, list(unlabeled), label_range)
    with writer_lock(out, "feature store (--out)", wait=wait) as previous:
        if previous and progress:
            print(f"note: took over the lock of a process that is gone ({describe_holder(previous)})",
                  file=sys.stderr)
        _remove_leftovers(out)
        return _prepare_locked(corpus, out, spec, ref_terms, norm_terms, workers, dtype,
                               progress, force, on_progress)


def _remove_leftovers(out: Path) -> None:
    """Temporary and old folders of earlier builds of `out` (we hold its lock: nobody else is building)."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stale in out.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _prepare_locked(corpus: Corpus, out: Path, spec, ref_terms, norm_terms, workers, dtype: str,
                    progress: bool, force: bool, on_progress) -> dict[str, Any]:
    """prepare_store's work once the lock on `out` is held."""
    settings = {"feature_spec": spec.to_dict(), "dtype": dtype, "norm_terms": _norm_files_digest(norm_terms),
                "short_frames": SHORT_FRAMES, "label_range": list(corpus.label_range)}
    fp = fingerprint(corpus, settings)
    if not force and (out / "meta.json").is_file():
        try:
            store = FeatureStore.open(out)
            if store.meta.get("fingerprint") == fp:
                report = store.report
                report["status"] = "unchanged"
                return report
        except (StoreError, OSError, ValueError):   # incomplete, or report.json missing or corrupt: rebuild
            pass
    if out.exists() and (not out.is_dir() or any(p.name not in STORE_FILES for p in out.iterdir())):
        raise UserError(f"{out}: exists and is not a feature store (it holds other files); "
                        "choose another --out or remove it")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        report = _build(corpus, tmp, spec, ref_terms, norm_terms, workers or usable_cpus(),
                        dtype, fp, progress, on_progress)
        report["store"] = str(out)
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _build(corpus: Corpus, tmp: Path, spec, ref_terms, norm_dir, workers: int, dtype: str,
           fp: str, progress: bool, on_progress) -> dict[str, Any]:
    """Both passes, writing frames.npy, index.npy and meta.json into `tmp`; returns the report."""
    from tqdm import tqdm

    from model.features import NormAccumulator

    utts = corpus.utterances
    problems = list(corpus.problems)
    train_split = _roles(_split_names(utts))["train"]

    # pass 1: extract once, cache raw float32 frames, accumulate the Train split's norm terms
    lengths = np.zeros(len(utts), dtype=np.int64)
    samples, cache_s = 0, 0.0
    train_acc, all_acc = NormAccumulator(), NormAccumulator()
    n_mels = spec.n_mels
    start = time.perf_counter()
    bar = tqdm(total=len(utts), unit="utt", desc="extracting", disable=not progress, dynamic_ncols=True)
    results = _extracted([u.path for u in utts], spec.kind, workers)
    with open(tmp / "raw.f32", "wb") as raw, closing(results), bar:
        for i, (feats, reason, detail, n) in enumerate(results):
            bar.update(1)
            if on_progress is not None:
                on_progress(i)
            if reason:
                problems.append(Problem(str(utts[i].path), reason, detail))
            if feats is None:
                continue
            feats = np.ascontiguousarray(feats, dtype=np.float32)
            lengths[i], samples = len(feats), samples + n
            t = time.perf_counter()
            raw.write(feats.tobytes())
            cache_s += time.perf_counter() - t
            if ref_terms is None:
                (train_acc if train_split and utts[i].split == train_split else all_acc).add(feats)
            if len(feats) < SHORT_FRAMES:
                problems.append(Problem(str(utts[i].path), SHORT_UTTERANCE,
                                        f"{len(feats)} frames < {SHORT_FRAMES} (one chunk); kept, padded"))
    extract_s = time.perf_counter() - start
    keep = np.flatnonzero(lengths > 0)
    if len(keep) == 0:
        counts = ", ".join(f"{r}: {v['count']}" for r, v in _summarise(problems).items())
        raise CorpusError(f"{corpus.root}: nothing usable: no utterance could be read ({counts})")

    if ref_terms is not None:
        terms, norm_source = ref_terms, f"reference:{Path(norm_dir).resolve()}"
    elif train_acc.count:
        terms, norm_source = train_acc.terms(), f"split:{train_split}"
    else:  # no Train split (an unlabeled-only corpus): every utterance
        terms, norm_source = all_acc.terms(), "all"

    # pass 2: normalise the cached frames block by block into frames.npy
    start = time.perf_counter()
    total = int(lengths.sum())   # > 0: every kept utterance has at least one frame
    rawmap = np.memmap(tmp / "raw.f32", dtype=np.float32, mode="r", shape=(total, n_mels))
    frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=dtype, shape=(total, n_mels))
    for a in range(0, total, BLOCK_ROWS):
        b = min(total, a + BLOCK_ROWS)
        frames[a:b] = terms.normalise(rawmap[a:b])
    frames.flush()
    del frames, rawmap
    os.unlink(tmp / "raw.f32")
    normalise_s = time.perf_counter() - start

    # index: kept utterances in corpus order; offsets follow the raw file's order (the same order)
    offsets = np.zeros(len(utts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    kept = [utts[i] for i in keep]
    splits = _split_names(kept)
    roles = _roles(splits)
    speakers = sorted({u.speaker for u in kept if u.speaker is not None})
    split_code = {s: i for i, s in enumerate(splits)}
    speaker_code = {s: i for i, s in enumerate(speakers)}
    index = np.zeros(len(kept), dtype=index_dtype(max((len(u.name.encode()) for u in kept), default=1)))
    index["name"] = [u.name.encode() for u in kept]
    index["offset"], index["length"] = offsets[keep], lengths[keep]
    for a in ATTRIBUTES:
        index[a] = [getattr(u, a) for u in kept]
    index["split"] = [split_code.get(u.split, -1) for u in kept]
    index["speaker"] = [speaker_code.get(u.speaker, -1) if u.speaker is not None else -1 for u in kept]
    index["labeled"] = [u.labeled for u in kept]
    np.save(tmp / "index.npy", index)

    hours = samples / spec.sample_rate / 3600
    meta = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "feature_spec": spec.to_dict(),
        "dtype": dtype,
        "frames": total,
        "utterances": len(kept),
        "hours": hours,
        "norm_terms": {"mean": terms.mean.tolist(), "std": terms.std.tolist(), "source": norm_source},
        "label_terms": _label_terms(index, split_code.get(roles["train"]), corpus.attributes),
        "attributes": list(corpus.attributes),
        "label_range": list(corpus.label_range),
        "splits": splits,
        "roles": roles,
        "speakers": speakers,
        "fingerprint": fp,
        "corpus": {"path": str(corpus.root), "kind": corpus.kind,
                   "label_table": str(corpus.label_table) if corpus.label_table else None,
                   "unlabeled": [str(d) for d in corpus.unlabeled_dirs]},
    }
    by_split = {}
    for name, code in [(s, split_code[s]) for s in splits] + [("(unlabeled pool)", -1)]:
        rows = index[index["split"] == code]
        if len(rows):
            by_split[name] = {"utterances": int(len(rows)), "labeled": int(rows["labeled"].sum()),
                              "hours": float(rows["length"].sum()) * spec.hop / spec.sample_rate / 3600}
    report = {
        "status": "built",
        "corpus": str(corpus.root),
        "kind": corpus.kind,
        "utterances": len(kept),
        "labeled": int(index["labeled"].sum()),
        "unlabeled": int((~index["labeled"]).sum()),
        "hours": hours,
        "frames": total,
        "by_split": by_split,
        "rejected": sum(1 for p in problems if p.reason not in KEPT_REASONS + SKIPPED_REASONS),
        "problems": _summarise(problems),
        "problem_list": [{"path": p.path, "reason": p.reason, "detail": p.detail} for p in problems],
        "audio_not_in_table": corpus.not_in_table,
        "extraction_seconds": extract_s,
        "cache_write_seconds": cache_s,
        "normalise_seconds": normalise_s,
        "realtime_factor": hours * 3600 / extract_s if extract_s > 0 else None,
        "workers": workers,
        "dtype": dtype,
        "features": spec.kind,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return report
