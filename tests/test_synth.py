"""The synthetic emotional speech corpus: layout, labels, audio, determinism, acoustics, CLI."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import model.synth as synth
from model.errors import UserError
from model.synth import plan_corpus, synthesize_corpus

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
NAME = re.compile(r"^MSP-SYNTH_\d{4}_\d{4}\.wav$")


def read_rows(corpus: Path) -> list[dict]:
    with open(corpus / "Labels" / "labels_consensus.csv", newline="") as f:
        return list(csv.DictReader(f))


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def acoustic_measures(x: np.ndarray, sr: int = 16000) -> np.ndarray:
    """RMS level (dB), zero crossings, median and spread of log2 pitch, voiced share, 1-4k/0-1k (dB)."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 640)[::320]
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    loud = energy > 0.3 * np.percentile(energy, 95)
    rms_db = 20 * np.log10(np.mean(energy[loud]) + 1e-9)
    zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)[loud].mean()
    centred = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(centred * np.hanning(640), 1024, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, 1024, axis=1)[:, :400]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = sr // 450, sr // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    voiced = loud & (ac[np.arange(len(ac)), lag] > 0.5)
    logf0 = np.log2(sr / lag[voiced]) if voiced.any() else np.array([7.0])
    power = np.abs(spec[loud]) ** 2
    freqs = np.arange(power.shape[1]) * sr / 1024
    tilt = 10 * np.log10(power[:, (freqs > 1000) & (freqs < 4000)].sum() / power[:, freqs < 1000].sum())
    return np.array([rms_db, zcr, np.median(logf0), np.std(logf0), voiced.mean(), tilt])


def cross_validated_r(x: np.ndarray, y: np.ndarray) -> float:
    """Correlation of a two-fold cross-validated linear regression's predictions with y."""
    a = np.c_[x, np.ones(len(x))]
    pred = np.zeros(len(y))
    fold = np.arange(len(y)) % 2
    for k in (0, 1):
        w = np.linalg.lstsq(a[fold != k], y[fold != k], rcond=None)[0]
        pred[fold == k] = a[fold == k] @ w
    return float(np.corrcoef(pred, y)[0, 1])


# ----------------------------------------------------------------------------- layout


def test_layout_columns_and_names(tiny_corpus):
    rows = read_rows(tiny_corpus)
    with open(tiny_corpus / "Labels" / "labels_consensus.csv", newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    audio = sorted(p.name for p in (tiny_corpus / "Audio").glob("*.wav"))
    pool = sorted(p.name for p in (tiny_corpus / "Unlabeled").glob("*.wav"))
    assert len(rows) == len(audio) == 48 and len(pool) == 16
    assert sorted(r["FileName"] for r in rows) == audio  # every labelled file has one row
    assert not set(pool) & {r["FileName"] for r in rows}  # the pool has no labels
    assert all(NAME.match(n) for n in audio + pool)
    for r in rows:
        assert r["FileName"].split("_")[1] == f"{int(r['SpkrID']):04d}"  # speaker in the name
        assert r["Gender"] in {"Male", "Female"}
        assert r["EmoClass"] in set("NHASUCDFOX")
    assert not {r["SpkrID"] for r in rows} & {n.split("_")[1].lstrip("0") for n in pool}


def test_splits_are_speaker_independent_and_non_empty(tiny_corpus):
    rows = read_rows(tiny_corpus)
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["SpkrID"], r["Split_Set"]) == r["Split_Set"]
    assert len(split_of) == 8
    assert sorted(set(split_of.values())) == ["Test1", "Train", "Validation"]
    for speakers in (3, 4, 8, 30, 100):
        plans = plan_corpus(utterances=speakers * 2, unlabeled=0, speakers=speakers, seed=5)
        by_split = {}
        for p in plans:
            by_split.setdefault(p.speaker.split, set()).add(p.speaker.number)
        assert set(by_split) == {"Train", "Validation", "Test1"}
        assert sum(len(s) for s in by_split.values()) == speakers
        if speakers >= 30:
            assert 0.65 <= len(by_split["Train"]) / speakers <= 0.75
            assert 0.1 <= len(by_split["Test1"]) / speakers <= 0.2


