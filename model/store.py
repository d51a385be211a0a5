"""The feature store, read: every utterance's normalised frames in one memmappable array, plus an index.

A store is a folder (see docs/store.md): `frames.npy` [F, 128] z-normalised frames, `index.npy`
one structured row per utterance, `meta.json` (format, feature spec, norm and label terms, split
and speaker names, corpus fingerprint) and `report.json` (counts and problems by reason).
`FeatureStore.open` maps it read-only in O(1) memory; model.store_build writes it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from model.corpora import ATTRIBUTES, LABEL_RANGE, POOL_SPLIT, TRAIN
from model.errors import StoreError, UserError

FORMAT = "deepemocluster-store/1"
STORE_FILES = ("frames.npy", "index.npy", "meta.json", "report.json")
VALIDATION_NAMES = ("validation", "development", "dev", "valid", "val")   # a validation split, by name
CHECK_ROWS = 1 << 16             # frames checked for NaN/inf per step
REPORT_KEYS = ("store", "utterances", "labeled", "unlabeled", "hours", "frames", "dtype", "by_split", "rejected",
               "problems")
VERIFY_SAMPLE = 256              # utterances whose frames FeatureStore.verify checks


def index_dtype(name_bytes: int) -> np.dtype:
    """The structured dtype of index.npy."""
    return np.dtype([("name", f"S{max(1, name_bytes)}"), ("offset", np.int64), ("length", np.int32),
                     ("act", np.float32), ("dom", np.float32), ("val", np.float32),
                     ("split", np.int8), ("speaker", np.int32), ("labeled", np.bool_), ("session", np.int32)])


# index columns every store has (`session` came later: a store without it opens, and has no sessions)
REQUIRED_INDEX_COLUMNS = ("name", "offset", "length", "act", "dom", "val", "split", "speaker", "labeled")
GROUP_COLUMNS = ("speaker", "session")   # index columns that group utterances (cross-validation folds)


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
                or set(REQUIRED_INDEX_COLUMNS) - set(index.dtype.names)):
            raise StoreError(f"{path}: frames.npy {frames.shape} {frames.dtype} / index.npy {index.shape} do not "
                             f"match meta.json ({meta['frames']} x {n_mels} {meta['dtype']}, {meta['utterances']} "
                             f"utterances); {open_hint(path)}")
        return cls(path, meta, frames, index)

    def __len__(self) -> int:
        return len(self.index)

    # ---- in-depth checks (run, train, evaluate and sync-store --upload build on them) -----------
    def _corrupt(self, file: str, problem: str) -> StoreError:
        return StoreError(f"{self.path / file}: corrupt feature store: {problem}; rebuild it with "
                          f"`python -m tuner prepare CORPUS --out {self.path} --force`")

    def verify(self, sample: int | None = None) -> "FeatureStore":
        """Check that meta.json, index.npy and frames.npy agree (types, codes, offsets, labels) and that the
        frames of `sample` utterances spread over the store are finite; StoreError naming the file."""
        meta, index, n_frames = self.meta, self.index, len(self.frames)
        n_mels = self.frames.shape[1]
        splits, speakers = meta["splits"], meta["speakers"]
        if not (isinstance(splits, list) and all(isinstance(x, str) for x in splits)
                and isinstance(speakers, list) and all(isinstance(x, str) for x in speakers)):
            raise self._corrupt("meta.json", "splits and speakers must be lists of names")
        terms = meta["norm_terms"]
        try:
            mean, std = (np.asarray(terms[k], dtype=np.float64) for k in ("mean", "std"))
        except (KeyError, TypeError, ValueError):
            raise self._corrupt("meta.json", "norm_terms must hold lists `mean` and `std`") from None
        if mean.shape != (n_mels,) or std.shape != (n_mels,) or not np.isfinite(mean).all() \
                or not (np.isfinite(std).all() and (std > 0).all()):
            raise self._corrupt("meta.json", f"norm_terms must be {n_mels} finite means and positive stds")
        try:
            label_terms = {a: (float(m), float(s)) for a, (m, s) in meta["label_terms"].items()}
        except (AttributeError, TypeError, ValueError):
            raise self._corrupt("meta.json", "label_terms must map attributes to [mean, std]") from None
        if any(not (math.isfinite(m) and math.isfinite(s) and s > 0) for m, s in label_terms.values()):
            raise self._corrupt("meta.json", f"label_terms {label_terms} must be finite, stds > 0")
        for field, kind in (("offset", "i"), ("length", "i"), ("split", "i"), ("speaker", "i"), ("act", "f"),
                            ("dom", "f"), ("val", "f"), ("labeled", "b")):
            if index.dtype[field].kind != kind:
                raise self._corrupt("index.npy", f"field {field!r} has type {index.dtype[field]}")
        offset, length = index["offset"].astype(np.int64), index["length"].astype(np.int64)
        bad = np.flatnonzero((offset < 0) | (length < 1) | (offset + length > n_frames))
        if len(bad):
            i = int(bad[0])
            raise self._corrupt("index.npy", f"utterance {self.names([i])[0]!r} (row {i}) spans frames "
                                f"{offset[i]}..{offset[i] + length[i]} of the {n_frames} in frames.npy")
        for field, names in (("split", splits), ("speaker", speakers)):
            codes = index[field]
            if len(codes) and (codes.min() < -1 or codes.max() >= len(names)):
                raise self._corrupt("index.npy", f"{field} codes {int(codes.min())}..{int(codes.max())} outside "
                                    f"-1..{len(names) - 1} (the {len(names)} {field}s of meta.json)")
        low, high = meta.get("label_range") or LABEL_RANGE
        for a in ATTRIBUTES:
            values = index[a]
            wrong = np.flatnonzero(~np.isnan(values) & ((values < low) | (values > high) | ~np.isfinite(values)))
            if len(wrong):
                i = int(wrong[0])
                raise self._corrupt("index.npy", f"utterance {self.names([i])[0]!r} has {a}={float(values[i])}, "
                                    f"outside the label range {low:g}..{high:g} ({len(wrong)} such labels)")
        sample = VERIFY_SAMPLE if sample is None else sample
        picks = np.unique(np.linspace(0, len(index) - 1, min(sample, len(index))).astype(np.int64))
        self.check_frames(picks)
        return self

    def check_frames(self, ids=None, block_rows: int = CHECK_ROWS) -> None:
        """StoreError naming the first utterance (of `ids`, default all) whose frames are not finite."""
        index = self.index if ids is None else self.index[np.asarray(ids, dtype=np.int64)]
        rows = np.asarray(ids, dtype=np.int64) if ids is not None else np.arange(len(self.index))
        order = np.argsort(index["offset"], kind="stable")
        start = 0
        while start < len(order):   # utterances in file order, about block_rows frames at a time
            stop, frames = start, 0
            while stop < len(order) and (frames == 0 or frames + index["length"][order[stop]] <= block_rows):
                frames += int(index["length"][order[stop]])
                stop += 1
            group = order[start:stop]
            lo = int(index["offset"][group].min())
            hi = int((index["offset"][group] + index["length"][group]).max())
            block = np.asarray(self.frames[lo:hi])
            if not np.isfinite(block).all():
                for k in group:
                    a = int(index["offset"][k]) - lo
                    if not np.isfinite(block[a:a + int(index["length"][k])]).all():
                        raise self._corrupt("frames.npy", f"the frames of utterance "
                                            f"{self.names([rows[k]])[0]!r} hold NaN or inf")
            start = stop

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

    def groups(self, idx, column: str = "speaker") -> np.ndarray:
        """Group codes (int) of utterances `idx` by an index column (speaker or session); -1 = unknown."""
        if column not in GROUP_COLUMNS:
            raise StoreError(f"{self.path}: {column!r} is not a grouping column; expected one of "
                             f"{', '.join(GROUP_COLUMNS)}")
        if column not in self.index.dtype.names or not self.meta.get(column + "s"):
            raise StoreError(f"{self.path}: the store has no {column} ids (add a {column} column to the label "
                             "table or manifest and run `python -m tuner prepare` again)")
        return np.asarray(self.index[column][np.asarray(idx, dtype=np.int64)], dtype=np.int64)

    @property
    def roles(self) -> dict[str, Any]:
        """Which split is train, which validation, which test ({"train": "Train", ...}; None if absent).

        meta.json's roles, each one it leaves empty (an older or hand-edited store) found by name."""
        given = {k: v for k, v in (self.meta.get("roles") or {}).items() if v is not None}
        return {**split_roles(self.meta["splits"]), **given}

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
        """report.json: counts and problems by reason (StoreError when missing or damaged)."""
        try:
            report = json.loads((self.path / "report.json").read_text())
        except FileNotFoundError:
            raise StoreError(f"{self.path}: incomplete feature store (no report.json); {open_hint(self.path)}") from None
        except (OSError, ValueError) as exc:
            raise self._corrupt("report.json", f"not readable JSON ({exc})") from None
        missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
        if missing:
            raise self._corrupt("report.json", f"no {', '.join(missing)}")
        return report


def split_roles(splits: list[str]) -> dict[str, Any]:
    train = next((s for s in splits if s.lower() == TRAIN.lower()), None)
    validation = next((s for v in VALIDATION_NAMES for s in splits if s.lower() == v), None)
    return {"train": train, "validation": validation,
            "test": [s for s in splits if s not in (train, validation)]}


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
