"""The feature store, built: `prepare_store` reads a corpus and writes its store (model.store reads it).

The build is atomic (a temporary folder beside the target, then a rename) and runs in passes:
1. `_extract_pass`: extract every utterance once in worker processes, caching the raw float32
   frames in the temporary folder while accumulating the Train split's norm statistics;
2. `_norm_terms`: the reference's terms, the Train split's, or every utterance's;
3. `_normalise_pass`: the cached frames normalised block by block into frames.npy;
4. `_write_index`, `_meta`, `_report`: index.npy, meta.json and report.json.
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
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from model.atomic_files import check_output_dir, fsync_dir, replace_dir
from model.corpora import (ATTRIBUTES, EMPTY_AUDIO, IMPLAUSIBLE_AUDIO, KEPT_REASONS, LABEL_RANGE, POOL_SPLIT,
                           SHORT_UTTERANCE, SKIPPED_REASONS, UNREADABLE_AUDIO, Corpus, Problem, Utterance, read_corpus)
from model.devices import usable_cpus
from model.errors import CorpusError, StoreError, UserError
from model.features import SHORT_FRAMES   # utterances shorter than one reference chunk are counted (and kept)
from model.locks import describe_holder, writer_lock
from model.store import FORMAT, STORE_FILES, FeatureStore, index_dtype, label_terms, split_roles

DTYPES = ("float16", "float32")
DEFAULT_DTYPE = "float16"        # measured in docs/store.md: half the size, same batch time, error <= 1e-3
SPLIT_ORDER = ("train", "validation", "development", "dev", "valid", "val")
EXAMPLES = 5                     # example paths per problem reason in the summary
WINDOW_PER_WORKER = 8           # extraction tasks in flight per worker process
BLOCK_ROWS = 1 << 16             # rows normalised per step in the second pass


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
        ctx.set_forkserver_preload(["model.store_build", "model.audio", "model.features"])
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


def _label_terms(index: np.ndarray, train_code: int | None, attributes: tuple[str, ...]) -> dict[str, list[float]]:
    if train_code is None:
        return {}
    rows = index[(index["split"] == train_code) & index["labeled"]]
    terms = label_terms(np.stack([rows[a] for a in attributes], axis=1), attributes)
    return {a: list(t) for a, t in terms.items()}


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
    """Temporary folders of earlier builds of `out`, and the old stores replace_dir moves aside while it
    swaps in a new one (we hold the lock of `out`: nobody else is building).

    A build killed between replace_dir's two renames leaves no `out` and the old store as the only
    complete one: the newest complete old store is put back. An old store is deleted only once `out`
    is complete; otherwise it is kept, and a note says so."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    complete = bool(olds) and _complete(out)
    for old in olds:
        if complete:
            shutil.rmtree(old, ignore_errors=True)
        elif not out.exists() and _complete(old):
            os.rename(old, out)
            fsync_dir(out.parent)
            complete = True
            print(f"note: {out} was missing (a build was stopped while replacing it); the complete store it "
                  f"replaced, {old.name}, is back in its place", file=sys.stderr)
        else:
            print(f"note: kept {old}: it may be the only complete copy of the store while {out} is not complete; "
                  "the next prepare deletes it once the store is built", file=sys.stderr)


def _complete(store: Path) -> bool:
    """True when `store` is a whole feature store: it opens, passes FeatureStore.verify and has its report."""
    try:
        FeatureStore.open(store).verify().report
    except (StoreError, OSError, ValueError):
        return False
    return True