def test_wavs_are_16k_mono_pcm16_with_durations_in_range(tiny_corpus):
    files = list((tiny_corpus / "Audio").glob("*.wav")) + list((tiny_corpus / "Unlabeled").glob("*.wav"))
    assert len(files) == 64
    durations = []
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        durations.append(info.duration)
        audio, _ = sf.read(str(path))
        assert np.abs(audio).max() > 0.01 and np.abs(audio).max() < 1.0, path
    assert min(durations) >= 2.75 - 1e-3 and max(durations) <= 11.0 + 1e-3
    assert max(durations) - min(durations) > 4.0  # spread over the range, not one length


def test_csv_matches_plan_and_labels_on_grid(tiny_corpus):
    plans = [p for p in plan_corpus(48, 16, 8, seed=1) if p.pool == 1]
    rows = {r["FileName"]: r for r in read_rows(tiny_corpus)}
    for p in plans:
        r = rows[p.name]
        assert (float(r["EmoAct"]), float(r["EmoDom"]), float(r["EmoVal"])) == p.labels
        assert r["Split_Set"] == p.speaker.split


# ----------------------------------------------------------------------------- labels


def test_label_statistics_look_like_msp_podcast():
    plans = plan_corpus(utterances=3000, unlabeled=0, speakers=150, seed=3)
    y = np.array([p.labels for p in plans])  # act, dom, val
    assert np.allclose(y.mean(axis=0), [4.4, 4.5, 4.0], atol=0.15)
    assert np.allclose(y.std(axis=0), [0.9, 0.75, 0.9], atol=0.12)
    assert y.min() >= 1 and y.max() <= 7
    assert np.allclose(y * 5, np.rint(y * 5))  # consensus of five raters
    assert len(np.unique(y[:, 0])) >= 12  # a fine grid, not a handful of values
    r = np.corrcoef(y.T)
    assert r[0, 1] > 0.6  # arousal and dominance go together
    assert -0.1 < r[0, 2] < 0.4 and -0.1 < r[1, 2] < 0.45  # valence only weakly related
    classes = np.array([p.emo_class for p in plans])
    assert {"N", "H", "A", "S"} <= set(classes)
    assert y[classes == "H", 2].mean() > y[classes == "N", 2].mean() > y[classes == "S", 2].mean()
    assert y[classes == "A", 0].mean() > y[classes == "S", 0].mean()


# ----------------------------------------------------------------------------- audio


def test_acoustics_carry_the_labels_but_no_single_feature_is_a_label(tmp_path):
    corpus = synthesize_corpus(tmp_path / "c", utterances=100, unlabeled=0, speakers=12, seed=1)
    rows = read_rows(corpus)
    x = np.array([acoustic_measures(sf.read(str(corpus / "Audio" / r["FileName"]))[0]) for r in rows])
    y = np.array([[float(r["EmoAct"]), float(r["EmoDom"]), float(r["EmoVal"])] for r in rows])
    single = np.array([[np.corrcoef(x[:, j], y[:, k])[0, 1] for k in range(3)] for j in range(x.shape[1])])
    assert np.all(np.abs(single) < 0.95), single  # RMS, pitch, ... alone are not the labels
    assert single[0, 0] > 0.2 and single[2, 0] > 0.0  # louder and higher with more arousal
    r_act, r_dom, r_val = (cross_validated_r(x, y[:, k]) for k in range(3))
    assert r_act > 0.45 and r_dom > 0.3
    assert r_val < r_act - 0.15  # valence is the hardest
    female = np.array([r["Gender"] == "Female" for r in rows])
    assert np.median(x[female, 2]) > np.median(x[~female, 2]) + 0.4  # higher pitch, by ~0.8 octave


