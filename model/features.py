"""Frame features (mel power / log-mel) and their per-band z-normalisation.

Both kinds start from the same mel power spectrogram of the peak-normalised wave: centred frames
(reflect padding of n_fft // 2 on each side, so T = 1 + len // hop), a periodic Hann window, |STFT|^2,
and a Slaney-scale mel filter bank with Slaney area normalisation (fmin 0, fmax sr / 2).
- `reference`: that mel power itself: the reference implementation's features (librosa's
  melspectrogram with its defaults, including its tail padding, see `centre_pad`), which its
  published checkpoints expect.
- `logmel`: 10 * log10(max(power, 1e-10)): decibels re. full-scale power with a -100 dB floor, so
  silence stays finite. Deep bins carry real information in dB, hence float64 throughout.
The peak normalisation is done in float32 like the reference's (it decides the near-zero bins of
tonal audio: dividing in float64 instead moves bins 1e-12 below the maximum by 0.4 %); the spectrum
is computed in float64 (float32 costs bins > 60 dB below the peak their precision and saves little:
extraction runs at > 1000x real time either way) and the result is returned as float32.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat
from scipy.sparse import csr_matrix

from model.audio import SAMPLE_RATE
from model.corpora import ATTRIBUTES
from model.errors import UserError

N_FFT = 512
HOP = 256
N_MELS = 128
KINDS = ("logmel", "reference")
SHORT_FRAMES = 62   # fewer frames than one reference chunk: `prepare` lists the utterance, `predict` warns
LOG_FLOOR = 1e-10   # power floor before the log: silence maps to -100 dB, never -inf
# Slaney mel scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4 (log-spaced).
_F_SP, _MIN_LOG_HZ = 200.0 / 3, 1000.0
_MIN_LOG_MEL, _LOGSTEP = _MIN_LOG_HZ / _F_SP, np.log(6.4) / 27.0


@dataclass(frozen=True)
class FeatureSpec:
    kind: str = "logmel"            # "logmel" (dB) or "reference" (mel power, the reference's features)
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop: int = HOP
    n_mels: int = N_MELS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON/YAML and model files."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        """Validate and build; raises UserError naming the offending key."""
        if not isinstance(d, dict):
            raise UserError(f"feature spec: expected a mapping, got {type(d).__name__}")
        fixed = {f.name: f.default for f in fields(cls)}
        for key in d:
            if key not in fixed:
                raise UserError(f"feature spec: unknown key {key!r} (expected one of {sorted(fixed)})")
        kind = d.get("kind", fixed["kind"])
        if kind not in KINDS:
            raise UserError(f"feature spec: key 'kind' is {kind!r}, expected one of {list(KINDS)}")
        for key in ("sample_rate", "n_fft", "hop", "n_mels"):
            value = d.get(key, fixed[key])
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value != fixed[key]:
                raise UserError(f"feature spec: key {key!r} is {value!r}, the only supported value is {fixed[key]}")
        return cls(kind=kind)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of hz_to_mel."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


@lru_cache(maxsize=None)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] float64 triangular Slaney filters with area (Slaney) normalisation."""
    fft_freqs = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=None)
def _filters_sparse() -> csr_matrix:
    """The filter bank as a sparse [n_mels, 1 + n_fft // 2] matrix (~500 non-zeros of 33k)."""
    return csr_matrix(mel_filterbank())


@lru_cache(maxsize=None)
def _window() -> np.ndarray:
    """Periodic Hann window of N_FFT samples."""
    n = np.arange(N_FFT, dtype=np.float64)
    out = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)
    out.flags.writeable = False
    return out


def peak_normalise(wave: np.ndarray) -> np.ndarray:
    """float32 wave scaled to max |x| = 1 (divided in float32, as the reference does); all-zero stays zero."""
    wave = np.asarray(wave, dtype=np.float32)
    peak = np.max(np.abs(wave)) if wave.size else np.float32(0)
    if not np.isfinite(peak):
        raise ValueError("the wave contains non-finite samples (NaN or inf)")
    return wave / peak if peak > 0 else wave.copy()


