"""Corpus readers: MSP-Podcast layout, a manifest CSV, or plain folders of unlabeled audio.

`read_corpus(path, unlabeled=())` returns a `Corpus`: the utterances to extract and the problems
found while reading the label table (missing files, duplicate names, missing labels...). Problems
found later, while reading audio, are added by model.store. Nothing is dropped silently.

Accepted inputs
- MSP-Podcast: a folder with `Labels/labels_consensus.csv` (or the older `labels_concensus.csv`)
  and `Audio/`. Columns FileName, EmoAct, EmoDom, EmoVal, Split_Set (any set names), SpkrID
  (optional). FileName may carry the extension or not. An optional `Unlabeled/` folder inside the
  corpus is read recursively as the unlabeled pool.
- A manifest CSV (the .csv file, or a folder holding `manifest.csv`): see MANIFEST_COLUMNS.
  Audio paths are relative to the CSV's folder (absolute paths also work).
- A folder of audio files (wav/flac/ogg, recursive): an unlabeled pool only.
`unlabeled` adds more pool folders to any of them.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import CorpusError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
ATTRIBUTES = ("act", "dom", "val")
LABEL_TABLES = ("labels_consensus.csv", "labels_concensus.csv")
MANIFEST_NAME = "manifest.csv"
POOL_SPLIT = ""          # split of utterances in an unlabeled pool (code -1 in the store)
TRAIN = "Train"
UNKNOWN_SPEAKERS = {"", "unknown", "nan", "none", "na", "n/a", "-1"}

# Manifest column names accepted (case-insensitive) for each field.
MANIFEST_COLUMNS = {
    "path": ("path", "audio", "audio_path", "file", "filename", "wav"),
    "act": ("act", "arousal", "emoact"),
    "dom": ("dom", "dominance", "emodom"),
    "val": ("val", "valence", "emoval"),
    "split": ("split", "split_set", "set", "partition"),
    "speaker": ("speaker", "speaker_id", "spkrid", "spk"),
}
MSP_COLUMNS = {"path": ("filename",), "act": ("emoact",), "dom": ("emodom",), "val": ("emoval",),
               "split": ("split_set",), "speaker": ("spkrid",)}

# Problem reasons; KEPT_REASONS keep the utterance (it is counted, not rejected).
MISSING_FILE = "missing_file"
DUPLICATE_NAME = "duplicate_name"
DUPLICATE_FILE = "duplicate_file"
MISSING_LABELS = "missing_labels"
MISSING_SPLIT = "missing_split"
UNREADABLE_AUDIO = "unreadable_audio"
EMPTY_AUDIO = "empty_audio"
SHORT_UTTERANCE = "short_utterance"
KEPT_REASONS = (MISSING_LABELS, MISSING_SPLIT, SHORT_UTTERANCE)


@dataclass(frozen=True)
class Utterance:
    name: str                 # unique within the corpus
    path: Path                # the audio file
    act: float = math.nan     # 1..7 scale, NaN when missing
    dom: float = math.nan
    val: float = math.nan
    split: str = POOL_SPLIT   # e.g. Train, Validation, Test1; "" = unlabeled pool
    speaker: str | None = None
    labeled: bool = False     # every attribute the corpus provides is present


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str
    detail: str


@dataclass
class Corpus:
    root: Path
    kind: str                              # msp-podcast | manifest | unlabeled
    label_table: Path | None               # the CSV the labels came from
    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    attributes: tuple[str, ...] = ()       # attributes the label table provides
    unlabeled_dirs: tuple[Path, ...] = ()
    not_in_table: int = 0                  # audio files under Audio/ that the table does not name


def read_corpus(path: str | Path, unlabeled: tuple | list = ()) -> Corpus:
    """Read any supported corpus (see the module doc); raises CorpusError if `path` is none of them."""
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"{root}: corpus not found (expected an MSP-Podcast folder with "
                          "Labels/labels_consensus.csv and Audio/, a manifest .csv, or a folder of audio files)")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise CorpusError(f"{root}: not a corpus: expected a manifest .csv file or a corpus folder")
        corpus = _read_manifest(root)
    elif (table := _label_table(root)) is not None:
        corpus = _read_msp(root, table)
    elif (root / MANIFEST_NAME).is_file():
        corpus = _read_manifest(root / MANIFEST_NAME)
    elif (root / "Labels").is_dir():
        found = sorted(p.name for p in (root / "Labels").iterdir())
        raise CorpusError(f"{root / 'Labels'}: no label table: expected {' or '.join(LABEL_TABLES)}; "
                          f"found {', '.join(found) or 'nothing'}")
    else:
        corpus = Corpus(root, "unlabeled", None)
        _add_pool(corpus, root)
        if not corpus.utterances and not unlabeled:
            raise CorpusError(
                f"{root}: not a corpus: found no Labels/labels_consensus.csv (or labels_concensus.csv), "
                f"no {MANIFEST_NAME} and no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    for extra in unlabeled:
        extra = Path(extra)
        if not extra.is_dir():
            raise CorpusError(f"{extra}: unlabeled pool folder not found")
        corpus.unlabeled_dirs += (extra,)
        _add_pool(corpus, extra)
    if not corpus.utterances:
        raise CorpusError(f"{root}: no usable utterance: " + _problem_summary(corpus.problems))
    return corpus


def audio_files(folder: Path) -> list[Path]:
    """Every wav/flac/ogg file below `folder`, sorted, hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames
                  if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(found)


