"""`python -m tuner predict` and model.inference.predict_files: bad files, sample rates, batching, CSV."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from conftest import REFERENCE
from model.config import TrainConfig
from model.features import FeatureSpec
from model.inference import predict_files
from model.model_file import ModelInfo, build_network, load_model, save_model
from tuner.cli import main as cli

AUDIO = REFERENCE / "parity" / "audio"
EXPECTED = {  # reference predictions (expected_predictions.csv), act model
    "noise_bursts_5s.wav": 2.286869, "tone_vibrato_3s.wav": 2.162639, "vowel_pulses_9s.wav": 6.662996}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_unreadable_files_are_skipped_and_reported(reference_models, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    missing = tmp_path / "missing.wav"
    good = [AUDIO / "tone_vibrato_3s.wav", AUDIO / "noise_bursts_5s.wav"]
    out = tmp_path / "preds.csv"
    code = cli(["predict", str(reference_models["act"]), str(good[0]), str(corrupt), str(missing), str(good[1]),
                "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0
    rows = read_csv(out)
    assert [r["file"] for r in rows] == [str(p) for p in good]
    for row in rows:
        assert float(row["act"]) == pytest.approx(EXPECTED[os.path.basename(row["file"])], abs=1e-4)
    assert f"skipped {corrupt}" in err and f"skipped {missing}" in err and "not found" in err
    assert "2 file(s) skipped" in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_no_readable_file_fails_and_keeps_previous_output(reference_models, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("text")
    out = tmp_path / "preds.csv"
    out.write_text("previous results\n")
    code = cli(["predict", str(reference_models["act"]), str(bad), str(tmp_path / "nope.flac"),
                "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0
    assert "none of the 2 audio file(s) could be read" in err and str(bad) in err
    assert out.read_text() == "previous results\n"


def test_missing_model_file_is_a_user_error(tmp_path, capsys):
    code = cli(["predict", str(tmp_path / "no_model.pt"), str(AUDIO / "tone_vibrato_3s.wav"),
                "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "no_model.pt" in capsys.readouterr().err


@pytest.mark.parametrize("clip,attr", [("tone_vibrato_3s", "val"), ("noise_bursts_5s", "act")])
def test_stereo_44k_file_predicts_like_its_16k_mono_version(clip, attr, reference_models, tmp_path):
    """A 44.1 kHz stereo file whose channel mean is a signal y, vs y resampled to 16 kHz mono by another
    resampler (librosa's soxr): same prediction. Each channel alone predicts clearly differently."""
    import librosa  # the test extra's independent resampler (soxr)

    x, sr = sf.read(AUDIO / f"{clip}.wav", dtype="float32")
    assert sr == 16000
    y = resample_poly(x, 441, 160).astype(np.float32)                     # the 44.1 kHz "original"
    tone = (0.3 * np.sin(2 * np.pi * 1000.0 * np.arange(len(y)) / 44100)).astype(np.float32)
    sf.write(tmp_path / "stereo44k.wav", np.stack([y + tone, y - tone], axis=1), 44100, subtype="FLOAT")
    sf.write(tmp_path / "left44k.wav", y + tone, 44100, subtype="FLOAT")
    mono16k = librosa.resample(y, orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    sf.write(tmp_path / "mono16k.wav", mono16k, 16000, subtype="PCM_16")
    rows, failures = predict_files(reference_models[attr],
                                   [tmp_path / "mono16k.wav", tmp_path / "stereo44k.wav", tmp_path / "left44k.wav"])
    assert failures == []
    mono, stereo, left = (r[attr] for r in rows)
    assert stereo == pytest.approx(mono, abs=0.01)
    assert abs(left - mono) > 0.05      # the check can tell a wrong down-mix apart


def _small_model(tmp_path, kind="logmel", attributes=("act", "dom", "val")):
    """An untrained small 3-attribute model (random weights, seeded) saved as a model file."""
    torch.manual_seed(0)
    config = TrainConfig(temporal="gru", num_clusters=4, chunk_frames=20, chunks_per_sentence=3,
                         attributes=list(attributes), width=0.25)
    network = build_network(config)
    with torch.no_grad():   # larger head weights than the init's N(0, 0.01), so outputs vary by input
        network.attribute_head.weight.normal_(0.0, 1.0)
        network.regressor[0].weight.normal_(0.0, 0.2)
    info = ModelInfo(config, FeatureSpec(kind=kind).to_dict(), np.full(128, -40.0, np.float32),
                     np.full(128, 20.0, np.float32), {"act": (4.0, 1.0), "dom": (4.5, 0.5), "val": (3.0, 2.0)}, {})
    path = tmp_path / "small.pt"
    save_model(path, network, info)
    return path


def test_csv_columns_follow_model_attributes_and_folders_expand(tmp_path, capsys):
    model = _small_model(tmp_path)
    out = tmp_path / "sub" / "preds.csv"
    assert cli(["predict", str(model), str(AUDIO), "--out", str(out), "--device", "cpu"]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["file", "act", "dom", "val"]
    assert [os.path.basename(r["file"]) for r in rows] == sorted(EXPECTED)
    values = np.array([[float(r[a]) for a in ("act", "dom", "val")] for r in rows])
    assert np.isfinite(values).all()
    assert np.ptp(values[:, 0]) > 0   # different clips, different predictions


def test_batching_and_short_clips(tmp_path):
    """Results do not depend on how files are batched; clips shorter than one chunk still predict."""
    model = _small_model(tmp_path)
    network, info = load_model(model)
    short = tmp_path / "short.wav"      # 0.2 s: 13 frames, shorter than the chunk of 20 frames
    t = np.arange(3200) / 16000
    sf.write(short, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    paths = [AUDIO / "tone_vibrato_3s.wav", short, AUDIO / "vowel_pulses_9s.wav", AUDIO / "noise_bursts_5s.wav"]
    together, f1 = predict_files((network, info), paths, batch_sentences=64)
    one_by_one, f2 = predict_files((network, info), paths, batch_sentences=1)
    assert f1 == f2 == []
    assert [r["file"] for r in together] == [str(p) for p in paths]
    for a, b in zip(together, one_by_one):
        for attr in ("act", "dom", "val"):
            assert a[attr] == pytest.approx(b[attr], abs=1e-5)
            assert np.isfinite(a[attr])


def test_gpu_inference_runs_cudnn_in_full_fp32_and_restores_the_setting():
    from model.inference import full_fp32_cudnn

    conv, rnn = torch.backends.cudnn.conv, torch.backends.cudnn.rnn
    before = (conv.fp32_precision, rnn.fp32_precision)
    with full_fp32_cudnn():
        assert (conv.fp32_precision, rnn.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, rnn.fp32_precision) == before


def test_unusable_device_is_a_user_error(reference_models, tmp_path, capsys):
    code = cli(["predict", str(reference_models["act"]), str(AUDIO / "tone_vibrato_3s.wav"),
                "--out", str(tmp_path / "p.csv"), "--device", "tpu0"])
    assert code == 2 and "'tpu0'" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
