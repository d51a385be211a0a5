"""The feature store: building (bad files counted, Train-only norm terms, atomic, no-op re-runs) and opening."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import load_audio
from model.chunking import make_chunks
from model.errors import CorpusError, StoreError
from model.features import NormAccumulator, extract, load_reference_norm_terms
from model.store import FORMAT, FeatureStore
from model.store_build import prepare_store

REPO = Path(__file__).resolve().parents[1]
NORM_TERMS = REPO.parent / "shared" / "reference" / "deepemoclusters-msp-podcast-v1.6" / "NormTerm"
HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"


def tone(path: Path, seconds: float = 1.5, sr: int = 16000, channels: int = 1, pitch: float = 220) -> Path:
    """A short noisy tone written with soundfile (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.02 * rng.standard_normal(len(t))
    sf.write(path, np.repeat(x[:, None], channels, axis=1).astype(np.float32), sr)
    return path


@pytest.fixture
def messy_corpus(tmp_path) -> Path:
    """MSP layout with a corrupt wav, an empty wav, a missing file, a duplicate, NaN labels, a short clip."""
    root = tmp_path / "messy"
    audio = root / "Audio"
    tone(audio / "t1.wav", 1.5, pitch=200)
    tone(audio / "t2.wav", 2.0, pitch=300)
    tone(audio / "t3.wav", 1.2, pitch=250)
    tone(audio / "v1.wav", 1.5, pitch=500)              # Validation: must not enter the norm terms
    tone(audio / "short.wav", 0.5)                      # 32 frames < 62
    tone(audio / "nan.wav", 1.0)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(40))
    sf.write(audio / "empty.wav", np.zeros(0, np.float32), 16000)
    tone(root / "Unlabeled" / "u1.ogg", 1.0, sr=44100, channels=2)
    tone(root / "Unlabeled" / "deep" / "u2.flac", 1.0, sr=44100, channels=2)
    (root / "Labels").mkdir()
    (root / "Labels" / "labels_consensus.csv").write_text(HEADER + "\n".join([
        "t1.wav,N,4.0,3.0,5.0,1,Female,Train",
        "t2.wav,N,2.0,5.0,3.0,2,Male,Train",
        "t3,N,6.0,4.0,4.0,2,Male,Train",
        "v1.wav,N,3.0,3.0,3.0,3,Male,Validation",
        "short.wav,N,5.0,5.0,5.0,3,Male,Validation",
        "nan.wav,N,NaN,4.0,4.0,1,Female,Train",
        "corrupt.wav,N,4.0,4.0,4.0,1,Female,Test1",
        "empty.wav,N,4.0,4.0,4.0,1,Female,Test1",
        "missing.wav,N,4.0,4.0,4.0,1,Female,Test1",
        "t1,N,1.0,1.0,1.0,1,Female,Test1",
    ]) + "\n")
    return root


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_messy_corpus_counts_every_problem_and_keeps_the_rest(messy_corpus, tmp_path):
    out = tmp_path / "s"
    report = prepare_store(messy_corpus, out, workers=1, progress=False)
    store = FeatureStore.open(out)
    assert report["status"] == "built"
    assert store.names(range(len(store))) == ["t1", "t2", "t3", "v1", "short", "nan",
                                              "Unlabeled/deep/u2", "Unlabeled/u1"]
    counts = {r: p["count"] for r, p in report["problems"].items()}
    assert counts == {"missing_file": 1, "duplicate_name": 1, "missing_labels": 1, "unreadable_audio": 1,
                      "empty_audio": 1, "short_utterance": 1}
    assert report["rejected"] == 4
    assert report["problems"]["unreadable_audio"]["examples"] == [str(messy_corpus / "Audio" / "corrupt.wav")]
    assert report["problems"]["short_utterance"]["kept"] is True
    assert store.report == report                              # report.json holds the same
    assert (report["utterances"], report["labeled"], report["unlabeled"]) == (8, 5, 3)
    assert store.splits == ["Train", "Validation"] and store.meta["roles"]["validation"] == "Validation"
    assert list(store.ids("Train")) == [0, 1, 2, 5] and list(store.ids("Train", labeled=True)) == [0, 1, 2]
    assert list(store.ids("")) == [6, 7] and list(store.pool_ids()) == [5, 6, 7]
    assert store.roles == {"train": "Train", "validation": "Validation", "test": []}
    del store.meta["roles"]                                    # a hand-edited meta: found by name
    assert store.roles["train"] == "Train" and list(store.pool_ids()) == [5, 6, 7]
    assert store.speakers == ["1", "2", "3"] and list(store.index["speaker"][:3]) == [0, 1, 1]
    assert store.index["length"][4] == 1 + 8000 // 256
    np.testing.assert_array_equal(store.labels([0, 1], ["val", "act"]), [[3.0, 4.0], [5.0, 2.0]])
    assert np.isnan(store.labels([5], ["act"])[0, 0])
    # label terms over the labeled Train utterances only: act 4, 2, 6
    assert store.label_terms["act"] == pytest.approx((4.0, np.std([4.0, 2.0, 6.0])))
    np.testing.assert_allclose(store.labels([0], ["act"], normalised=True), [[0.0]], atol=1e-6)


