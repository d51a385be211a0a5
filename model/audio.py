"""Audio loading: any file soundfile reads (wav, flac, ogg, mp3, aiff, ...) as float32 mono at 16 kHz."""
from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

from model.errors import UserError

SAMPLE_RATE = 16000
PLAUSIBLE_RATES = (4000, 384000)   # outside: listed as implausible audio (kept)
NOT_FOUND, UNREADABLE, EMPTY, NON_FINITE = "not_found", "unreadable", "empty", "non_finite"


class AudioError(UserError):
    """An audio file that cannot be used; `reason` is one of NOT_FOUND, UNREADABLE, EMPTY, NON_FINITE."""

    def __init__(self, message: str, reason: str = UNREADABLE) -> None:
        super().__init__(message)
        self.reason = reason


@lru_cache(maxsize=32)
def _lowpass(up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly's default anti-aliasing filter (Kaiser beta 5, 10 zero crossings), cached."""
    rate = max(up, down)
    return firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0)).astype(np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed sinc) of a 1-D float32 signal."""
    if orig_sr == target_sr:
        return wave
    g = gcd(int(orig_sr), int(target_sr))
    up, down = target_sr // g, orig_sr // g
    return resample_poly(wave, up, down, window=_lowpass(up, down)).astype(np.float32, copy=False)


def _mix_down(data: np.ndarray) -> np.ndarray:
    """[n, channels] -> [n] channel average (a loop over channels: numpy's row-wise mean is 10x slower)."""
    wave = data[:, 0].copy()
    for c in range(1, data.shape[1]):
        wave += data[:, c]
    if data.shape[1] > 1:
        wave *= np.float32(1.0 / data.shape[1])
    return wave


def load_audio(path: str | Path) -> np.ndarray:
    """Read an audio file as float32 mono at SAMPLE_RATE; raises AudioError naming the path and reason."""
    return load_audio_checked(path)[0]


def _wav_data_shortfall(path: Path) -> int:
    """Bytes a RIFF/WAVE file's `data` chunk declares beyond the end of the file (0 when complete)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0
            size = path.stat().st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return 0
                declared = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    if declared in (0, 0xFFFFFFFF):   # streaming writers leave the size open
                        return 0
                    return max(0, f.tell() + declared - size)
                f.seek(declared + (declared & 1), 1)
    except OSError:
        return 0


def load_audio_checked(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """load_audio, plus why the file looks implausible (kept anyway): odd sample rate, silence, cut short."""
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError, EOFError) as e:
        if not path.exists():
            raise AudioError(f"{path}: audio file not found", NOT_FOUND) from e
        if path.is_dir():
            raise AudioError(f"{path}: is a folder, not an audio file") from e
        reason = getattr(e, "error_string", "") or str(e).strip() or type(e).__name__
        raise AudioError(f"{path}: cannot read audio: corrupt or not an audio file ({reason})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)", EMPTY)
    if sr <= 0:
        raise AudioError(f"{path}: invalid sample rate {sr}")
    wave = _mix_down(data)
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: audio contains non-finite samples (NaN or inf)", NON_FINITE)
    warnings = []
    if not PLAUSIBLE_RATES[0] <= sr <= PLAUSIBLE_RATES[1]:
        warnings.append(f"sample rate {sr} Hz is outside {PLAUSIBLE_RATES[0]}..{PLAUSIBLE_RATES[1]} Hz")
    if not np.any(wave):
        warnings.append("the signal is all zeros (silence)")
    short = _wav_data_shortfall(path)
    if short:
        warnings.append(f"cut short: the file ends {short} bytes before the end of its declared audio data")
    return np.ascontiguousarray(resample(wave, sr), dtype=np.float32), warnings