def test_render_is_speech_like():
    plan = plan_corpus(3, 0, 3, seed=4)[0]
    audio = synth.render(plan)
    assert audio.dtype == np.float32 and audio.size == round(plan.duration * 16000)
    frames = np.lib.stride_tricks.sliding_window_view(audio, 320)[::320]
    level = 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-9)
    assert np.percentile(level, 90) - np.percentile(level, 10) > 12  # syllables and pauses
    m = acoustic_measures(audio)
    assert 0.2 < m[4] < 0.95  # partly voiced
    assert 6.0 < m[2] < 8.5  # pitch between 64 and 360 Hz


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = synthesize_corpus(tmp_path / "a", utterances=6, unlabeled=2, speakers=3, seed=7, workers=1)
    b = synthesize_corpus(tmp_path / "b", utterances=6, unlabeled=2, speakers=3, seed=7, workers=2)
    c = synthesize_corpus(tmp_path / "c", utterances=6, unlabeled=2, speakers=3, seed=8, workers=1)
    fa, fb, fc = folder_bytes(a), folder_bytes(b), folder_bytes(c)
    assert len(fa) == 6 + 2 + 2 and fa == fb  # serial and parallel give the same bytes
    assert fa["Labels/labels_consensus.csv"] != fc["Labels/labels_consensus.csv"]
    common = set(fa) & set(fc) - {"synth.json"}
    assert any(fa[k] != fc[k] for k in common if k.endswith(".wav"))


# ----------------------------------------------------------------------------- overwrite rules


def test_rerun_is_a_no_op_and_other_content_is_refused(tiny_corpus, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*")}
    assert synthesize_corpus(tiny_corpus, utterances=48, unlabeled=16, speakers=8, seed=1) == tiny_corpus
    assert {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*")} == before
    with pytest.raises(UserError, match=re.escape(str(tiny_corpus))):
        synthesize_corpus(tiny_corpus, utterances=48, unlabeled=16, speakers=8, seed=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="refusing to overwrite"):
        synthesize_corpus(other, utterances=3, unlabeled=0, speakers=3)
    assert (other / "keep.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (synthesize_corpus(empty, utterances=3, unlabeled=0, speakers=3) / "synth.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "other"]  # no temp folders left


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def broken(plan):
        calls.append(plan)
        if len(calls) > 2:
            raise RuntimeError("boom")
        return np.zeros(16000 * 3, np.float32)

    monkeypatch.setattr(synth, "render", broken)
    with pytest.raises(RuntimeError, match="boom"):
        synthesize_corpus(tmp_path / "c", utterances=5, unlabeled=0, speakers=3, workers=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"utterances": 0}, "utterances must be an integer >= 1"),
    ({"speakers": 2}, "speakers must be an integer >= 3"),
    ({"unlabeled": -1}, "unlabeled must be an integer >= 0"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"utterances": 5, "speakers": 8}, r"utterances \(5\) must be at least speakers \(8\)"),
])
def test_bad_parameters_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        synthesize_corpus(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tuner", "synth", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_corpus_and_reruns_as_no_op(tmp_path):
    out = tmp_path / "corpus"
    done = run_cli(str(out), "--utterances", "8", "--unlabeled", "3", "--speakers", "4", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and str(out) in done.stdout
    assert len(read_rows(out)) == 8 and len(list((out / "Unlabeled").glob("*.wav"))) == 3
    again = run_cli(str(out), "--utterances", "8", "--unlabeled", "3", "--speakers", "4", "--seed", "2")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    clash = run_cli(str(out), "--utterances", "8", "--unlabeled", "3", "--speakers", "4", "--seed", "3")
    assert clash.returncode == 2 and str(out) in clash.stderr and "refusing" in clash.stderr


@pytest.mark.parametrize("args, message", [
    (["--utterances", "0"], "argument --utterances: expected an integer >= 1, got 0"),
    (["--speakers", "two"], "argument --speakers: expected an integer >= 3, got 'two'"),
    (["--utterances", "4", "--speakers", "6"], "utterances (4) must be at least speakers (6)"),
])
def test_cli_bad_arguments_exit_2(tmp_path, args, message):
    done = run_cli(str(tmp_path / "c"), *args)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "c").exists()