def test_frames_are_normalised_with_train_terms_only(messy_corpus, tmp_path):
    out = tmp_path / "s"
    prepare_store(messy_corpus, out, workers=1, progress=False, dtype="float32")
    store = FeatureStore.open(out)
    acc = NormAccumulator()
    for name in ("t1", "t2", "t3", "nan"):                      # the Train split, labeled or not
        acc.add(extract(load_audio(messy_corpus / "Audio" / f"{name}.wav"), "logmel"))
    terms = acc.terms()
    np.testing.assert_allclose(store.norm_terms.mean, terms.mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(store.norm_terms.std, terms.std, rtol=1e-5)
    assert store.meta["norm_terms"]["source"] == "split:Train"
    for i, path in ((3, messy_corpus / "Audio" / "v1.wav"), (7, messy_corpus / "Unlabeled" / "u1.ogg")):
        row = store.index[i]
        got = store.frames[row["offset"]:row["offset"] + row["length"]]
        np.testing.assert_allclose(got, terms.normalise(extract(load_audio(path), "logmel")), atol=1e-4)
    assert store.frames.dtype == np.float32 and np.abs(store.frames).max() <= 3.0


def test_float16_store_matches_float32_store(messy_corpus, tmp_path):
    prepare_store(messy_corpus, tmp_path / "a", workers=1, progress=False, dtype="float32")
    prepare_store(messy_corpus, tmp_path / "b", workers=1, progress=False, dtype="float16")
    a, b = FeatureStore.open(tmp_path / "a"), FeatureStore.open(tmp_path / "b")
    assert b.frames.dtype == np.float16 and b.meta["dtype"] == "float16"
    assert np.abs(a.frames - b.frames.astype(np.float32)).max() <= 2e-3     # half a float16 step at 3
    ca, cb = make_chunks(a, a.ids(), 62, 11), make_chunks(b, b.ids(), 62, 11)
    assert ca.dtype == cb.dtype and (ca - cb).abs().max() <= 2e-3


def test_reference_norm_terms(messy_corpus, tmp_path):
    prepare_store(messy_corpus, tmp_path / "s", features="reference", norm_terms=NORM_TERMS, workers=1,
                  progress=False)
    store = FeatureStore.open(tmp_path / "s")
    ref, labels = load_reference_norm_terms(NORM_TERMS)
    np.testing.assert_array_equal(store.norm_terms.mean, ref.mean)
    assert store.meta["norm_terms"]["source"].startswith("reference:")
    assert store.feature_spec["kind"] == "reference"
    assert "reference_label_terms" not in store.meta and labels   # the reference's label terms are not kept


def test_parallel_workers_give_the_same_store(messy_corpus, tmp_path):
    prepare_store(messy_corpus, tmp_path / "one", workers=1, progress=False)
    report = prepare_store(messy_corpus, tmp_path / "two", workers=2, progress=False)
    assert report["workers"] == 2
    for name in ("frames.npy", "index.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_unlabeled_only_folder_and_extra_pools(tmp_path):
    tone(tmp_path / "pool" / "a.wav", 1.0)
    tone(tmp_path / "pool" / "b.flac", 1.3, sr=44100, channels=2)
    tone(tmp_path / "more" / "c.ogg", 1.1, sr=44100, channels=2)
    report = prepare_store(tmp_path / "pool", tmp_path / "s", workers=1, progress=False,
                           unlabeled=[tmp_path / "more"])
    store = FeatureStore.open(tmp_path / "s")
    assert report["utterances"] == 3 and report["labeled"] == 0
    assert store.names(store.ids("")) == ["a", "b", "more/c"] and store.splits == []
    assert store.meta["norm_terms"]["source"] == "all" and store.label_terms == {}
    assert store.index["length"][2] == len(extract(load_audio(tmp_path / "more" / "c.ogg")))


def test_manifest_corpus(tmp_path):
    tone(tmp_path / "w" / "a.wav", 1.0)
    tone(tmp_path / "w" / "b.wav", 1.0, pitch=330)
    (tmp_path / "list.csv").write_text("audio,valence,split\nw/a.wav,3,Train\nw/b.wav,5,Validation\n")
    prepare_store(tmp_path / "list.csv", tmp_path / "s", workers=1, progress=False)
    store = FeatureStore.open(tmp_path / "s")
    assert store.meta["attributes"] == ["val"] and list(store.label_terms) == ["val"]
    assert list(store.ids(labeled=True)) == [0, 1] and store.labels([1], ["val"])[0, 0] == 5.0


def test_cli_noop_rerun_and_changed_corpus(messy_corpus, tmp_path):
    out = tmp_path / "s"
    first = run_cli("prepare", str(messy_corpus), "--out", str(out), "--workers", "1")
    assert first.returncode == 0, first.stderr
    assert "8 utterances (5 labeled, 3 unlabeled)" in first.stdout
    assert "unreadable_audio [rejected]: 1" in first.stdout and "short_utterance [kept]: 1" in first.stdout
    created = FeatureStore.open(out).meta["created"]
    inode = (out / "frames.npy").stat().st_ino
    again = run_cli("prepare", str(messy_corpus), "--out", str(out), "--workers", "1")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert (out / "frames.npy").stat().st_ino == inode
    tone(messy_corpus / "Audio" / "t2.wav", 2.5, pitch=310)       # an audio file changes
    changed = run_cli("prepare", str(messy_corpus), "--out", str(out), "--workers", "1", "--quiet")
    assert changed.returncode == 0 and "up to date" not in changed.stdout
    store = FeatureStore.open(out)
    assert store.index["length"][1] == 1 + 40000 // 256 and store.meta["fingerprint"] != ""
    again = run_cli("prepare", str(messy_corpus), "--out", str(out), "--dtype", "float32", "--quiet")
    assert "up to date" not in again.stdout and FeatureStore.open(out).frames.dtype == np.float32
    assert created  # the first build had a timestamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]   # no temp or old folders left


def test_cli_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "error:" in r.stderr and str(tmp_path / "empty") in r.stderr
    assert "labels_consensus.csv" in r.stderr and not (tmp_path / "s").exists()
    bad = tmp_path / "bad"
    (bad / "Audio").mkdir(parents=True)
    (bad / "Audio" / "x.wav").write_bytes(b"not a wav at all")
    (bad / "Labels").mkdir()
    (bad / "Labels" / "labels_consensus.csv").write_text(HEADER + "x.wav,N,4,4,4,1,Male,Train\n")
    r = run_cli("prepare", str(bad), "--out", str(tmp_path / "s"), "--workers", "1")
    assert r.returncode == 2 and "nothing usable" in r.stderr and "unreadable_audio: 1" in r.stderr
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))
    tone(tmp_path / "pool" / "a.wav", 1.0)
    r = run_cli("prepare", str(tmp_path / "pool"), "--out", str(tmp_path / "s"), "--unlabeled", str(tmp_path / "nope"))
    assert r.returncode == 2 and f"{tmp_path / 'nope'}: unlabeled pool folder not found" in r.stderr
    r = run_cli("prepare", str(tmp_path / "pool"), "--out", str(tmp_path / "s"), "--workers", "0")
    assert r.returncode == 2 and "--workers 0" in r.stderr
    r = run_cli("prepare", str(tmp_path / "pool"), "--out", str(tmp_path / "s"), "--unlabeled", str(bad / "Audio"),
                "--workers", "1", "--quiet")
    assert r.returncode == 0
    assert "1 utterances (0 labeled, 1 unlabeled)" in r.stdout and "unreadable_audio [rejected]: 1" in r.stdout