def _label_table(root: Path) -> Path | None:
    for name in LABEL_TABLES:
        if (root / "Labels" / name).is_file():
            return root / "Labels" / name
    return None


def _problem_summary(problems: list[Problem]) -> str:
    if not problems:
        return "the label table lists no utterances"
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.reason] = counts.get(p.reason, 0) + 1
    return ", ".join(f"{n} {r}" for r, n in counts.items())


def _read_rows(table: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])   # as the rows' keys are: _columns matches them stripped
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"{table}: cannot read the CSV ({exc})") from None
    return header, rows


def _columns(table: Path, header: list[str], accepted: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Map each field to the header name that provides it; the audio path column is required."""
    by_lower = {h.strip().lower(): h for h in header}
    found = {}
    for key, names in accepted.items():
        for name in names:
            if name in by_lower:
                found[key] = by_lower[name]
                break
    if "path" not in found:
        raise CorpusError(f"{table}: no audio file column: expected one of {', '.join(accepted['path'])} "
                          f"(case-insensitive); found columns {', '.join(h.strip() for h in header) or 'none'}")
    return found


def _label(value: str | None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _speaker(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value.lower() in UNKNOWN_SPEAKERS else value


def _add_rows(corpus: Corpus, table: Path, rows: list[dict[str, str]], cols: dict[str, str],
              resolve, default_split: str | None) -> None:
    """Turn label-table rows into utterances, recording every row that cannot be used as is."""
    corpus.attributes = tuple(a for a in ATTRIBUTES if a in cols)
    seen = {u.name for u in corpus.utterances}
    seen_paths = {u.path for u in corpus.utterances}
    for line, row in enumerate(rows, start=2):
        raw = (row.get(cols["path"]) or "").strip()
        where = f"{table}:{line}"
        if not raw:
            corpus.problems.append(Problem(where, MISSING_FILE, "empty audio file name"))
            continue
        audio = resolve(raw)
        name = _strip_audio_ext(raw)
        if audio is None:
            corpus.problems.append(Problem(raw, MISSING_FILE, f"named in {where} but not found"))
            continue
        if name in seen:
            corpus.problems.append(Problem(str(audio), DUPLICATE_NAME,
                                           f"{where}: {name!r} already listed; this row is ignored"))
            continue
        if audio in seen_paths:
            corpus.problems.append(Problem(str(audio), DUPLICATE_FILE, f"{where}: file already listed"))
            continue
        labels = {a: _label(row.get(cols[a])) for a in corpus.attributes}
        split = (row.get(cols["split"]) or "").strip() if "split" in cols else (default_split or "")
        labeled = bool(corpus.attributes) and all(not math.isnan(v) for v in labels.values())
        if corpus.attributes and not labeled:
            bad = [f"{a}={(row.get(cols[a]) or '').strip()!r}" for a in corpus.attributes if math.isnan(labels[a])]
            corpus.problems.append(Problem(str(audio), MISSING_LABELS,
                                           f"{where}: {', '.join(bad)}; kept as unlabeled"))
        if not split:
            corpus.problems.append(Problem(str(audio), MISSING_SPLIT,
                                           f"{where}: no split; kept in the unlabeled pool"))
            labeled = False
        speaker = _speaker(row.get(cols["speaker"])) if "speaker" in cols else None
        seen.add(name)
        seen_paths.add(audio)
        corpus.utterances.append(Utterance(name, audio, labels.get("act", math.nan), labels.get("dom", math.nan),
                                           labels.get("val", math.nan), split, speaker, labeled))


def _strip_audio_ext(name: str) -> str:
    return name[: -len(Path(name).suffix)] if name.lower().endswith(AUDIO_EXTENSIONS) else name


def _read_msp(root: Path, table: Path) -> Corpus:
    corpus = Corpus(root, "msp-podcast", table)
    header, rows = _read_rows(table)
    cols = _columns(table, header, MSP_COLUMNS)
    audio_dir = root / "Audio"
    by_rel: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    if audio_dir.is_dir():
        for f in audio_files(audio_dir):
            rel = f.relative_to(audio_dir).as_posix()
            by_rel[rel] = f
            by_stem.setdefault(_strip_audio_ext(rel), f)
            by_stem.setdefault(f.stem, f)
    used: set[Path] = set()

    def resolve(raw: str) -> Path | None:
        raw = raw.replace("\\", "/")
        hit = by_rel.get(raw) or by_stem.get(_strip_audio_ext(raw))
        if hit is not None:
            used.add(hit)
        return hit

    _add_rows(corpus, table, rows, cols, resolve, None)
    corpus.not_in_table = len(set(by_rel.values()) - used)
    if (root / "Unlabeled").is_dir():
        _add_pool(corpus, root / "Unlabeled")
    return corpus


def _read_manifest(table: Path) -> Corpus:
    corpus = Corpus(table.parent, "manifest", table)
    header, rows = _read_rows(table)
    cols = _columns(table, header, MANIFEST_COLUMNS)

    def resolve(raw: str) -> Path | None:
        p = Path(raw)
        p = p if p.is_absolute() else table.parent / p
        return p if p.is_file() else None

    _add_rows(corpus, table, rows, cols, resolve, TRAIN)
    return corpus


def _add_pool(corpus: Corpus, folder: Path) -> None:
    """Add every audio file below `folder` as an unlabeled pool utterance."""
    seen = {u.name for u in corpus.utterances}
    seen_paths = {u.path for u in corpus.utterances}
    try:
        prefix = folder.resolve().relative_to(corpus.root.resolve()).as_posix()
    except ValueError:
        prefix = folder.name
    for f in audio_files(folder):
        rel = f.relative_to(folder).as_posix()
        name = _strip_audio_ext(rel if prefix == "." else f"{prefix}/{rel}")
        if f in seen_paths:
            corpus.problems.append(Problem(str(f), DUPLICATE_FILE, f"already listed; not added again from {folder}"))
            continue
        if name in seen:
            corpus.problems.append(Problem(str(f), DUPLICATE_NAME, f"{name!r} already listed; this file is ignored"))
            continue
        seen.add(name)
        seen_paths.add(f)
        corpus.utterances.append(Utterance(name, f))
