"""model.audio: reading any rate/channel count as 16 kHz mono float32, and clear errors for bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import EMPTY, NON_FINITE, NOT_FOUND, SAMPLE_RATE, UNREADABLE, AudioError, load_audio
from model.errors import UserError


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * sr / wave.size)


def test_resamples_44k1_stereo_to_16k_mono(tmp_path: Path) -> None:
    left, right = sine(1000, 44100, 1.0), sine(1000, 44100, 1.0, amp=0.3)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.size == SAMPLE_RATE                                   # 1 s stays 1 s
    assert abs(dominant_freq(wave, SAMPLE_RATE) - 1000) <= 1.0        # frequency preserved
    expected = sine(1000, SAMPLE_RATE, 1.0, amp=0.4)                  # channel average, same phase
    core = slice(200, -200)                                           # away from filter edge effects
    np.testing.assert_allclose(wave[core], expected[core], atol=2e-3)


def test_resampler_is_band_limited(tmp_path: Path) -> None:
    """A 12 kHz tone at 48 kHz is above the new Nyquist (8 kHz): it must be removed, not aliased to 4 kHz."""
    path = tmp_path / "high.wav"
    sf.write(path, sine(12000, 48000, 0.5) + sine(500, 48000, 0.5), 48000, subtype="FLOAT")
    wave = load_audio(path)
    spectrum = np.abs(np.fft.rfft(wave[1000:-1000] * np.hanning(wave.size - 2000)))
    freqs = np.fft.rfftfreq(wave.size - 2000, 1 / SAMPLE_RATE)
    alias = spectrum[np.abs(freqs - 4000) < 50].max()
    tone = spectrum[np.abs(freqs - 500) < 50].max()
    assert alias < 1e-3 * tone


def test_16k_mono_is_read_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = (rng.uniform(-0.9, 0.9, 4000)).astype(np.float32)
    path = tmp_path / "plain.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), data)


def test_int16_wav_scaled_to_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "int16.wav"
    sf.write(path, np.array([0, 16384, -32768, 32767], dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(path), [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-6)


@pytest.mark.parametrize("fmt,sr,channels", [("flac", 22050, 1), ("ogg", 16000, 2), ("flac", 8000, 3)])
def test_reads_flac_and_ogg(tmp_path: Path, fmt: str, sr: int, channels: int) -> None:
    mono = sine(440, sr, 0.75)
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, np.repeat(mono[:, None], channels, axis=1), sr,
             format=fmt.upper(), subtype="VORBIS" if fmt == "ogg" else "PCM_16")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.size == int(np.ceil(mono.size * SAMPLE_RATE / sr))
    assert abs(dominant_freq(wave, SAMPLE_RATE) - 440) < 3
    assert 0.4 < np.abs(wave).max() < 0.6


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nope\.wav: audio file not found") as info:
        load_audio(tmp_path / "nope.wav")
    assert info.value.reason == NOT_FOUND
    with pytest.raises(AudioError, match="is a folder"):
        load_audio(tmp_path)


def test_non_audio_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: cannot read audio: corrupt or not an audio file") as info:
        load_audio(path)
    assert isinstance(info.value, UserError) and info.value.reason == UNREADABLE


def test_truncated_header(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, sine(300, SAMPLE_RATE, 0.5), SAMPLE_RATE)
    bad = tmp_path / "cut.wav"
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioError, match=r"cut\.wav"):
        load_audio(bad)


def test_corrupt_flac_body(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    sf.write(good, np.random.default_rng(1).uniform(-1, 1, 16000).astype(np.float32), SAMPLE_RATE, format="FLAC")
    raw = bytearray(good.read_bytes())
    raw[200:] = bytes(len(raw) - 200)        # zero the frames after the header
    bad = tmp_path / "zeroed.flac"
    bad.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match=r"zeroed\.flac"):
        load_audio(bad)


def test_empty_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio \(0 samples\)") as info:
        load_audio(path)
    assert info.value.reason == EMPTY


def test_non_finite_samples(tmp_path: Path) -> None:
    data = sine(200, SAMPLE_RATE, 0.1)
    data[17] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: .*non-finite") as info:
        load_audio(path)
    assert info.value.reason == NON_FINITE
    data[17] = np.inf
    sf.write(path, np.stack([data, data], axis=1), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)


def test_implausible_audio_is_read_with_warnings(tmp_path):
    from model.audio import load_audio_checked

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "ok.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    sf.write(tmp_path / "low.wav", (0.1 * rng.standard_normal(3000)).astype(np.float32), 3000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert load_audio_checked(tmp_path / "ok.wav")[1] == []
    low, warnings = load_audio_checked(tmp_path / "low.wav")
    assert len(low) == 16000 and warnings == ["sample rate 3000 Hz is outside 4000..384000 Hz"]
    assert load_audio_checked(tmp_path / "silent.wav")[1] == ["the signal is all zeros (silence)"]
    cut, warnings = load_audio_checked(tmp_path / "cut.wav")
    assert 7000 < len(cut) < 8100 and len(warnings) == 1 and warnings[0].startswith("cut short")