def test_interrupted_build_leaves_no_partial_store(messy_corpus, tmp_path):
    out = tmp_path / "s"

    def interrupt(i):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_store(messy_corpus, out, workers=1, progress=False, on_progress=interrupt)
    assert list(tmp_path.iterdir()) == [messy_corpus]
    prepare_store(messy_corpus, out, workers=1, progress=False)
    before = (out / "frames.npy").read_bytes()
    tone(messy_corpus / "Audio" / "t1.wav", 1.7)                # changed: a rebuild starts, then dies
    with pytest.raises(KeyboardInterrupt):
        prepare_store(messy_corpus, out, workers=2, progress=False, on_progress=interrupt)
    assert (out / "frames.npy").read_bytes() == before and len(FeatureStore.open(out)) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy", "s"]


def test_stale_temp_folder_of_a_dead_build_is_removed(messy_corpus, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".s.tmp-{int(dead.stdout)}-deadbeef"
    stale.mkdir()
    (stale / "raw.f32").write_bytes(bytes(100))
    prepare_store(messy_corpus, tmp_path / "s", workers=1, progress=False)
    assert not stale.exists()


def test_a_build_stopped_between_the_two_renames_gets_its_old_store_back(messy_corpus, tmp_path, capsys):
    """replace_dir moves the old store aside, then the new one in: a build killed in between leaves no
    store and the old one as the only complete copy. The next prepare puts it back (no rebuild)."""
    out = tmp_path / "s"
    prepare_store(messy_corpus, out, workers=1, progress=False)
    frames = (out / "frames.npy").read_bytes()
    old = tmp_path / ".s.old-999999-deadbeef"
    out.rename(old)                                             # the first rename, then the kill
    (tmp_path / ".s.tmp-999999-deadbeef").mkdir()               # the new store, never moved in
    report = prepare_store(messy_corpus, out, workers=1, progress=False)
    assert report["status"] == "unchanged" and (out / "frames.npy").read_bytes() == frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy", "s"]
    assert f"{out} was missing" in capsys.readouterr().err


def test_an_old_store_is_deleted_only_once_the_store_is_complete(messy_corpus, tmp_path, capsys):
    out = tmp_path / "s"
    prepare_store(messy_corpus, out, workers=1, progress=False)
    old = tmp_path / ".s.old-999999-deadbeef"
    shutil.copytree(out, old)
    (out / "frames.npy").unlink()                               # the store is damaged: the old copy is kept
    assert prepare_store(messy_corpus, out, workers=1, progress=False)["status"] == "built"
    assert FeatureStore.open(old).verify() and f"kept {old}" in capsys.readouterr().err
    assert prepare_store(messy_corpus, out, workers=1, progress=False)["status"] == "unchanged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy", "s"]   # the store is whole: deleted