def centre_pad(wave: np.ndarray) -> np.ndarray:
    """Reflect-pad N_FFT // 2 on each side, exactly as librosa's stft does for centred frames.

    librosa pads the last frame(s) from the signal's tail only (the samples from
    tail_k * HOP - N_FFT // 2 on), so when len % HOP == 0 the final padded sample is reflected
    twice (y[len - 255] instead of y[len - 257]). The reference's features carry that quirk; we
    keep it so that the last frame matches too (without it, that frame's near-zero bins of a pure
    tone differ by up to 1e-3 relative, e.g. in the parity clip tone_vibrato_3s).
    """
    pad = N_FFT // 2
    n = wave.size
    start_k = -(-pad // HOP)                      # frames that touch the left padding
    tail_k = (n + pad - N_FFT) // HOP + 1         # first frame that touches the right padding
    if n == 1:
        return np.full(n + 2 * pad, wave[0], dtype=wave.dtype)
    if tail_k <= start_k:
        return np.pad(wave, pad, mode="reflect")
    right = np.pad(wave[tail_k * HOP - pad:], (0, pad), mode="reflect")[-pad:]
    return np.concatenate([wave[pad:0:-1], wave, right])


def mel_power(wave: np.ndarray) -> np.ndarray:
    """[1 + len // HOP, N_MELS] float64 mel power of a 1-D wave (centred reflect-padded frames)."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"expected a non-empty 1-D wave, got shape {wave.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(centre_pad(wave), N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _window(), axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    return np.ascontiguousarray((_filters_sparse() @ power.T).T)   # sparse: 20x faster than dense BLAS


def extract(wave: np.ndarray, kind: str | FeatureSpec = "logmel") -> np.ndarray:
    """[T, 128] float32 un-normalised features of a 16 kHz mono wave (T = 1 + len // 256)."""
    if isinstance(kind, FeatureSpec):
        kind = kind.kind
    if kind not in KINDS:
        raise UserError(f"feature kind {kind!r} is not one of {list(KINDS)}")
    power = mel_power(peak_normalise(wave))
    if kind == "logmel":
        power = 10.0 * np.log10(np.maximum(power, LOG_FLOOR))
    return power.astype(np.float32)


@dataclass
class NormTerms:
    mean: np.ndarray    # [n_mels] float32
    std: np.ndarray     # [n_mels] float32

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise UserError(f"norm terms: mean has {self.mean.size} values but std has {self.std.size}")

    def normalise(self, feats: np.ndarray) -> np.ndarray:
        """Z-score per band, NaN -> 0, clipped to [-3, 3]; bands with std 0 (or non-finite) become 0."""
        feats = np.asarray(feats, dtype=np.float32)
        valid = np.isfinite(self.std) & (self.std > 0)
        scale = np.where(valid, 1.0 / np.where(valid, self.std, 1.0), 0.0).astype(np.float32)
        out = (feats - self.mean) * scale
        np.nan_to_num(out, copy=False, nan=0.0, posinf=3.0, neginf=-3.0)
        return np.clip(out, -3.0, 3.0, out=out)


class NormAccumulator:
    """Streaming per-band mean and (population, ddof 0) std over many [T, n_mels] blocks, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None   # sum of squared deviations from the mean

    def add(self, feats: np.ndarray) -> None:
        """Merge one block of frames (Chan et al.'s pairwise update, stable for large means)."""
        x = np.asarray(feats, dtype=np.float64)
        x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        if mean.shape != self.mean.shape:
            raise ValueError(f"expected {self.mean.size} bands, got {mean.size}")
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def terms(self) -> NormTerms:
        """The accumulated mean and std; raises UserError when nothing was added."""
        if self.mean is None or self.m2 is None:
            raise UserError("cannot compute normalisation terms: no frames were added")
        return NormTerms(self.mean, np.sqrt(self.m2 / self.count))


def _read_normal_para(path: Path) -> np.ndarray:
    """The `normal_para` array of one reference .mat file, as float64 1-D."""
    if not path.is_file():
        raise UserError(f"{path}: reference normalisation file not found")
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises many types for malformed files
        raise UserError(f"{path}: not a readable .mat file ({e})") from e
    if "normal_para" not in mat:
        raise UserError(f"{path}: has no 'normal_para' variable (found {sorted(k for k in mat if not k.startswith('__'))})")
    try:
        values = np.asarray(mat["normal_para"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: 'normal_para' is not numeric ({e})") from e
    if not np.isfinite(values).all():
        raise UserError(f"{path}: 'normal_para' contains non-finite values")
    return values


def load_reference_norm_terms(folder: str | Path) -> tuple[NormTerms, dict[str, tuple[float, float]]]:
    """Read the reference's NormTerm/*.mat: feature terms [128] and (mean, std) per attribute act/dom/val."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: reference NormTerm folder not found")
    mean = _read_normal_para(folder / "feat_norm_means.mat")
    std = _read_normal_para(folder / "feat_norm_stds.mat")
    for name, values in (("feat_norm_means.mat", mean), ("feat_norm_stds.mat", std)):
        if values.size != N_MELS:
            raise UserError(f"{folder / name}: expected {N_MELS} values in 'normal_para', got {values.size}")
    labels: dict[str, tuple[float, float]] = {}
    for attr in ATTRIBUTES:
        pair = []
        for stat in ("means", "stds"):
            path = folder / f"{attr}_norm_{stat}.mat"
            values = _read_normal_para(path)
            if values.size != 1:
                raise UserError(f"{path}: expected 1 value in 'normal_para', got {values.size}")
            pair.append(float(values[0]))
        labels[attr] = (pair[0], pair[1])
    return NormTerms(mean, std), labels