def _prepare_locked(corpus: Corpus, out: Path, spec, ref_terms, norm_terms, workers, dtype: str,
                    progress: bool, force: bool, on_progress) -> dict[str, Any]:
    """prepare_store's work once the lock on `out` is held."""
    settings = {"feature_spec": spec.to_dict(), "dtype": dtype, "norm_terms": _norm_files_digest(norm_terms),
                "short_frames": SHORT_FRAMES, "label_range": list(corpus.label_range)}
    if any(u.session is not None for u in corpus.utterances):
        settings["sessions"] = 1    # stores built before sessions were read are rebuilt for such corpora
    fp = fingerprint(corpus, settings)
    if not force and (out / "meta.json").is_file():
        try:
            store = FeatureStore.open(out)
            if store.meta.get("fingerprint") == fp and store.verify():   # a damaged store is rebuilt
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
    """The build's passes, writing frames.npy, index.npy and meta.json into `tmp`; returns the report."""
    problems = list(corpus.problems)
    train_split = split_roles(_split_names(corpus.utterances))["train"]
    extracted = _extract_pass(corpus, tmp, spec, ref_terms, train_split, workers, progress, on_progress, problems)
    terms, norm_source = _norm_terms(extracted, ref_terms, norm_dir, train_split)
    normalise_s = _normalise_pass(tmp, extracted.lengths, spec.n_mels, terms, dtype)
    index, splits, groups = _write_index(corpus.utterances, extracted.lengths, tmp)
    hours = extracted.samples / spec.sample_rate / 3600
    meta = _meta(corpus, spec, dtype, index, splits, groups, terms, norm_source, hours, fp)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return _report(corpus, spec, dtype, index, splits, problems, hours, workers, extracted, normalise_s)


@dataclass
class _Extracted:
    """What the extraction pass leaves: frames per utterance (0 = not kept), counts, norm statistics, times."""
    lengths: np.ndarray
    samples: int
    train_acc: Any
    all_acc: Any
    extract_s: float
    cache_s: float


def _extract_pass(corpus: Corpus, tmp: Path, spec, ref_terms, train_split: str | None, workers: int,
                  progress: bool, on_progress, problems: list[Problem]) -> _Extracted:
    """Pass 1: extract every utterance once, cache the raw float32 frames in tmp/raw.f32 and accumulate
    the Train split's norm statistics (all utterances' too, for a corpus without Train)."""
    from tqdm import tqdm

    from model.features import NormAccumulator

    utts = corpus.utterances
    lengths = np.zeros(len(utts), dtype=np.int64)
    samples, cache_s = 0, 0.0
    train_acc, all_acc = NormAccumulator(), NormAccumulator()
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
    if not (lengths > 0).any():
        counts = ", ".join(f"{r}: {v['count']}" for r, v in _summarise(problems).items())
        raise CorpusError(f"{corpus.root}: nothing usable: no utterance could be read ({counts})")
    return _Extracted(lengths, samples, train_acc, all_acc, time.perf_counter() - start, cache_s)


def _norm_terms(extracted: _Extracted, ref_terms, norm_dir, train_split: str | None) -> tuple[Any, str]:
    """The frames' norm terms and where they come from: the reference's, the Train split's, or all."""
    if ref_terms is not None:
        return ref_terms, f"reference:{Path(norm_dir).resolve()}"
    if extracted.train_acc.count:
        return extracted.train_acc.terms(), f"split:{train_split}"
    return extracted.all_acc.terms(), "all"   # no Train split (an unlabeled-only corpus): every utterance


def _normalise_pass(tmp: Path, lengths: np.ndarray, n_mels: int, terms, dtype: str) -> float:
    """Pass 2: normalise the cached frames block by block into frames.npy; returns its seconds."""
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
    return time.perf_counter() - start