def test_open_is_read_only_and_memory_mapped(messy_corpus, tmp_path):
    prepare_store(messy_corpus, tmp_path / "s", workers=1, progress=False)
    store = FeatureStore.open(tmp_path / "s")
    assert isinstance(store.frames, np.memmap) and isinstance(store.index, np.memmap)
    assert not store.frames.flags.writeable and not store.index.flags.writeable
    with pytest.raises(ValueError):
        store.frames[0, 0] = 1.0
    assert store.frames.shape == (store.meta["frames"], 128) and len(store) == 8


def test_open_rejects_missing_incomplete_and_other_versions(messy_corpus, tmp_path):
    with pytest.raises(StoreError, match=r"nowhere: feature store not found.*python -m tuner prepare"):
        FeatureStore.open(tmp_path / "nowhere")
    out = tmp_path / "s"
    prepare_store(messy_corpus, out, workers=1, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "format": "deepemocluster-store/0"}))
    with pytest.raises(StoreError, match=r"deepemocluster-store/0.*python -m tuner prepare"):
        FeatureStore.open(out)
    (out / "meta.json").write_text(json.dumps({**meta, "frames": meta["frames"] + 1}))
    with pytest.raises(StoreError, match="do not match meta.json"):
        FeatureStore.open(out)
    (out / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "label_terms"}))
    with pytest.raises(StoreError, match="meta.json: incomplete .missing 'label_terms'"):
        FeatureStore.open(out)
    (out / "meta.json").write_text(json.dumps(meta))
    os.unlink(out / "index.npy")
    with pytest.raises(StoreError, match="incomplete feature store"):
        FeatureStore.open(out)
    os.unlink(out / "meta.json")
    with pytest.raises(StoreError, match="no meta.json"):
        FeatureStore.open(out)
    # a broken store at --out is rebuilt; an unrelated non-empty folder is refused
    prepare_store(messy_corpus, out, workers=1, progress=False)
    assert FeatureStore.open(out).meta["format"] == FORMAT
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(Exception, match="not a feature store"):
        prepare_store(messy_corpus, tmp_path / "other", workers=1, progress=False)


