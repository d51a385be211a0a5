"""TrainConfig: every hyperparameter of one DeepEmoCluster training run, validated.

Loaded from YAML (a flat mapping of the keys below; a `metadata` mapping is allowed and ignored)
and from `key=value` overrides. Errors name the key, the value and what is allowed. Value types are
checked against the fields' real type hints (typing.get_type_hints, resolved once at import; a
field of a type with no check is an import error), not a validation library: the dataclass stays
plain and the messages stay exactly ours.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

from model.corpora import ATTRIBUTES
from model.errors import ConfigError
from model.yaml_files import parse_yaml, read_yaml

TEMPORAL_MODULES = ("none", "gru", "cnn", "transformer", "triplet")   # model.network builds each
OPTIMIZERS = ("reference", "adam")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CV_GROUPS = ("speaker", "session")     # store columns cross-validation folds can group by
# Integer keys: (lowest, highest) allowed. The upper bounds stop a typo (an extra zero) from exhausting
# memory or running for days: they lie far above any useful value.
INT_RANGES = {
    "num_clusters": (2, 4096), "chunk_frames": (8, 1024), "chunks_per_sentence": (1, 256),
    "triplet_window": (1, 255), "triplets_per_sentence": (1, 1000), "unlabeled_pool": (0, 10**9),
    "epochs": (1, 100_000), "freeze_encoder_epochs": (0, 100_000), "batch_size": (1, 4096),
    "kmeans_iterations": (1, 10_000), "specaug_freq_masks": (0, 64), "specaug_time_masks": (0, 64),
    "embed_batch_chunks": (1, 1 << 16), "num_threads": (0, 1024), "seed": (0, 2**63 - 1),
}
INT_NOTES = {"unlabeled_pool": " (or null: all; 0: no SSL)", "num_threads": " (0 = the CPUs this process may use)"}


class InvalidValue(ConfigError):
    """A value TrainConfig.validate refuses; `key` names it (TrainConfig.from_dict says where it came from)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class TrainConfig:
    temporal: str = "gru"                 # none | gru | cnn | transformer | triplet
    num_clusters: int = 10                # K of k-means
    chunk_frames: int = 62                # m: frames per chunk (62 = 1 s)
    chunks_per_sentence: int = 11         # C: chunks per utterance
    triplet_margin: float = 1.0           # triplet variant: margin of the triplet loss
    triplet_window: int = 2               # triplet variant: positives lie within this chunk distance
    triplet_weight: float = 1.0           # triplet variant: gamma, weight of the triplet loss
    triplets_per_sentence: int = 10       # triplet variant: triplets drawn per sentence and step
    labeled_ratio: float = 1.0            # fraction of Train whose labels are kept (speaker-stratified)
    unlabeled_pool: int | None = None     # unlabeled sentences used per run: None = all, 0 = no SSL
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTES))  # trained jointly
    attribute_weights: dict[str, float] | None = None  # loss weight per trained attribute (missing: 1); "act=2,val=1"
    cv_folds: int = 0                     # k >= 2: k models on grouped folds of Train + Validation; 0 = the store's split
    cv_group: str = "speaker"             # what a fold keeps together: speaker | session (a store column)
    epochs: int = 30
    init_model: str | None = None          # start from this model file (encoder, and heads that fit); None = fresh
    freeze_encoder_epochs: int = 0         # keep the encoder frozen (eval mode, no updates) for the first n epochs
    batch_size: int = 64                  # sentences per batch (batch_size * C chunks)
    optimizer: str = "reference"          # reference: SGD + Adam + SGD(top layer); adam: Adam only
    lr_sgd: float = 1e-3                  # reference optimiser 1: SGD over all parameters
    lr_adam: float = 5e-4                 # reference optimiser 2 (and the adam-only optimiser)
    lr_top: float = 0.05                  # reference optimiser 3: SGD on the fresh cluster top layer
    momentum: float = 0.9                 # momentum of the reference's all-parameter SGD (DeepCluster's default)
    weight_decay: float = 1e-5
    dropout: float = 0.5                  # after the chunk embedding, temporal variants only
    width: float = 1.0                    # encoder channel multiplier (1.0 = the paper's network)
    kmeans_iterations: int = 20
    specaug_prob: float = 0.0             # SpecAugment: probability that a training chunk is masked (0 = off)
    specaug_freq_masks: int = 2           # SpecAugment: frequency masks per chunk
    specaug_freq_width: int = 16          # SpecAugment: a frequency mask covers up to this many mel bands
    specaug_time_masks: int = 2           # SpecAugment: time masks per chunk
    specaug_time_width: int = 8           # SpecAugment: a time mask covers up to this many frames (<= chunk_frames)
    pca_whitening: bool = False           # PCA-whitening + L2 normalisation before k-means
    precision: str = "auto"               # auto | fp32 | bf16 | fp16 (autocast)
    channels_last: bool = True            # channels-last memory format for the conv encoder
    embed_batch_chunks: int = 2048        # chunks per no-grad batch when embedding for k-means
    num_threads: int = 0                  # torch threads; 0 = the CPUs this process may use
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda | cuda:N

    def __post_init__(self):
        self.validate()

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config",
                  key_sources: dict[str, str] | None = None) -> "TrainConfig":
        """Build from a mapping; unknown keys and wrong values are errors naming `source`, or the key's
        own source in `key_sources` (`--set` for an override)."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")

        def where(key: str) -> str:
            return (key_sources or {}).get(key, source)

        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key == "metadata":
                continue
            if key not in known:
                raise ConfigError(f"{where(key)}: unknown key {key!r}; known keys: {', '.join(known)}")
            kwargs[key] = _coerce(key, value, FIELD_TYPES[key], where(key))
        try:
            return cls(**kwargs)
        except InvalidValue as exc:
            raise ConfigError(f"{where(exc.key)}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> "TrainConfig":
        """Defaults, then the YAML file (if any), then `key=value` overrides."""
        values: dict[str, Any] = {}
        source = "config"
        if path is not None:
            source = str(path)
            if Path(path).is_file() and Path(path).stat().st_size == 0:   # truncated to nothing, not "all defaults"
                raise ConfigError(f"{path}: the config file is empty; expected a mapping of config keys "
                                  "(write {} for all defaults)")
            values = read_yaml(path, ConfigError, "config file") or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
            values = dict(values)
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r}: expected key=value")
            values[key.strip()] = parse_yaml(raw, f"--set {item}", ConfigError) if raw.strip() else None
        return cls.from_dict(values, source, {item.partition("=")[0].strip(): "--set" for item in overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def loss_weights(self) -> list[float]:
        """The loss weight of each trained attribute, in the order of `attributes`."""
        weights = self.attribute_weights or {}
        return [float(weights.get(a, 1.0)) for a in self.attributes]

    def replace(self, **changes) -> "TrainConfig":
        return self.from_dict({**self.to_dict(), **changes})

    # ---- validation ----------------------------------------------------------------------
    def warnings(self) -> list[str]:
        """Valid settings that almost certainly do not do what was meant (printed when training starts).

        freeze_encoder_epochs is a warning, not an error: a search space may pair it with
        `init_model: {choices: [MODEL, null]}`, and its null branch must still train."""
        out = []
        if self.freeze_encoder_epochs and not self.init_model:
            out.append(f"freeze_encoder_epochs={self.freeze_encoder_epochs} without init_model: the encoder is "
                       "frozen at its random initialisation for those epochs (set init_model to fine-tune a "
                       "trained model, or freeze_encoder_epochs=0)")
        if self.freeze_encoder_epochs > self.epochs:
            out.append(f"freeze_encoder_epochs={self.freeze_encoder_epochs} > epochs={self.epochs}: the encoder "
                       "stays frozen for the whole run (only the heads train)")
        return out

    def _invalid(self, key: str, allowed: str) -> NoReturn:
        raise InvalidValue(key, f"{key}={getattr(self, key)!r} is invalid: expected {allowed}")

    def _check_numbers(self) -> None:
        """Integers within INT_RANGES; every float finite (from Python callers too: YAML and --set values are
        checked in _coerce)."""
        for key, (low, high) in INT_RANGES.items():
            value = getattr(self, key)
            if value is not None and not low <= value <= high:
                self._invalid(key, f"an integer >= {low} and <= {high}{INT_NOTES.get(key, '')}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                self._invalid(f.name, "a finite number (not NaN or infinity)")

    def validate(self) -> None:
        self._check_numbers()
        if self.temporal not in TEMPORAL_MODULES:
            self._invalid("temporal", "one of " + ", ".join(TEMPORAL_MODULES))
        if self.temporal == "triplet" and self.chunks_per_sentence < self.triplet_window + 2:
            self._invalid("chunks_per_sentence", f">= triplet_window + 2 = {self.triplet_window + 2} for "
                          "temporal=triplet (a negative must lie farther than the window)")
        if not self.triplet_margin > 0:
            self._invalid("triplet_margin", "a number > 0")
        if self.triplet_weight < 0:
            self._invalid("triplet_weight", "a number >= 0")
        if not 0 < self.labeled_ratio <= 1:
            self._invalid("labeled_ratio", "a number in (0, 1]")
        if not self.attributes or any(a not in ATTRIBUTES for a in self.attributes) \
                or len(set(self.attributes)) != len(self.attributes):
            self._invalid("attributes", "a non-empty list of distinct names from act, dom, val")
        if self.attribute_weights is not None:
            weights = self.attribute_weights
            if any(a not in self.attributes for a in weights) or any(w < 0 for w in weights.values()) \
                    or not any(weights.get(a, 1.0) > 0 for a in self.attributes):
                self._invalid("attribute_weights", "weights >= 0 for trained attributes "
                              f"({', '.join(self.attributes)}), not all 0, e.g. act=2,val=1 (a missing attribute "
                              "weighs 1)")
        if self.init_model is not None and not self.init_model.strip():
            self._invalid("init_model", "a model file path or null")
        if self.cv_folds != 0 and not 2 <= self.cv_folds <= 100:
            self._invalid("cv_folds",
                          "0 (train on Train, select on Validation) or an integer >= 2 and <= 100 (folds)")
        if self.cv_group not in CV_GROUPS:
            self._invalid("cv_group", "one of " + ", ".join(CV_GROUPS))
        if self.optimizer not in OPTIMIZERS:
            self._invalid("optimizer", "one of " + ", ".join(OPTIMIZERS))
        for key in ("lr_sgd", "lr_adam", "lr_top"):
            if not getattr(self, key) > 0:
                self._invalid(key, "a number > 0")
        if not 0 <= self.momentum < 1:
            self._invalid("momentum", "a number in [0, 1)")
        if self.weight_decay < 0:
            self._invalid("weight_decay", "a number >= 0")
        if not 0 <= self.dropout < 1:
            self._invalid("dropout", "a number in [0, 1)")
        if not 0 < self.width <= 4:
            self._invalid("width", "a number in (0, 4]")
        if not 0 <= self.specaug_prob <= 1:
            self._invalid("specaug_prob", "a number in [0, 1] (0 = no augmentation)")
        if not 1 <= self.specaug_freq_width <= 128:
            self._invalid("specaug_freq_width", "an integer in [1, 128] (mel bands)")
        if not 1 <= self.specaug_time_width <= self.chunk_frames:
            self._invalid("specaug_time_width", f"an integer in [1, chunk_frames={self.chunk_frames}] (frames)")
        if self.precision not in PRECISIONS:
            self._invalid("precision", "one of " + ", ".join(PRECISIONS))
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            self._invalid("device", "auto, cpu, cuda or cuda:N")


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of an annotation such as `int | None`."""
    if get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def _checked(tp: Any) -> bool:
    """Whether _coerce has a check for values of type `tp`."""
    base, _ = _optional(tp)
    return base in (bool, int, float, str) or (get_origin(base), get_args(base)) in ((list, (str,)),
                                                                                     (dict, (str, float)))


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """Check a raw YAML value against the field's type hint (ints are accepted for floats)."""
    def fail(expected):
        raise ConfigError(f"{source}: {key}={value!r} is invalid: expected {expected}")

    base, optional = _optional(tp)
    if value is None and optional:
        return None
    if get_origin(base) is list:   # list[str]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail("a list of strings")
        return value
    if get_origin(base) is dict:   # dict[str, float]
        if isinstance(value, str):   # "act=2,val=1": a plain value a search space can list as a choice
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            if not pairs or any(not sep for _, sep, _ in pairs):
                fail("a mapping of attribute to weight, e.g. act=2,val=1 or {act: 2, val: 1}")
            if len({k.strip() for k, _, _ in pairs}) < len(pairs):
                fail("each attribute once, e.g. act=2,val=1")
            try:
                value = {k.strip(): float(v) for k, _, v in pairs}
            except ValueError:
                fail("a mapping of attribute to weight, e.g. act=2,val=1 or {act: 2, val: 1}")
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) for k, v in value.items()):
            fail("a mapping of attribute to weight, e.g. act=2,val=1 or {act: 2, val: 1}")
        return {k: float(v) for k, v in value.items()}
    if base is bool:
        if not isinstance(value, bool):
            fail("true or false")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        try:
            value = float(value)
        except OverflowError:   # an integer beyond float range
            fail("a finite number")
        if not math.isfinite(value):
            fail("a finite number (not NaN or infinity)")
    elif base is str:
        if not isinstance(value, str):
            fail("a string")
    return value


# Every field's resolved type hint. A field of a type _coerce cannot check fails here, at import,
# never silently unchecked.
FIELD_TYPES: dict[str, Any] = get_type_hints(TrainConfig)
_unchecked = [f"{k}: {tp}" for k, tp in FIELD_TYPES.items() if not _checked(tp)]
if _unchecked:
    raise TypeError(f"TrainConfig fields without a type check in model.config._coerce: {', '.join(_unchecked)}")


def field_type(key: str) -> tuple[Any, bool]:
    """(type, None allowed) of a TrainConfig key: `unlabeled_pool: int | None` -> (int, True)."""
    return _optional(FIELD_TYPES[key])