def _write_index(utts: list[Utterance], lengths: np.ndarray,
                 tmp: Path) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """index.npy: the kept utterances in corpus order (offsets follow the raw file's, the same order);
    returns the index, the split names and {"speakers": names, "sessions": names} its codes point into."""
    keep = np.flatnonzero(lengths > 0)
    offsets = np.zeros(len(utts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    kept = [utts[i] for i in keep]
    splits = _split_names(kept)
    speakers = sorted({u.speaker for u in kept if u.speaker is not None})
    sessions = sorted({u.session for u in kept if u.session is not None})
    split_code = {s: i for i, s in enumerate(splits)}
    speaker_code = {s: i for i, s in enumerate(speakers)}
    session_code = {s: i for i, s in enumerate(sessions)}
    index = np.zeros(len(kept), dtype=index_dtype(max((len(u.name.encode()) for u in kept), default=1)))
    index["name"] = [u.name.encode() for u in kept]
    index["offset"], index["length"] = offsets[keep], lengths[keep]
    for a in ATTRIBUTES:
        index[a] = [getattr(u, a) for u in kept]
    index["split"] = [split_code.get(u.split, -1) for u in kept]
    index["speaker"] = [speaker_code.get(u.speaker, -1) if u.speaker is not None else -1 for u in kept]
    index["labeled"] = [u.labeled for u in kept]
    index["session"] = [session_code.get(u.session, -1) if u.session is not None else -1 for u in kept]
    np.save(tmp / "index.npy", index)
    return index, splits, {"speakers": speakers, "sessions": sessions}


def _meta(corpus: Corpus, spec, dtype: str, index: np.ndarray, splits: list[str], groups: dict[str, list[str]], terms,
          norm_source: str, hours: float, fp: str) -> dict[str, Any]:
    """meta.json's content."""
    roles = split_roles(splits)
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "feature_spec": spec.to_dict(),
        "dtype": dtype,
        "frames": int(index["length"].sum()),
        "utterances": len(index),
        "hours": hours,
        "norm_terms": {"mean": terms.mean.tolist(), "std": terms.std.tolist(), "source": norm_source},
        "label_terms": _label_terms(index, splits.index(roles["train"]) if roles["train"] else None,
                                    corpus.attributes),
        "attributes": list(corpus.attributes),
        "label_range": list(corpus.label_range),
        "splits": splits,
        "roles": roles,
        **groups,                      # speakers, sessions: the names the index's codes point into
        "fingerprint": fp,
        "corpus": {"path": str(corpus.root), "kind": corpus.kind,
                   "label_table": str(corpus.label_table) if corpus.label_table else None,
                   "unlabeled": [str(d) for d in corpus.unlabeled_dirs]},
    }


def _report(corpus: Corpus, spec, dtype: str, index: np.ndarray, splits: list[str], problems: list[Problem],
            hours: float, workers: int, extracted: _Extracted, normalise_s: float) -> dict[str, Any]:
    """report.json's content: counts by split, problems by reason, times."""
    by_split = {}
    for name, code in [(s, i) for i, s in enumerate(splits)] + [("(unlabeled pool)", -1)]:
        rows = index[index["split"] == code]
        if len(rows):
            by_split[name] = {"utterances": int(len(rows)), "labeled": int(rows["labeled"].sum()),
                              "hours": float(rows["length"].sum()) * spec.hop / spec.sample_rate / 3600}
    extract_s = extracted.extract_s
    return {
        "status": "built",
        "corpus": str(corpus.root),
        "kind": corpus.kind,
        "utterances": len(index),
        "labeled": int(index["labeled"].sum()),
        "unlabeled": int((~index["labeled"]).sum()),
        "hours": hours,
        "frames": int(index["length"].sum()),
        "by_split": by_split,
        "rejected": sum(1 for p in problems if p.reason not in KEPT_REASONS + SKIPPED_REASONS),
        "problems": _summarise(problems),
        "problem_list": [{"path": p.path, "reason": p.reason, "detail": p.detail} for p in problems],
        "audio_not_in_table": corpus.not_in_table,
        "extraction_seconds": extract_s,
        "cache_write_seconds": extracted.cache_s,
        "normalise_seconds": normalise_s,
        "realtime_factor": hours * 3600 / extract_s if extract_s > 0 else None,
        "workers": workers,
        "dtype": dtype,
        "features": spec.kind,
    }