def test_unknown_split_and_bad_dtype(messy_corpus, tmp_path):
    prepare_store(messy_corpus, tmp_path / "s", workers=1, progress=False)
    store = FeatureStore.open(tmp_path / "s")
    with pytest.raises(Exception, match="no split 'Test9'.*Train, Validation"):
        store.ids("Test9")
    with pytest.raises(Exception, match="dtype 'int8'"):
        prepare_store(messy_corpus, tmp_path / "t", dtype="int8", progress=False)


def test_not_a_corpus_raises(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CorpusError, match="not a corpus"):
        prepare_store(tmp_path / "x", tmp_path / "s", progress=False)


def test_shared_tiny_store_fixture(tiny_store):
    store = FeatureStore.open(tiny_store)
    assert len(store.ids("Train", labeled=True)) > 0 and len(store.pool_ids()) >= 16
    assert make_chunks(store, store.ids()[:4], 62, 11).shape == (44, 1, 62, 128)


def test_reference_norm_terms_need_reference_features(messy_corpus, tmp_path):
    with pytest.raises(Exception, match="--features reference"):
        prepare_store(messy_corpus, tmp_path / "s", features="logmel", norm_terms=NORM_TERMS, progress=False)
    assert not (tmp_path / "s").exists()


def test_relative_and_absolute_corpus_paths_are_the_same_corpus(messy_corpus, tmp_path, monkeypatch):
    prepare_store(messy_corpus, tmp_path / "s", workers=1, progress=False)
    monkeypatch.chdir(messy_corpus.parent)
    again = prepare_store(Path(messy_corpus.name), Path("s"), workers=1, progress=False)
    assert again["status"] == "unchanged"


def test_prepare_rebuilds_a_store_whose_report_is_missing_or_corrupt(messy_corpus, tmp_path):
    out = tmp_path / "s"
    prepare_store(messy_corpus, out, workers=1, progress=False)
    os.unlink(out / "report.json")
    assert prepare_store(messy_corpus, out, workers=1, progress=False)["status"] == "built"
    assert json.loads((out / "report.json").read_text())["status"] == "built"
    (out / "report.json").write_text("{not json")
    assert prepare_store(messy_corpus, out, workers=1, progress=False)["status"] == "built"
    assert prepare_store(messy_corpus, out, workers=1, progress=False)["status"] == "unchanged"
