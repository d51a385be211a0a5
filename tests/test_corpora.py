"""Corpus readers: MSP-Podcast layout, manifest CSV, unlabeled folders, and every kind of bad row."""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.corpora import (AMBIGUOUS_FILE, DUPLICATE_FILE, DUPLICATE_FOLDER, DUPLICATE_NAME, INVALID_LABEL,
                           MISSING_FILE, MISSING_LABELS, MISSING_SPLIT, SYMLINK_LOOP,
                           read_corpus)
from model.errors import CorpusError

HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"


def tone(path: Path, seconds: float = 1.2, sr: int = 16000, channels: int = 1) -> Path:
    """A short noisy tone written with soundfile (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))
    sf.write(path, np.repeat(x[:, None], channels, axis=1).astype(np.float32), sr)
    return path


def msp(root: Path, rows: list[str], files: list[str], table: str = "labels_consensus.csv",
        unlabeled: list[str] = ()) -> Path:
    for f in files:
        tone(root / "Audio" / f)
    for f in unlabeled:
        tone(root / "Unlabeled" / f)
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    (root / "Labels" / table).write_text(HEADER + "".join(r + "\n" for r in rows))
    return root


def reasons(corpus) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in corpus.problems:
        out.setdefault(p.reason, []).append(p.path)
    return out


def test_msp_layout_with_bad_rows(tmp_path):
    root = msp(tmp_path / "c", [
        "a_1.wav,N,4.0,3.0,5.0,12,Female,Train",
        "a_2,H,2.2,6.0,3.4,12,Female,Development",      # no extension, another split name
        "a_3.wav,N,,3.0,4.0,Unknown,Male,Train",          # missing act: unlabeled, kept
        "a_4.wav,N,nan,bad,4.0,13,Male,Test3",            # NaN and non-numeric
        "gone.wav,N,4.0,4.0,4.0,13,Male,Train",           # file missing
        "a_1,N,1.0,1.0,1.0,14,Male,Test1",                # duplicate name (extension differs)
        "a_5.wav,N,5.0,5.0,5.0,14,Male,",                 # no split
    ], ["a_1.wav", "a_2.wav", "a_3.wav", "a_4.wav", "a_5.wav", "extra.wav"],
        unlabeled=["p1.wav", "sub/p2.flac", ".hidden.wav"])
    corpus = read_corpus(root)
    assert corpus.kind == "msp-podcast" and corpus.attributes == ("act", "dom", "val")
    names = [u.name for u in corpus.utterances]
    assert names == ["a_1", "a_2", "a_3", "a_4", "a_5", "Unlabeled/p1", "Unlabeled/sub/p2"]
    by = {u.name: u for u in corpus.utterances}
    assert by["a_1"].labeled and (by["a_1"].act, by["a_1"].val, by["a_1"].dom) == (4.0, 3.0, 5.0)
    assert by["a_1"].speaker == "12" and by["a_3"].speaker is None
    assert by["a_2"].split == "Development" and by["a_2"].path == root / "Audio" / "a_2.wav"
    assert not by["a_3"].labeled and math.isnan(by["a_3"].act) and by["a_3"].split == "Train"
    assert not by["a_4"].labeled and math.isnan(by["a_4"].val)
    assert not by["a_5"].labeled and by["a_5"].split == ""
    assert not by["Unlabeled/p1"].labeled and by["Unlabeled/p1"].split == ""
    r = reasons(corpus)
    assert r[MISSING_FILE] == ["gone.wav"]
    assert r[DUPLICATE_NAME] == [str(root / "Audio" / "a_1.wav")]
    assert len(r[MISSING_LABELS]) == 2 and len(r[MISSING_SPLIT]) == 1
    assert corpus.not_in_table == 1                      # extra.wav
    detail = next(p.detail for p in corpus.problems if p.reason == MISSING_LABELS and "a_4" in p.path)
    assert "act='nan'" in detail and "val='bad'" in detail and "labels_consensus.csv:5" in detail


def test_old_label_table_name(tmp_path):
    root = msp(tmp_path / "c", ["x.wav,N,4,4,4,1,Male,Train"], ["x.wav"], table="labels_concensus.csv")
    corpus = read_corpus(root)
    assert corpus.label_table.name == "labels_concensus.csv" and corpus.utterances[0].labeled


def test_manifest_csv_with_aliases(tmp_path):
    tone(tmp_path / "wavs" / "one.wav")
    tone(tmp_path / "wavs" / "two.flac")
    tone(tmp_path / "abs.wav")
    (tmp_path / "m.csv").write_text(
        "Path,Arousal,Valence,Split,Speaker\n"
        "wavs/one.wav,3.5,4.5,train,s1\n"
        f"wavs/two.flac,2.0,,valid,\n"
        f"{tmp_path / 'abs.wav'},6,6,test,s2\n"
        "wavs/none.wav,1,1,train,s3\n")
    corpus = read_corpus(tmp_path / "m.csv")
    assert corpus.kind == "manifest" and corpus.attributes == ("act", "val")
    one, two, ab = corpus.utterances
    assert one.name == "wavs/one" and one.labeled and one.act == 3.5 and one.val == 4.5 and math.isnan(one.dom)
    assert one.split == "train" and one.speaker == "s1"
    assert not two.labeled and two.speaker is None
    assert ab.labeled and ab.path == tmp_path / "abs.wav"
    assert reasons(corpus)[MISSING_FILE] == ["wavs/none.wav"]


def test_manifest_folder_and_defaults(tmp_path):
    tone(tmp_path / "a.wav")
    (tmp_path / "manifest.csv").write_text("file,act\na.wav,4\n")
    corpus = read_corpus(tmp_path)
    assert corpus.kind == "manifest"
    (u,) = corpus.utterances
    assert u.split == "Train" and u.labeled and u.act == 4.0   # no split column: Train


def test_header_names_with_spaces_around_them(tmp_path):
    tone(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path, Act , dom, val, split, speaker\na.wav, 4.0, 3.0, 2.0, Train, s1\n")
    (u,) = read_corpus(tmp_path / "m.csv").utterances
    assert (u.act, u.dom, u.val, u.split, u.speaker, u.labeled) == (4.0, 3.0, 2.0, "Train", "s1", True)


def test_manifest_without_path_column(tmp_path):
    (tmp_path / "m.csv").write_text("name,act\na.wav,4\n")
    with pytest.raises(CorpusError, match=r"m\.csv: no audio file column.*path"):
        read_corpus(tmp_path / "m.csv")


def test_unlabeled_folder_recursive_any_format(tmp_path):
    tone(tmp_path / "pool" / "a.wav")
    tone(tmp_path / "pool" / "deep" / "b.ogg", sr=44100, channels=2)
    tone(tmp_path / "pool" / "c.FLAC", sr=44100, channels=2)
    (tmp_path / "pool" / "notes.txt").write_text("not audio")
    corpus = read_corpus(tmp_path / "pool")
    assert corpus.kind == "unlabeled" and corpus.label_table is None
    assert sorted(u.name for u in corpus.utterances) == ["a", "c", "deep/b"]
    assert not any(u.labeled for u in corpus.utterances) and not corpus.problems


def test_extra_unlabeled_pools_and_overlap(tmp_path):
    root = msp(tmp_path / "c", ["x.wav,N,4,4,4,1,Male,Train"], ["x.wav"])
    tone(tmp_path / "more" / "y.wav")
    corpus = read_corpus(root, [tmp_path / "more", root / "Audio"])
    assert [u.name for u in corpus.utterances] == ["x", "more/y"]
    assert reasons(corpus)[DUPLICATE_FILE] == [str(root / "Audio" / "x.wav")]
    with pytest.raises(CorpusError, match="nowhere"):
        read_corpus(root, [tmp_path / "nowhere"])


@pytest.mark.parametrize("make", ["empty_dir", "text_file", "missing", "only_text"])
def test_not_a_corpus(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty_dir":
        target.mkdir()
    elif make == "text_file":
        target.write_text("hello")
    elif make == "only_text":
        target.mkdir()
        (target / "readme.txt").write_text("hi")
    with pytest.raises(CorpusError, match=str(target)):
        read_corpus(target)


def test_label_table_with_nothing_usable(tmp_path):
    root = msp(tmp_path / "c", ["gone.wav,N,4,4,4,1,Male,Train"], [])
    with pytest.raises(CorpusError, match="no usable utterance.*1 missing_file"):
        read_corpus(root)


def test_labels_folder_without_a_known_table_is_an_error(tmp_path):
    root = msp(tmp_path / "c", ["x.wav,N,4,4,4,1,Male,Train"], ["x.wav"], table="labels_detailed.csv")
    with pytest.raises(CorpusError, match=r"Labels: no label table: expected labels_consensus.csv.*labels_detailed"):
        read_corpus(root)


def test_symlink_loops_and_second_links_are_walked_once(tmp_path):
    pool = tmp_path / "pool"
    tone(pool / "a.wav")
    tone(pool / "sub" / "b.wav")
    (pool / "loop").symlink_to(".")                    # a loop back to the pool
    (pool / "sub" / "up").symlink_to("..")             # a second loop, deeper
    (tmp_path / "elsewhere").mkdir()
    tone(tmp_path / "elsewhere" / "c.wav")
    (pool / "x1").symlink_to(tmp_path / "elsewhere")   # two links to one folder outside
    (pool / "x2").symlink_to(tmp_path / "elsewhere")
    (pool / "b_again.wav").symlink_to(pool / "sub" / "b.wav")   # a file link
    corpus = read_corpus(pool)
    assert sorted(u.name for u in corpus.utterances) == ["a", "b_again", "x1/c"]   # each real file once
    r = reasons(corpus)
    assert sorted(r[SYMLINK_LOOP]) == [str(pool / "loop"), str(pool / "sub" / "up")]
    assert r[DUPLICATE_FOLDER] == [str(pool / "x2")]
    assert r[DUPLICATE_FILE] == [str(pool / "sub" / "b.wav")]   # sorted walk: b_again.wav came first


def test_out_of_range_and_infinite_labels_are_reported_and_missing(tmp_path):
    root = msp(tmp_path / "c", [
        "a.wav,N,99,4,4,1,Male,Train",
        "b.wav,N,4,-5,4,1,Male,Train",
        "c.wav,N,4,4,inf,2,Male,Train",
        "d.wav,N,1e300,4,4,2,Male,Train",
        "e.wav,N,0,4,,2,Male,Train",
        "f.wav,N,1,7,4,2,Male,Train",
    ], ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"])
    corpus = read_corpus(root)
    by = {u.name: u for u in corpus.utterances}
    assert len(by) == 6 and [n for n, u in by.items() if u.labeled] == ["f"]
    assert math.isnan(by["a"].act) and by["a"].val == 4 and math.isnan(by["d"].act) and math.isnan(by["c"].dom)
    details = {Path(p.path).stem: p.detail for p in corpus.problems if p.reason == INVALID_LABEL}
    assert sorted(details) == ["a", "b", "c", "d", "e"]
    assert "labels_consensus.csv:2: act='99' outside the label range 1..7" in details["a"]
    assert "labels_consensus.csv:4: dom='inf' not finite" in details["c"]
    assert "act='0' outside" in details["e"]
    assert any(p.reason == MISSING_LABELS and "e.wav" in p.path and "dom=''" in p.detail for p in corpus.problems)
    # a corpus on another scale declares it
    wide = read_corpus(root, label_range=(-10, 100))
    assert [u.name for u in wide.utterances if u.labeled] == ["a", "b", "f"]
    with pytest.raises(CorpusError, match="LOW < HIGH"):
        read_corpus(root, label_range=(7, 1))


def test_a_file_name_matching_several_files_is_ambiguous(tmp_path):
    root = msp(tmp_path / "c", ["x,N,4,4,4,1,Male,Train", "x.flac,N,4,4,4,1,Male,Train",
                                "y,N,4,4,4,1,Male,Train"], ["x.wav", "x.flac", "y.wav"])
    corpus = read_corpus(root)
    assert [u.name for u in corpus.utterances] == ["x", "y"]        # x.flac: exact name, unambiguous
    assert corpus.utterances[0].path.name == "x.flac"
    (amb,) = [p for p in corpus.problems if p.reason == AMBIGUOUS_FILE]
    assert amb.path == "x" and "labels_consensus.csv:2" in amb.detail and "x.wav" in amb.detail


def test_unreadable_files_are_not_duplicates_of_each_other(tmp_path):
    root = msp(tmp_path / "c", ["a.wav,N,4,4,4,1,Male,Train", "b.wav,N,4,4,4,1,Male,Train",
                                "c.wav,N,4,4,4,1,Male,Train"], ["c.wav"])
    (root / "Audio" / "a.wav").symlink_to(tmp_path / "gone-a.wav")   # dangling: stat fails
    (root / "Audio" / "b.wav").symlink_to(tmp_path / "gone-b.wav")
    corpus = read_corpus(root)
    assert DUPLICATE_FILE not in reasons(corpus)
