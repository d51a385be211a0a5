"""The bundled synthetic emotional speech corpus, written in MSP-Podcast layout.

`synthesize_corpus(out, ...)` writes `out/Audio/*.wav` (labelled), `out/Unlabeled/*.wav` (the
unlabeled pool), `out/Labels/labels_consensus.csv` and `out/synth.json` (the parameters).

How it is made. A corpus plan (speakers, speaker-independent splits, one latent emotion per
utterance) comes from the seed alone. Each utterance is rendered from its own random stream,
derived from (seed, pool, index), so any worker order gives the same bytes. The audio is a source-filter
model of speech: a Rosenberg glottal pulse train following a pitch contour (phrase declination,
pitch accents, a phrase-final rise or fall, slow drift, jitter and shimmer), aspiration noise, short
fricative or burst onsets, syllables whose vowel formants glide from one target to the next, and
pauses between phrases; the excitation is filtered frame by frame in the frequency domain by the
formant resonances, a spectral tilt and a microphone colouring, and mixed with coloured
background noise at a random SNR and a random recording gain.

The latent emotion shapes the voice as real speech does: arousal mostly through pitch level and
range, loudness and speaking rate; dominance through loudness, spectral tilt and a pressed voice;
valence only subtly (formants raised as in smiling, the phrase-final contour, jitter and shimmer).
Speakers differ in pitch (by gender), vocal tract length, rate, voice quality, level, microphone
and in their usual emotional tone. The labels are the mean of five simulated raters' integer scores
on 1..7 (so multiples of 0.2), with means, spreads and correlations close to MSP-Podcast's.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import secrets
import shutil
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft

from model.atomic_files import replace_dir
from model.audio import SAMPLE_RATE
from model.devices import usable_cpus
from model.errors import UserError

MIN_SECONDS, MAX_SECONDS = 2.75, 11.0
MAX_COUNT = 1_000_000        # utterances (or unlabeled, or speakers) one synth call may ask for
GENERATOR = "deepemocluster-tuner synth v1"  # recorded in synth.json: change it when the output changes
NAME_PREFIX = "MSP-SYNTH"
SPLITS = ("Train", "Validation", "Test1")
CSV_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")

# Label distribution (order: act, dom, val), close to MSP-Podcast's consensus labels.
LABEL_MEAN = np.array([4.4, 4.5, 4.0])
LABEL_SD = np.array([0.9, 0.75, 0.9])
LABEL_CORR = np.array([[1.0, 0.80, 0.15],
                       [0.80, 1.0, 0.25],
                       [0.15, 0.25, 1.0]])
RATERS = 5  # consensus = mean of this many integer ratings
RATER_SD = 0.8  # one rater's disagreement with the latent emotion
SPEAKER_SHARE = 0.25  # share of the latent emotion's variance that is the speaker's usual tone
LABEL_CHOL = np.linalg.cholesky(LABEL_CORR)  # correlates three independent normal draws like the labels
# Latent spread so that the consensus of RATERS noisy integer ratings has the target spread.
LATENT_SD = np.sqrt(np.maximum(LABEL_SD ** 2 - (RATER_SD ** 2 + 1 / 12) / RATERS, 0.05))

# Vowel formant targets F1..F3 in Hz for an adult male voice (Peterson & Barney averages).
VOWELS = np.array([[270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410],
                   [730, 1090, 2440], [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240],
                   [640, 1190, 2390], [490, 1350, 1690]], dtype=float)
BANDWIDTHS = np.array([70.0, 100.0, 140.0, 220.0, 300.0])  # F1..F5
ONSET_CENTRES = np.array([5500.0, 3000.0, 7000.0, 2200.0])  # /s/, /sh/, /f/, a stop burst

FRAME, NFFT, HOP = 512, 1024, 256  # frequency-domain filtering: window, padded FFT, hop


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: identity, split and voice."""

    number: int
    gender: str  # "Male" or "Female"
    split: str  # one of SPLITS, or "" for the unlabeled pool's speakers
    f0: float  # median pitch, Hz
    vtl: float  # formant scale (shorter vocal tract -> higher)
    rate: float  # syllables per second
    tilt: float  # extra spectral tilt, dB per octave
    level: float  # loudness offset, dB
    mic: float  # microphone colouring, dB per octave around 1 kHz
    breath: float  # aspiration noise relative to the glottal pulse
    tone: tuple[float, float, float]  # usual emotion (act, dom, val), z-scores


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to render one utterance and write its label row."""

    seed: int
    pool: int  # 1 labelled (Audio/), 2 unlabeled (Unlabeled/)
    index: int  # position within its pool
    name: str
    speaker: Speaker
    emotion: tuple[float, float, float]  # latent (act, dom, val), z-scores
    labels: tuple[float, float, float]  # consensus (act, dom, val) on 1..7
    emo_class: str
    duration: float  # seconds

    @property
    def folder(self) -> str:
        """The corpus sub-folder that holds the audio file."""
        return "Audio" if self.pool == 1 else "Unlabeled"


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for (seed, key...)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _check_counts(utterances: int, unlabeled: int, speakers: int, seed: int) -> None:
    """Raise UserError unless the corpus parameters are usable."""
    for name, value, low in (("utterances", utterances, 1), ("unlabeled", unlabeled, 0),
                             ("speakers", speakers, 3), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise UserError(f"synthetic corpus: {name} must be an integer >= {low}, got {value!r}")
    for name, value in (("utterances", utterances), ("unlabeled", unlabeled), ("speakers", speakers)):
        if value > MAX_COUNT:
            raise UserError(f"synthetic corpus: {name}={value} is more than {MAX_COUNT:,} (about 2,000 hours "
                            "of audio); a synthetic corpus that large is not useful, ask for fewer")
    if utterances < speakers:
        raise UserError(f"synthetic corpus: utterances ({utterances}) must be at least speakers "
                        f"({speakers}), so that every speaker and split has an utterance")


def _make_speakers(rng: np.random.Generator, count: int, first: int, splits: list[str]) -> list[Speaker]:
    """`count` speakers numbered from `first`, genders balanced at random."""
    genders = np.array(["Male", "Female"] * (count // 2 + 1))[:count]
    rng.shuffle(genders)
    out = []
    for k in range(count):
        male = genders[k] == "Male"
        f0 = rng.normal(115, 15) if male else rng.normal(205, 22)
        tone = LABEL_CHOL @ rng.standard_normal(3)
        out.append(Speaker(
            number=first + k, gender=str(genders[k]), split=splits[k],
            f0=float(np.clip(f0, 80, 165) if male else np.clip(f0, 155, 275)),
            vtl=float(rng.normal(1.0 if male else 1.16, 0.04)),
            rate=float(np.clip(rng.normal(4.2, 0.45), 3.0, 5.6)),
            tilt=float(rng.normal(0, 1.0)), level=float(rng.normal(0, 2.0)),
            mic=float(rng.normal(0, 1.0)), breath=float(np.clip(rng.normal(0.04, 0.015), 0.01, 0.1)),
            tone=tuple(float(x) for x in tone)))
    return out


def _split_sizes(speakers: int) -> tuple[int, int, int]:
    """Speakers per split: about 70/15/15, none empty."""
    val = test = max(1, round(0.15 * speakers))
    return speakers - val - test, val, test


def _allocate(rng: np.random.Generator, total: int, bins: int) -> np.ndarray:
    """Split `total` items over `bins`, at least one each, unevenly as in podcasts."""
    weights = rng.gamma(2.0, size=bins)
    return 1 + rng.multinomial(total - bins, weights / weights.sum())


def _emotion_class(rng: np.random.Generator, act: float, val: float) -> str:
    """A categorical label consistent with the attributes (MSP-Podcast letters)."""
    if rng.random() < 0.06:
        return str(rng.choice(["O", "X"]))
    if abs(val) < 0.5 and abs(act) < 0.7:
        return "N"
    if val >= 0:
        return "U" if act > 1.0 and rng.random() < 0.3 else "H"
    if act >= 0:
        return str(rng.choice(["A", "D", "C"], p=[0.7, 0.15, 0.15]))
    return "F" if rng.random() < 0.1 else "S"


def _plan_utterance(seed: int, pool: int, index: int, name: str, speaker: Speaker) -> UtterancePlan:
    """Latent emotion, consensus labels, class and duration of one utterance."""
    rng = _rng(seed, pool, index, 0)
    own = LABEL_CHOL @ rng.standard_normal(3)
    z = math.sqrt(SPEAKER_SHARE) * np.array(speaker.tone) + math.sqrt(1 - SPEAKER_SHARE) * own
    latent = LABEL_MEAN + LATENT_SD * z
    # A rater who hears more arousal tends to hear more dominance too: errors share LABEL_CORR.
    errors = RATER_SD * LABEL_CHOL @ rng.standard_normal((3, RATERS))
    ratings = np.clip(np.rint(latent[:, None] + errors), 1, 7)
    labels = tuple(float(x) for x in np.round(ratings.mean(axis=1), 1))
    return UtterancePlan(seed=seed, pool=pool, index=index, name=name, speaker=speaker,
                         emotion=tuple(float(x) for x in z), labels=labels,
                         emo_class=_emotion_class(rng, float(z[0]), float(z[2])),
                         duration=float(rng.uniform(MIN_SECONDS, MAX_SECONDS)))


def plan_corpus(utterances: int = 600, unlabeled: int = 200, speakers: int = 30,
                seed: int = 0) -> list[UtterancePlan]:
    """The labelled then unlabeled utterances of a corpus, without rendering audio."""
    _check_counts(utterances, unlabeled, speakers, seed)
    rng = _rng(seed, 0)
    sizes = _split_sizes(speakers)
    splits = [s for s, k in zip(SPLITS, sizes) for _ in range(k)]
    rng.shuffle(splits)
    labelled = _make_speakers(rng, speakers, 1, splits)
    pool_speakers = min(max(1, math.ceil(speakers / 2)), unlabeled)   # each pool speaker has an utterance
    extra = _make_speakers(rng, pool_speakers, speakers + 1, [""] * pool_speakers)
    plans = []
    for pool, group, total in ((1, labelled, utterances), (2, extra, unlabeled)):
        if total == 0:
            continue
        index = 0
        for speaker, count in zip(group, _allocate(rng, total, len(group))):
            for k in range(1, count + 1):
                name = f"{NAME_PREFIX}_{speaker.number:04d}_{k:04d}.wav"
                plans.append(_plan_utterance(seed, pool, index, name, speaker))
                index += 1
    return plans


# ----------------------------------------------------------------------------- rendering


def _smooth_noise(rng: np.random.Generator, n: int, step: int) -> np.ndarray:
    """Unit-variance noise that varies smoothly over `step` samples, length n."""
    knots = rng.standard_normal(n // step + 2)
    return np.interp(np.arange(n) / step, np.arange(knots.size), knots)


def _syllables(rng: np.random.Generator, duration: float, rate: float) -> dict[str, np.ndarray]:
    """Syllable timing: start, length, onset length, phrase start, phrase-final and accent flags."""
    rows = []
    t = rng.uniform(0.05, 0.3)
    end = duration - rng.uniform(0.05, 0.25)
    while t < end - 0.12:  # one phrase of 3+ syllables, then a pause
        phrase_start, n_syll = t, 3 + rng.poisson(4)
        for k in range(n_syll):
            length = min(rng.gamma(8.0, 1.0 / (8.0 * rate)), end - t)
            if length < 0.1:
                break
            onset = rng.uniform(0.15, 0.35) * length if rng.random() < 0.6 else 0.0
            rows.append([t, length, onset, phrase_start, k == n_syll - 1,
                         rng.random() < 0.3 or k == 0, rng.integers(len(VOWELS)),
                         rng.integers(len(ONSET_CENTRES))])
            t += length
        t += rng.uniform(0.15, 0.6)
    rows[-1][4] = True  # the last syllable ends a phrase even when the phrase was cut
    keys = ("start", "length", "onset", "phrase", "final", "accent", "vowel", "fric")
    return {k: np.array(c, dtype=float) for k, c in zip(keys, zip(*rows))}


def _formant_response(freqs: np.ndarray, bws: np.ndarray) -> np.ndarray:
    """All-pole resonator cascade, unit gain at DC: [frames, NFFT//2+1] complex, freqs [frames, 5]."""
    r = np.exp(-np.pi * bws / SAMPLE_RATE)
    c1 = -2 * r * np.cos(2 * np.pi * freqs / SAMPLE_RATE)
    c2 = r * r
    den = np.zeros((freqs.shape[0], 2 * freqs.shape[1] + 1))  # denominator polynomial in 1/z
    den[:, 0] = 1.0
    for k in range(freqs.shape[1]):  # multiply by (1 + c1/z + c2/z^2)
        den[:, 1:] += c1[:, k, None] * den[:, :-1] + np.pad(c2[:, k, None] * den[:, :-2], ((0, 0), (1, 0)))
    return den.sum(axis=1, keepdims=True) / scipy.fft.rfft(den, NFFT, axis=1)


def _frames(signal: np.ndarray, frames: int) -> np.ndarray:
    """Hann-windowed frames (FRAME long, HOP apart, the first centred on sample 0) as spectra."""
    padded = np.zeros((frames - 1) * HOP + FRAME)
    padded[FRAME // 2:FRAME // 2 + signal.size] = signal
    windows = np.lib.stride_tricks.sliding_window_view(padded, FRAME)[::HOP][:frames]
    return scipy.fft.rfft(windows * np.hanning(FRAME + 1)[:FRAME], NFFT)


def _overlap_add(spectra: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `_frames` after filtering: the frames' linear convolutions added up, n samples."""
    frames = spectra.shape[0]
    blocks = scipy.fft.irfft(spectra, NFFT).reshape(frames, NFFT // HOP, HOP)
    out = np.zeros((frames + NFFT // HOP, HOP))
    for b in range(NFFT // HOP):
        out[b:b + frames] += blocks[:, b]
    return out.reshape(-1)[FRAME // 2:FRAME // 2 + n]  # periodic Hann at half-window hop sums to 1


def render(plan: UtterancePlan) -> np.ndarray:
    """The waveform of one planned utterance: float32 in [-1, 1] at SAMPLE_RATE (the steps below draw from
    one generator, in this order)."""
    rng = _rng(plan.seed, plan.pool, plan.index, 1)
    n = int(round(plan.duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    syl = _syllable_timing(rng, plan, n)
    f0 = _pitch(rng, plan, syl, t, n)
    source, noise_src = _sources(rng, plan, syl, f0, n)
    speech = _filtered(rng, plan, syl, source, noise_src, n)
    return _recorded(rng, plan, speech, syl.env_v, t, n)


@dataclass
class _Timing:
    """Where each sample is in its syllable, and the syllables' envelopes."""
    syl: dict[str, np.ndarray]   # the syllables (_syllables)
    start: np.ndarray            # first sample of each syllable
    onset: np.ndarray            # samples of its consonant onset
    vowel_len: np.ndarray        # samples of its vowel
    safe: np.ndarray             # per sample: its syllable (the first before any)
    u: np.ndarray                # per sample: the position in its vowel, 0..1
    env_v: np.ndarray            # voiced envelope
    env_f: np.ndarray            # frication envelope


def _syllable_timing(rng: np.random.Generator, plan: UtterancePlan, n: int) -> _Timing:
    """Syllables and which sample belongs to which part of which syllable."""
    act, dom, _ = plan.emotion
    rate = plan.speaker.rate * math.exp(0.09 * act + 0.03 * dom + rng.normal(0, 0.06))
    syl = _syllables(rng, plan.duration, rate)
    start = np.rint(syl["start"] * SAMPLE_RATE).astype(np.int64)
    length = np.maximum(np.rint(syl["length"] * SAMPLE_RATE).astype(np.int64), 1)
    onset = np.rint(syl["onset"] * SAMPLE_RATE).astype(np.int64)
    idx = np.searchsorted(start, np.arange(n), side="right") - 1
    safe = np.maximum(idx, 0)
    local = np.arange(n) - start[safe]
    inside = (idx >= 0) & (local < length[safe])
    voiced = inside & (local >= onset[safe])
    frication = inside & ~voiced
    vowel_len = np.maximum(length - onset, 1)
    u = np.clip((local - onset[safe]) / vowel_len[safe], 0, 1)
    syll_gain = 10 ** ((rng.normal(0, 1.5, start.size) + 3.0 * syl["accent"]) / 20)
    env_v = np.where(voiced, np.sin(np.pi * u) ** 0.6, 0.0) * syll_gain[safe]
    u_f = np.clip(local / np.maximum(onset[safe], 1), 0, 1)
    fric_gain = rng.uniform(0.05, 0.25, start.size) * (1 + 0.15 * dom)
    env_f = np.where(frication, np.sin(np.pi * u_f) ** 0.5, 0.0) * fric_gain[safe]
    return _Timing(syl, start, onset, vowel_len, safe, u, env_v, env_f)


def _pitch(rng: np.random.Generator, plan: UtterancePlan, s: _Timing, t: np.ndarray, n: int) -> np.ndarray:
    """F0 per sample (Hz): a contour in semitones around the speaker's median."""
    act, dom, val = plan.emotion
    syl = s.syl
    vowel_mid = (s.start + s.onset + s.vowel_len / 2) / SAMPLE_RATE
    accents = vowel_mid[syl["accent"] > 0]
    span = 2.4 * math.exp(0.3 * act + 0.08 * val + rng.normal(0, 0.15))
    heights = span * rng.uniform(0.5, 1.0, accents.size)
    grid = np.arange(0, plan.duration + 0.01, 0.005)
    bumps = (heights * np.exp(-0.5 * ((grid[:, None] - accents) / 0.07) ** 2)).sum(axis=1)
    semis = np.interp(t, grid, bumps) + 0.8 * _smooth_noise(rng, n, SAMPLE_RATE // 4)
    semis += 1.8 * act + 0.4 * dom + rng.normal(0, 0.8)
    phrase_time = t - syl["phrase"][s.safe]
    semis -= (1.2 + 0.3 * rng.standard_normal()) * phrase_time  # declination, reset per phrase
    final_shape = 1.2 * val + 0.6 * rng.standard_normal() - 0.5  # rise when positive
    semis += np.where(syl["final"][s.safe] > 0, final_shape * s.u ** 2, 0.0)
    jitter = 0.006 * math.exp(-0.35 * val)
    f0 = plan.speaker.f0 * 2 ** (semis / 12) * (1 + jitter * _smooth_noise(rng, n, 40))
    return np.clip(f0, 55, 500)


def _sources(rng: np.random.Generator, plan: UtterancePlan, s: _Timing, f0: np.ndarray,
             n: int) -> tuple[np.ndarray, np.ndarray]:
    """The glottal source (Rosenberg pulses, differentiated flow; shimmer, aspiration noise) under the voiced
    envelope, and the frication noise under its envelope."""
    act, dom, val = plan.emotion
    spk = plan.speaker
    phase = np.cumsum(f0 / SAMPLE_RATE)
    cycle = phase.astype(np.int64)
    frac = phase - cycle
    oq = float(np.clip(0.62 - 0.04 * act - 0.05 * dom + rng.normal(0, 0.03), 0.35, 0.85))
    tp, tn = 0.66 * oq, 0.34 * oq
    flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                    np.where(frac < tp + tn, np.cos(np.pi * (frac - tp) / (2 * tn)), 0.0))
    shimmer = 0.06 * math.exp(-0.35 * val)
    flow *= 1 + shimmer * rng.standard_normal(cycle[-1] + 2)[cycle]
    source = np.diff(flow, prepend=0.0) * (SAMPLE_RATE / spk.f0) / 10
    breath = spk.breath * math.exp(-0.25 * act)
    source += breath * (0.4 + flow) * rng.standard_normal(n)
    source *= s.env_v
    return source, rng.standard_normal(n) * s.env_f


def _filtered(rng: np.random.Generator, plan: UtterancePlan, s: _Timing, source: np.ndarray,
              noise_src: np.ndarray, n: int) -> np.ndarray:
    """Frame-wise filters: formants gliding between vowel targets, spectral tilt, the microphone."""
    act, dom, val = plan.emotion
    spk, syl = plan.speaker, s.syl
    vowel_mid = (s.start + s.onset + s.vowel_len / 2) / SAMPLE_RATE
    frames = (n + FRAME // 2) // HOP + 1
    frame_t = np.arange(frames) * HOP / SAMPLE_RATE
    targets = VOWELS[syl["vowel"].astype(int)]
    f123 = np.stack([np.interp(frame_t, vowel_mid, targets[:, k]) for k in range(3)], axis=1)
    freqs = np.concatenate([f123, np.broadcast_to([3500.0, 4500.0], (frames, 2))], axis=1)
    freqs = freqs * spk.vtl * (1 + 0.02 * val) * (1 + 0.03 * _smooth_noise(rng, frames, 25)[:, None])
    freqs = np.minimum(freqs, 0.45 * SAMPLE_RATE)
    bws = BANDWIDTHS * rng.uniform(0.85, 1.2, 5)
    octaves = np.log2(np.maximum(np.arange(NFFT // 2 + 1) * SAMPLE_RATE / NFFT, 60.0) / 1000.0)
    tilt_db = 4.0 + spk.tilt + 1.2 * act + 1.2 * dom + rng.normal(0, 0.7)
    mic_db = spk.mic + rng.normal(0, 0.3)
    voiced_resp = _formant_response(freqs, np.broadcast_to(bws, freqs.shape))
    voiced_resp = voiced_resp * 10 ** ((tilt_db + mic_db) * octaves / 20)
    frame_syl = np.maximum(np.searchsorted(s.start, frame_t * SAMPLE_RATE, side="right") - 1, 0)
    fc = ONSET_CENTRES[syl["fric"].astype(int)][frame_syl] * spk.vtl
    fric_resp = np.exp(-0.5 * ((octaves[None, :] - np.log2(fc[:, None] / 1000)) / 0.8) ** 2)
    fric_resp = fric_resp * 10 ** (mic_db * octaves / 20)
    spectra = _frames(source, frames) * voiced_resp + _frames(noise_src, frames) * fric_resp
    return _overlap_add(spectra, n)


def _recorded(rng: np.random.Generator, plan: UtterancePlan, speech: np.ndarray, env_v: np.ndarray,
              t: np.ndarray, n: int) -> np.ndarray:
    """The speech at its loudness, background noise at a random SNR (sometimes mains hum), a recording gain."""
    act, dom, _ = plan.emotion
    active = env_v > 0.2
    rms = math.sqrt(float(np.mean(speech[active] ** 2))) if active.any() else 1e-3
    level_db = -26 + 2.5 * act + 1.5 * dom + plan.speaker.level + rng.normal(0, 1.0)
    speech *= 10 ** (level_db / 20) / max(rms, 1e-9)
    colour = rng.uniform(0.5, 1.6)
    size = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(rng.standard_normal(size))
    spectrum /= np.maximum(np.arange(spectrum.size) / spectrum.size * 8, 0.01) ** (colour / 2)
    background = scipy.fft.irfft(spectrum, size)[:n]
    if rng.random() < 0.2:
        background += 0.5 * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t + rng.uniform(0, 6.3))
    snr_db = rng.uniform(10, 35)
    background *= 10 ** ((level_db - snr_db) / 20) / math.sqrt(float(np.mean(background ** 2)))
    wave_out = (speech + background) * 10 ** (rng.uniform(-5, 5) / 20)
    peak = float(np.max(np.abs(wave_out)))
    if peak > 0.95:
        wave_out *= 0.95 / peak
    return wave_out.astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> None:
    """Write float audio in [-1, 1] as 16 kHz mono PCM_16 (deterministic bytes)."""
    pcm = np.clip(np.rint(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def _render_to(job: tuple[UtterancePlan, str]) -> float:
    """Render one utterance into folder `job[1]`; returns its duration in seconds."""
    plan, root = job
    audio = render(plan)
    write_wav(Path(root) / plan.folder / plan.name, audio)
    return audio.size / SAMPLE_RATE


# ----------------------------------------------------------------------------- the corpus


def _parameters(utterances: int, unlabeled: int, speakers: int, seed: int) -> dict:
    """What identifies a synthetic corpus (recorded in synth.json)."""
    return {"generator": GENERATOR, "utterances": int(utterances), "unlabeled": int(unlabeled),
            "speakers": int(speakers), "seed": int(seed), "sample_rate": SAMPLE_RATE}


def _labels_csv(plans: list[UtterancePlan]) -> str:
    """The label table of the labelled utterances."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in plans:
        if p.pool == 1:
            act, dom, val = p.labels
            writer.writerow([p.name, p.emo_class, f"{act:.1f}", f"{val:.1f}", f"{dom:.1f}",
                             p.speaker.number, p.speaker.gender, p.speaker.split])
    return buf.getvalue()


def _existing_matches(out: Path, params: dict) -> bool:
    """True when `out` already holds a complete synthetic corpus made with `params`."""
    try:
        recorded = json.loads((out / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("parameters") != params:
        return False
    return (len(list((out / "Audio").glob("*.wav"))) == params["utterances"]
            and len(list((out / "Unlabeled").glob("*.wav"))) == params["unlabeled"]
            and (out / "Labels" / "labels_consensus.csv").is_file())


def _check_target(out: Path, params: dict) -> bool:
    """True if `out` is already this corpus; raise UserError if it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another output path")
    if not any(out.iterdir()):
        return False
    if _existing_matches(out, params):
        return True
    raise UserError(f"{out}: folder exists and is not empty (and is not a synthetic corpus made with "
                    f"the same parameters); refusing to overwrite it, choose another path or remove it")


def _check_space(out: Path, plans: list[UtterancePlan]) -> None:
    """UserError when the disk under `out` cannot hold the planned audio (16-bit PCM) with 5 % to spare."""
    need = sum(p.duration for p in plans) * SAMPLE_RATE * 2 + 1024 * len(plans)
    free = shutil.disk_usage(out.parent).free
    if need * 1.05 > free:
        raise UserError(f"{out}: the corpus needs about {need / 1e9:.2f} GB, the disk has {free / 1e9:.2f} GB "
                        "free; ask for fewer --utterances / --unlabeled or choose another folder")


def _default_workers(jobs: int) -> int:
    """Two worker processes for big corpora, none inside a daemon process or for tiny ones."""
    if jobs < 48 or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(2, usable_cpus()))


def synthesize_corpus(out: str | Path, utterances: int = 600, unlabeled: int = 200,
                      speakers: int = 30, seed: int = 0, workers: int | None = None) -> Path:
    """Write the synthetic corpus in MSP-Podcast layout at `out` (atomically) and return its path."""
    out = Path(out)
    plans = plan_corpus(utterances, unlabeled, speakers, seed)
    params = _parameters(utterances, unlabeled, speakers, seed)
    if _check_target(out, params):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_space(out, plans)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # not mkdtemp: that makes it private, and the corpus is an ordinary folder
    try:
        for sub in ("Audio", "Unlabeled", "Labels"):
            (tmp / sub).mkdir()
        jobs = [(p, str(tmp)) for p in plans]
        workers = _default_workers(len(jobs)) if workers is None else int(workers)
        if workers > 1:
            # fork: the workers only run numpy, and it works whatever __main__ is (stdin, unguarded scripts)
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                seconds = list(pool.map(_render_to, jobs, chunksize=8))
        else:
            seconds = [_render_to(job) for job in jobs]
        (tmp / "Labels" / "labels_consensus.csv").write_text(_labels_csv(plans))
        summary = {
            "parameters": params,
            "labelled_seconds": round(sum(s for s, p in zip(seconds, plans) if p.pool == 1), 3),
            "unlabeled_seconds": round(sum(s for s, p in zip(seconds, plans) if p.pool == 2), 3),
            "splits": {s: sum(1 for p in plans if p.pool == 1 and p.speaker.split == s) for s in SPLITS},
        }
        (tmp / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
        try:
            replace_dir(tmp, out, overwrite=False)  # atomic; replaces an empty folder only
        except OSError:
            if _existing_matches(out, params):  # someone else just wrote the same corpus
                return out
            raise UserError(f"{out}: could not move the finished corpus into place "
                            f"(the folder appeared meanwhile and holds something else)") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
