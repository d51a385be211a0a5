"""Corpus readers: MSP-Podcast layout, a manifest CSV, or plain folders of unlabeled audio.

`read_corpus(path, unlabeled=())` returns a `Corpus`: the utterances to extract and the problems
found while reading the label table (missing files, duplicate names, missing labels...). Problems
found later, while reading audio, are added by model.store_build. Nothing is dropped silently.

Accepted inputs
- MSP-Podcast: a folder with `Labels/labels_consensus.csv` (or the older `labels_concensus.csv`)
  and `Audio/`. Columns FileName, EmoAct, EmoDom, EmoVal, Split_Set (any set names), SpkrID
  (optional). FileName may carry the extension or not. An optional `Unlabeled/` folder inside the
  corpus is read recursively as the unlabeled pool.
- A manifest CSV (the .csv file, or a folder holding `manifest.csv`): see MANIFEST_COLUMNS.
  Audio paths are relative to the CSV's folder (absolute paths also work).
- A folder of audio files (wav/flac/ogg, recursive): an unlabeled pool only.
`unlabeled` adds more pool folders to any of them.

Folder walks follow symbolic links but visit every real file and folder once: a link loop or a
second link to the same folder is skipped (`symlink_loop`, `duplicate_folder`) and a file reached
twice is added once (`duplicate_file`). A label outside `label_range` (default 1..7, the
MSP-Podcast scale) or infinite is an `invalid_label`: reported with its table line and treated as
missing (the utterance stays, unlabeled). A FileName without extension that matches several audio
files (`a.wav`, `a.flac`) is an `ambiguous_file`, never a silent pick.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import CorpusError

# The audio files `prepare` and `predict` take from a folder: the formats soundfile's libsndfile
# (>= 1.1, bundled with soundfile >= 0.12) reads. Anything else in a folder is not audio.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
ATTRIBUTES = ("act", "dom", "val")
LABEL_TABLES = ("labels_consensus.csv", "labels_concensus.csv")
MANIFEST_NAME = "manifest.csv"
POOL_SPLIT = ""          # split of utterances in an unlabeled pool (code -1 in the store)
TRAIN = "Train"
UNKNOWN_SPEAKERS = {"", "unknown", "nan", "none", "na", "n/a", "-1"}
LABEL_RANGE = (1.0, 7.0)  # the MSP-Podcast scale; `prepare --label-range LOW HIGH` for other corpora

# Manifest column names accepted (case-insensitive) for each field.
MANIFEST_COLUMNS = {
    "path": ("path", "audio", "audio_path", "file", "filename", "wav"),
    "act": ("act", "arousal", "emoact"),
    "dom": ("dom", "dominance", "emodom"),
    "val": ("val", "valence", "emoval"),
    "split": ("split", "split_set", "set", "partition"),
    "speaker": ("speaker", "speaker_id", "spkrid", "spk"),
    "session": ("session", "session_id", "sessionid", "fold", "cv_fold"),
}
MSP_COLUMNS = {"path": ("filename",), "act": ("emoact",), "dom": ("emodom",), "val": ("emoval",),
               "split": ("split_set",), "speaker": ("spkrid",), "session": MANIFEST_COLUMNS["session"]}

# Problem reasons; KEPT_REASONS keep the utterance (it is counted, not rejected).
MISSING_FILE = "missing_file"
DUPLICATE_NAME = "duplicate_name"
DUPLICATE_FILE = "duplicate_file"
MISSING_LABELS = "missing_labels"
INVALID_LABEL = "invalid_label"
AMBIGUOUS_FILE = "ambiguous_file"
SYMLINK_LOOP = "symlink_loop"
DUPLICATE_FOLDER = "duplicate_folder"
MISSING_SPLIT = "missing_split"
UNREADABLE_AUDIO = "unreadable_audio"
EMPTY_AUDIO = "empty_audio"
SHORT_UTTERANCE = "short_utterance"
IMPLAUSIBLE_AUDIO = "implausible_audio"
KEPT_REASONS = (MISSING_LABELS, INVALID_LABEL, MISSING_SPLIT, SHORT_UTTERANCE, IMPLAUSIBLE_AUDIO)
SKIPPED_REASONS = (SYMLINK_LOOP, DUPLICATE_FOLDER)   # a folder walked once already: no file is lost


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
    session: str | None = None  # optional session or fold id (cross-validation groups; cv_group=session)


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
    label_range: tuple[float, float] = LABEL_RANGE


def read_corpus(path: str | Path, unlabeled: tuple | list = (),
                label_range: tuple[float, float] = LABEL_RANGE) -> Corpus:
    """Read any supported corpus (see the module doc); raises CorpusError if `path` is none of them."""
    low, high = check_label_range(label_range)
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"{root}: corpus not found (expected an MSP-Podcast folder with "
                          "Labels/labels_consensus.csv and Audio/, a manifest .csv, or a folder of audio files)")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise CorpusError(f"{root}: not a corpus: expected a manifest .csv file or a corpus folder")
        corpus = _read_manifest(root, (low, high))
    elif (table := _label_table(root)) is not None:
        corpus = _read_msp(root, table, (low, high))
    elif (root / MANIFEST_NAME).is_file():
        corpus = _read_manifest(root / MANIFEST_NAME, (low, high))
    elif (root / "Labels").is_dir():
        found = sorted(p.name for p in (root / "Labels").iterdir())
        raise CorpusError(f"{root / 'Labels'}: no label table: expected {' or '.join(LABEL_TABLES)}; "
                          f"found {', '.join(found) or 'nothing'}")
    else:
        corpus = Corpus(root, "unlabeled", None, label_range=(low, high))
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


def check_label_range(label_range) -> tuple[float, float]:
    """(low, high) of the label scale: two finite numbers, low < high; CorpusError otherwise."""
    try:
        low, high = (float(v) for v in label_range)
    except (TypeError, ValueError):
        raise CorpusError(f"label range {label_range!r}: expected two numbers LOW HIGH, e.g. 1 7") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise CorpusError(f"label range {low:g}..{high:g}: expected two finite numbers with LOW < HIGH, e.g. 1 7")
    return low, high


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the real file or folder behind `path` (None when it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def audio_files(folder: Path, problems: list[Problem] | None = None) -> list[Path]:
    """Every wav/flac/ogg file below `folder`, sorted, hidden files and folders skipped.

    Symbolic links are followed, but every real folder and file is visited once: loops and second
    links are skipped and, when `problems` is given, reported there.
    """
    found: list[Path] = []
    seen_dirs: dict[tuple[int, int], str] = {}
    seen_files: dict[tuple[int, int], Path] = {}

    def report(path: str, reason: str, detail: str) -> None:
        if problems is not None:
            problems.append(Problem(path, reason, detail))

    root_id = _identity(folder)
    if root_id is not None:
        seen_dirs[root_id] = str(folder)
    root_real = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            sub = os.path.join(dirpath, d)
            ident = _identity(sub)
            if ident is None:
                report(sub, UNREADABLE_AUDIO, "a folder link that leads nowhere; skipped")
            elif os.path.islink(sub) and (root_real + os.sep).startswith(os.path.realpath(sub).rstrip(os.sep) + os.sep):
                report(sub, SYMLINK_LOOP, f"a link to {os.path.realpath(sub)}, which holds {folder} itself (a loop); "
                       "skipped, its files are listed once")
            elif ident in seen_dirs:
                first = seen_dirs[ident]
                inside = first == str(folder) or sub.startswith(first.rstrip(os.sep) + os.sep)
                report(sub, SYMLINK_LOOP if inside else DUPLICATE_FOLDER,
                       f"the same folder as {first} ({'a link back into it: a loop' if inside else 'a second link'}); "
                       "skipped, its files are listed once")
            else:
                seen_dirs[ident] = sub
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            if f.startswith(".") or not f.lower().endswith(AUDIO_EXTENSIONS):
                continue
            path = Path(dirpath) / f
            ident = _identity(path)
            if ident is not None and ident in seen_files:
                report(str(path), DUPLICATE_FILE, f"the same file as {seen_files[ident]} (a link); listed once")
                continue
            if ident is not None:
                seen_files[ident] = path
            found.append(path)
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


MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}


def _label(value: str | None, label_range: tuple[float, float]) -> tuple[float, str]:
    """(value, problem): NaN with "" when missing or not a number, NaN with a reason when out of range."""
    text = (value or "").strip()
    try:
        x = float(text)
    except ValueError:
        return math.nan, ""
    if text.lower() in MISSING_TEXT or math.isnan(x):
        return math.nan, ""
    low, high = label_range
    if not math.isfinite(x):
        return math.nan, "not finite"
    if not low <= x <= high:
        return math.nan, f"outside the label range {low:g}..{high:g}"
    return x, ""


def _speaker(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value.lower() in UNKNOWN_SPEAKERS else value


def _add_rows(corpus: Corpus, table: Path, rows: list[dict[str, str]], cols: dict[str, str],
              resolve, default_split: str | None) -> None:
    """Turn label-table rows into utterances, recording every row that cannot be used as is."""
    corpus.attributes = tuple(a for a in ATTRIBUTES if a in cols)
    seen = {u.name for u in corpus.utterances}
    seen_files = {_identity(u.path): u.path for u in corpus.utterances}
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
        if isinstance(audio, list):
            corpus.problems.append(Problem(raw, AMBIGUOUS_FILE, f"{where}: matches {len(audio)} audio files ("
                                           f"{', '.join(str(a) for a in audio)}); name the file with its "
                                           "extension in the label table; this row is ignored"))
            continue
        if name in seen:
            corpus.problems.append(Problem(str(audio), DUPLICATE_NAME,
                                           f"{where}: {name!r} already listed; this row is ignored"))
            continue
        identity = _identity(audio)   # None (unreadable) is never a duplicate: the extraction reports it
        if identity is not None and identity in seen_files:
            first = seen_files[identity]
            corpus.problems.append(Problem(str(audio), DUPLICATE_FILE, f"{where}: file already listed"
                                           + (f" as {first}" if first != audio else "")))
            continue
        parsed = {a: _label(row.get(cols[a]), corpus.label_range) for a in corpus.attributes}
        labels = {a: v for a, (v, _) in parsed.items()}
        split = (row.get(cols["split"]) or "").strip() if "split" in cols else (default_split or "")
        labeled = bool(corpus.attributes) and all(not math.isnan(v) for v in labels.values())
        invalid = [f"{a}={(row.get(cols[a]) or '').strip()!r} {why}" for a, (_, why) in parsed.items() if why]
        if invalid:
            corpus.problems.append(Problem(str(audio), INVALID_LABEL,
                                           f"{where}: {', '.join(invalid)}; treated as missing, kept as unlabeled"))
        missing = [f"{a}={(row.get(cols[a]) or '').strip()!r}" for a, (v, why) in parsed.items()
                   if math.isnan(v) and not why]
        if corpus.attributes and missing:
            corpus.problems.append(Problem(str(audio), MISSING_LABELS,
                                           f"{where}: {', '.join(missing)}; kept as unlabeled"))
        if not split:
            corpus.problems.append(Problem(str(audio), MISSING_SPLIT,
                                           f"{where}: no split; kept in the unlabeled pool"))
            labeled = False
        speaker = _speaker(row.get(cols["speaker"])) if "speaker" in cols else None
        session = _speaker(row.get(cols["session"])) if "session" in cols else None
        seen.add(name)
        if identity is not None:
            seen_files[identity] = audio
        corpus.utterances.append(Utterance(name, audio, labels.get("act", math.nan), labels.get("dom", math.nan),
                                           labels.get("val", math.nan), split, speaker, labeled, session))


def _strip_audio_ext(name: str) -> str:
    return name[: -len(Path(name).suffix)] if name.lower().endswith(AUDIO_EXTENSIONS) else name


def _read_msp(root: Path, table: Path, label_range: tuple[float, float]) -> Corpus:
    corpus = Corpus(root, "msp-podcast", table, label_range=label_range)
    header, rows = _read_rows(table)
    cols = _columns(table, header, MSP_COLUMNS)
    audio_dir = root / "Audio"
    by_rel: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    if audio_dir.is_dir():
        for f in audio_files(audio_dir, corpus.problems):
            rel = f.relative_to(audio_dir).as_posix()
            by_rel[rel] = f
            for key in dict.fromkeys((_strip_audio_ext(rel), f.stem)):
                by_stem.setdefault(key, []).append(f)
    used: set[Path] = set()

    def resolve(raw: str) -> Path | list[Path] | None:
        """The file a FileName names; a list when it matches several (same stem, other extensions)."""
        raw = raw.replace("\\", "/")
        hit = by_rel.get(raw)
        if hit is None:
            candidates = by_stem.get(_strip_audio_ext(raw), [])
            if len(candidates) > 1:
                return candidates
            hit = candidates[0] if candidates else None
        if hit is not None:
            used.add(hit)
        return hit

    _add_rows(corpus, table, rows, cols, resolve, None)
    corpus.not_in_table = len(set(by_rel.values()) - used)
    if (root / "Unlabeled").is_dir():
        _add_pool(corpus, root / "Unlabeled")
    return corpus


def _read_manifest(table: Path, label_range: tuple[float, float]) -> Corpus:
    corpus = Corpus(table.parent, "manifest", table, label_range=label_range)
    header, rows = _read_rows(table)
    cols = _columns(table, header, MANIFEST_COLUMNS)

    def resolve(raw: str) -> Path | None:
        p = Path(raw)
        p = p if p.is_absolute() else table.parent / p
        return p if p.is_file() else None

    _add_rows(corpus, table, rows, cols, resolve, TRAIN)
    return corpus


def _add_pool(corpus: Corpus, folder: Path) -> None:
    """Add every audio file below `folder` as an unlabeled pool utterance (each real file once)."""
    seen = {u.name for u in corpus.utterances}
    seen_files = {_identity(u.path): u.path for u in corpus.utterances}
    try:
        prefix = folder.resolve().relative_to(corpus.root.resolve()).as_posix()
    except ValueError:
        prefix = folder.name
    for f in audio_files(folder, corpus.problems):
        rel = f.relative_to(folder).as_posix()
        name = _strip_audio_ext(rel if prefix == "." else f"{prefix}/{rel}")
        ident = _identity(f)
        if ident in seen_files:
            first = seen_files[ident]
            corpus.problems.append(Problem(str(f), DUPLICATE_FILE, "already listed" + (
                f" as {first}" if first != f else "") + f"; not added again from {folder}"))
            continue
        if name in seen:
            corpus.problems.append(Problem(str(f), DUPLICATE_NAME, f"{name!r} already listed; this file is ignored"))
            continue
        seen.add(name)
        seen_files[ident] = f
        corpus.utterances.append(Utterance(name, f))
