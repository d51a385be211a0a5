"""Bad input and concurrent use, every command, as a user meets them: real `python -m tuner` subprocesses.

Each case of the table builds its bad input in its own folder, runs the command and asserts the exit
code (2: bad input), one `error:` line naming the offending file, key or value, no traceback, and
that nothing that was on disk before changed (a previous store, run or model is never damaged). The
cases run in a thread pool (the subprocesses mostly import torch). Then: two writers on one output,
SIGKILL during `prepare` and during `train` followed by a re-run, and an internal error (exit 1, the
traceback in a log file).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import REFERENCE_MODELS
from tune_helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
NORM_TERMS = REFERENCE_MODELS / "NormTerm"
SMOKE = REPO / "search_spaces" / "smoke.yaml"
TINY = ["temporal=none", "epochs=1", "width=0.25", "batch_size=8", "chunks_per_sentence=3", "num_clusters=3",
        "kmeans_iterations=3", "precision=fp32", "num_threads=1"]
UNSAFE_ADVICE = ("weights_only", "allow_pickle", "Traceback")


def env(log_dir: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["DEEPEMOCLUSTER_LOG_DIR"] = str(log_dir)
    e["RAY_USAGE_STATS_ENABLED"] = "0"
    return e


def tuner_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tuner", *map(str, args)]


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 (or link target) of every file and link below `folder` (lock files left out)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.name.endswith(".lock"):
            continue
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ---- shared inputs -------------------------------------------------------------------------------
@dataclass
class World:
    root: Path
    corpus: Path
    store: Path
    run: Path            # a finished `train` run folder
    model: Path          # its best_model.pt
    logs: Path           # DEEPEMOCLUSTER_LOG_DIR of every subprocess: must stay empty
    wav: Path            # one good audio file


@pytest.fixture(scope="session")
def world(tiny_corpus, tiny_store, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad_input")
    logs = root / "logs"
    run = root / "base-run"
    # several pairs after one --set (and a second --set): the README's usage line, which used to fail
    proc = subprocess.run(tuner_cmd(["train", "--store", tiny_store, "--set", *TINY[:4], "--set", *TINY[4:],
                                     "--out", run]), env=env(logs), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wav = next((Path(tiny_corpus) / "Audio").glob("*.wav"))
    return World(root, Path(tiny_corpus), Path(tiny_store), run, run / "best_model.pt", logs, wav)


def copy_store(w: World, d: Path, edit: Callable[[Path], None] | None = None) -> Path:
    dst = d / "copy.store"
    shutil.copytree(w.store, dst)
    if edit:
        edit(dst)
    return dst


def edit_meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def run(store: Path) -> None:
        meta = json.loads((store / "meta.json").read_text())
        new = change(meta)
        (store / "meta.json").write_text(json.dumps(meta if new is None else new))
    return run


def edit_index(change: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def run(store: Path) -> None:
        index = np.load(store / "index.npy").copy()
        change(index)
        np.save(store / "index.npy", index)
    return run


def nan_frames(store: Path) -> None:
    frames = np.load(store / "frames.npy", mmap_mode="r+")
    frames[5:9] = np.nan
    frames.flush()


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def pickled_index(store: Path) -> None:
    np.save(store / "index.npy", np.array([{"name": "x"}], dtype=object), allow_pickle=True)


def model_copy(w: World, d: Path, change: Callable[[dict], None]) -> Path:
    payload = torch.load(w.model, weights_only=True)
    change(payload)
    out = d / "edited.pt"
    torch.save(payload, out)
    return out


def fake_run(w: World, storage: Path, name: str = "demo", result_text: dict[str, str] | None = None,
             manifest_text: str | None = None, state_text: str | None = None,
             files: dict[str, bytes] | None = None, optuna_storage: str | None = None) -> Path:
    """A finished search run's files as Ray and `run` leave them (two trials), without running Ray."""
    run = storage / name
    exp = run / "all"
    trials = {"a": 0.31, "b": 0.42}
    entries = []
    for tid, score in trials.items():
        folder = exp / f"trial_{tid}"
        folder.mkdir(parents=True)
        rows = [{"val_ccc_mean": score - 0.1, "training_iteration": 1}, {"val_ccc_mean": score, "training_iteration": 2}]
        text = (result_text or {}).get(tid) or "".join(json.dumps(r) + "\n" for r in rows)
        (folder / "result.json").write_text(text)
        config = {"temporal": "gru", "num_clusters": 3, "chunks_per_sentence": 4, "width": 0.125, "epochs": 2}
        entries.append([json.dumps({"trial_id": tid, "status": "TERMINATED", "config": config,
                                    "relative_logdir": f"trial_{tid}"}), "{}"])
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(
        state_text if state_text is not None else json.dumps({"trial_data": entries}))
    manifest = {"version": 1, "name": name, "space_file": str(SMOKE), "space_yaml": SMOKE.read_text(),
                "store": str(w.store), "created": "2026-01-01T00:00:00+00:00", "command": "python -m tuner run",
                "metrics": ["val_ccc_mean"], "modes": ["max"],
                "conditions": [{"label": "all", "values": {}, "state": "done"}]}
    if optuna_storage:
        manifest["optuna_storage"] = optuna_storage
    (run / "run.json").write_text(manifest_text if manifest_text is not None else json.dumps(manifest))
    for rel, data in (files or {}).items():   # files the tool writes later (confirm/..., optuna.journal), as given
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    return run


def space_file(d: Path, change: Callable[[str], str]) -> Path:
    path = d / "space.yaml"
    path.write_text(change(SMOKE.read_text()))
    return path


def messy_corpus(w: World, d: Path) -> Path:
    """Every kind of questionable file prepare must report (and must not hang on)."""
    root = d / "messy"
    audio, pool = root / "Audio", root / "Unlabeled"
    audio.mkdir(parents=True)
    pool.mkdir()
    good = sorted((w.corpus / "Audio").glob("*.wav"))
    for i, name in enumerate(["a", "b", "c", "d", "e", "f", "amb"]):
        shutil.copy(good[i], audio / f"{name}.wav")
    sf.write(audio / "amb.flac", sf.read(good[7])[0], 16000)            # same stem as amb.wav
    sf.write(audio / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(audio / "low.wav", (0.1 * np.random.default_rng(0).standard_normal(6000)).astype(np.float32), 3000)
    shutil.copy(good[8], audio / "cut.wav")
    truncate(audio / "cut.wav", 0.6)
    (audio / "broken.wav").write_bytes(b"RIFF not really a wav file")
    rows = ["a,N,99,4,4,1,Male,Train", "b,N,4,-5,4,1,Male,Train", "c,N,4,4,inf,2,Male,Train",
            "d,N,1e300,4,4,2,Male,Validation", "e,N,0,4,4,3,Male,Validation", "f,N,4,4,4,3,Male,Train",
            "amb,N,4,4,4,3,Male,Train", "silent,N,4,4,4,1,Male,Train", "low,N,4,4,4,2,Male,Train",
            "cut,N,4,4,4,2,Male,Validation", "broken,N,4,4,4,3,Male,Train"]
    (root / "Labels").mkdir()
    (root / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n" + "\n".join(rows) + "\n")
    for i in range(3):
        shutil.copy(sorted((w.corpus / "Unlabeled").glob("*.wav"))[i], pool / f"p{i}.wav")
    (pool / "loop").symlink_to(".")          # used to add every file ~40 times
    (pool / "loop2").symlink_to("..")        # two loops used to hang prepare
    (pool / "again.wav").symlink_to(pool / "p0.wav")
    return root


def check_messy_report(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    report = json.loads((d / "m.store" / "report.json").read_text())
    by = {}
    for p in report["problem_list"]:
        by.setdefault(p["reason"], []).append(p)
    details = " ".join(p["detail"] for p in by["invalid_label"])
    for value in ("act='99'", "val='-5'", "dom='inf'", "act='1e300'", "act='0'"):
        assert value in details, (value, details)
    assert "labels_consensus.csv:2" in details and "treated as missing" in details
    assert [p["path"] for p in by["ambiguous_file"]] == ["amb"]
    implausible = " ".join(p["detail"] for p in by["implausible_audio"])
    assert "all zeros" in implausible and "3000 Hz" in implausible and "cut short" in implausible
    assert [Path(p["path"]).name for p in by["unreadable_audio"]] == ["broken.wav"]
    assert sorted(Path(p["path"]).name for p in by["symlink_loop"]) == ["loop", "loop2"]
    assert len(by["duplicate_file"]) == 1
    assert report["problems"]["symlink_loop"]["skipped"] and report["problems"]["implausible_audio"]["kept"]
    assert report["unlabeled"] == 5 + 3 and report["utterances"] == 9 + 3   # 11 rows - amb - broken + 3 pool files
    meta = json.loads((d / "m.store" / "meta.json").read_text())
    assert meta["label_range"] == [1.0, 7.0]
    labels = np.load(d / "m.store" / "index.npy")
    assert np.nanmax(np.stack([labels["act"], labels["dom"], labels["val"]])) <= 7   # 99, 1e300 never stored
    assert "invalid_label [kept]" in proc.stdout and "symlink_loop [skipped]" in proc.stdout


def check_stale_removed(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert "up to date" in proc.stdout
    assert not list(d.glob(".copy.store.tmp-*")) and not list(d.glob(".copy.store.old-*"))


def check_status_warning(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert "warning: trial a (condition all, trial_a): result.json line 1 is not valid JSON" in proc.stdout
    assert "best: trial b" in proc.stdout


def check_export_warning(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert "warning: trial b (condition all, trial_b): result.json line 1" in proc.stderr
    assert "trial_id: a" in (d / "best.yaml").read_text()


def check_synth_pool(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert len(list((d / "D" / "Unlabeled").glob("*.wav"))) == 1 and len(list((d / "D" / "Audio").glob("*"))) == 4


def check_predict_skips(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert "skipped" in proc.stderr and "junk.wav" in proc.stderr
    assert len((d / "p.csv").read_text().splitlines()) == 2


# ---- the table -----------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    build: Callable[[World, Path], list]      # makes the input in the case's folder; returns the arguments
    code: int = 2
    names: tuple[str, ...] = ()               # the message must name these ({d}: the case folder)
    check: Callable | None = None             # more assertions on a success
    unchanged: bool = True                    # the case folder and the shared inputs keep their content


def text_file(d: Path, name: str = "notes.txt", text: str = "hello") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return d / name


def junk_dir(d: Path) -> Path:
    (d / "junk").mkdir()
    (d / "junk" / "keep.txt").write_text("mine")
    return d / "junk"


def not_named(proc: subprocess.CompletedProcess, name: str) -> None:
    assert name not in proc.stderr, proc.stderr


def train_set(case_id: str, pair: str, *names: str) -> Case:
    """`train --set PAIR` on the shared store: exit 2 with a message naming `names`."""
    return Case(case_id, lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--set", pair], 2, names)


def stale_temp(w: World, d: Path) -> list:
    store = copy_store(w, d)   # up to date with w.corpus (the fingerprint does not depend on where it lies)
    (d / ".copy.store.tmp-999999-deadbeef").mkdir()
    (d / ".copy.store.tmp-999999-deadbeef" / "raw.f32").write_bytes(bytes(64))
    return ["prepare", w.corpus, "--out", store, "--quiet"]


CASES = [
    # synth
    Case("synth-few-unlabeled-is-honoured",
         lambda w, d: ["synth", d / "D", "--utterances", 4, "--unlabeled", 1, "--speakers", 3], 0,
         check=check_synth_pool, unchanged=False),
    Case("synth-zero-utterances", lambda w, d: ["synth", d / "D", "--utterances", 0], 2, ("--utterances", "0")),
    Case("synth-too-many", lambda w, d: ["synth", d / "D", "--utterances", 10**8], 2, ("utterances=100000000",)),
    Case("synth-fewer-utterances-than-speakers", lambda w, d: ["synth", d / "D", "--utterances", 5, "--speakers", 10],
         2, ("utterances (5)", "speakers (10)")),
    Case("synth-out-under-a-file", lambda w, d: ["synth", text_file(d) / "D"], 2, ("{d}/notes.txt",)),
    Case("synth-out-not-empty", lambda w, d: ["synth", junk_dir(d)], 2, ("{d}/junk", "not empty")),
    # prepare
    Case("prepare-corpus-missing", lambda w, d: ["prepare", d / "nowhere", "--out", d / "s"], 2, ("{d}/nowhere",)),
    Case("prepare-corpus-text-file", lambda w, d: ["prepare", text_file(d), "--out", d / "s"], 2, ("notes.txt",)),
    Case("prepare-out-is-a-file", lambda w, d: ["prepare", w.corpus, "--out", text_file(d)], 2,
         ("{d}/notes.txt", "is a file")),
    Case("prepare-out-under-a-file", lambda w, d: ["prepare", w.corpus, "--out", text_file(d) / "s"], 2,
         ("{d}/notes.txt", "not a folder")),
    Case("prepare-out-holds-other-files", lambda w, d: ["prepare", w.corpus, "--out", junk_dir(d), "--quiet"], 2,
         ("{d}/junk", "not a feature store")),
    Case("prepare-labels-without-table",
         lambda w, d: [(d / "c" / "Labels").mkdir(parents=True), text_file(d / "c" / "Labels", "other.csv"),
                       "prepare", d / "c", "--out", d / "s"][2:], 2, ("{d}/c/Labels", "labels_consensus.csv")),
    Case("prepare-manifest-without-path-column",
         lambda w, d: ["prepare", text_file(d, "m.csv", "name,act\na.wav,4\n"), "--out", d / "s"], 2,
         ("{d}/m.csv", "no audio file column")),
    Case("prepare-label-range-reversed", lambda w, d: ["prepare", w.corpus, "--out", d / "s", "--label-range", 7, 1],
         2, ("label range 7..1", "LOW < HIGH")),
    Case("prepare-label-range-nan", lambda w, d: ["prepare", w.corpus, "--out", d / "s", "--label-range", "nan", 7],
         2, ("label range nan..7", "finite")),
    Case("prepare-workers-zero", lambda w, d: ["prepare", w.corpus, "--out", d / "s", "--workers", 0], 2,
         ("--workers 0",)),
    Case("prepare-norm-terms-need-reference-features",
         lambda w, d: ["prepare", w.corpus, "--out", d / "s", "--norm-terms", d], 2, ("--norm-terms", "reference")),
    Case("prepare-nothing-readable",
         lambda w, d: [text_file(d / "pool", "x.wav", "not audio"), "prepare", d / "pool", "--out", d / "s"][1:],
         2, ("{d}/pool", "nothing usable", "unreadable_audio")),
    Case("prepare-messy-corpus-is-reported-not-duplicated-or-hung",
         lambda w, d: ["prepare", messy_corpus(w, d), "--out", d / "m.store", "--workers", 1], 0,
         check=check_messy_report, unchanged=False),
    Case("prepare-removes-stale-temp-when-up-to-date", stale_temp, 0, check=check_stale_removed, unchanged=False),
    # train: stores
    Case("train-store-missing", lambda w, d: ["train", "--store", d / "none", "--out", d / "r"], 2, ("{d}/none",)),
    Case("train-store-not-a-store", lambda w, d: ["train", "--store", junk_dir(d), "--out", d / "r"], 2,
         ("{d}/junk", "meta.json")),
    Case("train-store-meta-truncated",
         lambda w, d: ["train", "--store", copy_store(w, d, lambda s: truncate(s / "meta.json")), "--out", d / "r"],
         2, ("{d}/copy.store/meta.json",)),
    Case("train-store-meta-a-list",
         lambda w, d: ["train", "--store", copy_store(w, d, edit_meta(lambda m: [m])), "--out", d / "r"], 2,
         ("{d}/copy.store", "format")),
    Case("train-store-meta-missing-key",
         lambda w, d: ["train", "--store", copy_store(w, d, edit_meta(lambda m: m.pop("splits") and None)),
                       "--out", d / "r"],
         2, ("{d}/copy.store/meta.json", "splits")),
    Case("train-store-index-pickled",
         lambda w, d: ["train", "--store", copy_store(w, d, pickled_index), "--out", d / "r"], 2,
         ("{d}/copy.store/index.npy", "pickle")),
    Case("train-store-frames-truncated",
         lambda w, d: ["train", "--store", copy_store(w, d, lambda s: truncate(s / "frames.npy")), "--out", d / "r"],
         2, ("{d}/copy.store/frames.npy",)),
    Case("train-store-frames-nan-is-corrupt-not-diverged",
         lambda w, d: ["train", "--store", copy_store(w, d, nan_frames), "--out", d / "r", "--set", *TINY], 2,
         ("{d}/copy.store/frames.npy", "corrupt feature store", "NaN")),
    Case("train-store-offset-beyond-frames",
         lambda w, d: ["train", "--store", copy_store(w, d, edit_index(lambda i: i["offset"].__setitem__(0, 10**9))),
                       "--out", d / "r"], 2, ("{d}/copy.store/index.npy", "spans frames")),
    Case("train-store-label-out-of-range",
         lambda w, d: ["train", "--store", copy_store(w, d, edit_index(lambda i: i["act"].__setitem__(0, 99.0))),
                       "--out", d / "r"], 2, ("{d}/copy.store/index.npy", "act=99.0", "1..7")),
    Case("train-store-split-code-unknown",
         lambda w, d: ["train", "--store", copy_store(w, d, edit_index(lambda i: i["split"].__setitem__(0, 9))),
                       "--out", d / "r"], 2, ("{d}/copy.store/index.npy", "split codes")),
    Case("train-store-norm-terms-nan",
         lambda w, d: ["train", "--store", copy_store(w, d, edit_meta(
             lambda m: m["norm_terms"]["std"].__setitem__(0, float("nan")))), "--out", d / "r"], 2,
         ("{d}/copy.store/meta.json", "norm_terms")),
    # train: config values
    train_set("train-set-nan", "lr_sgd=.nan", "lr_sgd=nan", "finite"),
    train_set("train-set-inf", "dropout=.inf", "dropout=inf", "finite"),
    train_set("train-set-huge-chunk-frames", "chunk_frames=100000", "chunk_frames=100000", "<= 1024"),
    train_set("train-set-huge-chunks-per-sentence", "chunks_per_sentence=5000", "chunks_per_sentence=5000", "<= 256"),
    train_set("train-set-huge-batch", "batch_size=10000000", "batch_size=10000000", "<= 4096"),
    train_set("train-set-huge-k", "num_clusters=100000", "num_clusters=100000", "<= 4096"),
    train_set("train-set-unknown-key", "colour=red", "colour"),
    train_set("train-set-duplicate-attribute-weight", "attribute_weights=act=1,act=5", "--set: attribute_weights",
              "act=1,act=5", "each attribute once"),
    train_set("train-set-duplicate-key-in-a-mapping", "attribute_weights={act: 1, act: 5}", "--set attribute_weights",
              "'act' is given twice"),
    train_set("train-set-without-equals", "epochs", "'epochs'", "key=value"),
    Case("train-config-missing", lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", d / "c.yaml"],
         2, ("{d}/c.yaml", "not found")),
    Case("train-config-a-folder",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", junk_dir(d)], 2,
         ("{d}/junk", "is a folder", "config file")),
    Case("train-config-bad-yaml",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", text_file(d, "c.yaml", "a: [1\n")],
         2, ("{d}/c.yaml", "YAML")),
    Case("train-config-duplicate-key",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config",
                       text_file(d, "c.yaml", "epochs: 2\nwidth: 0.5\nepochs: 3\n")], 2,
         ("{d}/c.yaml", "'epochs' is given twice (lines 1 and 3)")),
    Case("train-config-utf16-is-read",
         lambda w, d: [(d / "c.yaml").write_text("lr_adam: .nan\n", encoding="utf-16"), "train", "--store", w.store,
                       "--out", d / "r", "--config", d / "c.yaml"][1:], 2, ("{d}/c.yaml: lr_adam=nan",)),
    Case("train-config-a-list",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", text_file(d, "c.yaml", "- 1\n")],
         2, ("{d}/c.yaml", "mapping")),
    Case("train-config-nan",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config",
                       text_file(d, "c.yaml", "lr_adam: .nan\n")], 2, ("{d}/c.yaml", "lr_adam=nan")),
    Case("train-set-error-is-blamed-on-set-not-the-config",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", text_file(d, "c.yaml", "epochs: 2\n"),
                       "--set", "freeze_encoder_epochs=-1"], 2, ("--set: freeze_encoder_epochs=-1",),
         check=lambda w, d, proc: not_named(proc, "c.yaml")),
    Case("train-set-unknown-key-is-blamed-on-set",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", text_file(d, "c.yaml", "epochs: 2\n"),
                       "--set", "colour=red"], 2, ("--set: unknown key 'colour'",),
         check=lambda w, d, proc: not_named(proc, "c.yaml")),
    Case("train-config-error-with-a-set-is-blamed-on-the-config",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config",
                       text_file(d, "c.yaml", "lr_adam: .nan\n"), "--set", "epochs=2"], 2,
         ("{d}/c.yaml: lr_adam=nan",)),
    Case("train-init-model-other-chunk-frames",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--set", *TINY, f"init_model={w.model}",
                       "chunk_frames=48"], 2, ("init_model {run}/best_model.pt", "chunk_frames=62")),
    # train: outputs
    Case("train-out-is-a-file", lambda w, d: ["train", "--store", w.store, "--out", text_file(d)], 2,
         ("{d}/notes.txt", "is a file")),
    Case("train-out-under-a-file", lambda w, d: ["train", "--store", w.store, "--out", text_file(d) / "r"], 2,
         ("{d}/notes.txt", "not a folder")),
    Case("train-out-holds-a-run", lambda w, d: ["train", "--store", w.store, "--out", w.run], 2,
         ("{run}", "already holds a run")),
    Case("train-resume-nothing", lambda w, d: ["train", "--store", w.store, "--out", d, "--resume"], 2,
         ("--resume", "holds no run")),
    Case("train-resume-with-config",
         lambda w, d: [shutil.copytree(w.run, d / "r"), "train", "--store", w.store, "--out", d / "r", "--resume",
                       "--config", w.run / "config.yaml"][1:], 2, ("--config", "--resume")),
    Case("train-resume-corrupt-checkpoint",
         lambda w, d: [shutil.copytree(w.run, d / "r"), truncate(d / "r" / "checkpoint" / "state.pt"),
                       "train", "--store", w.store, "--out", d / "r", "--resume"][2:], 2,
         ("{d}/r/checkpoint/state.pt", "not a readable checkpoint")),
    # evaluate
    Case("evaluate-model-missing", lambda w, d: ["evaluate", d / "m.pt", "--store", w.store], 2, ("{d}/m.pt",)),
    Case("evaluate-model-not-a-model", lambda w, d: ["evaluate", text_file(d, "m.pt"), "--store", w.store], 2,
         ("{d}/m.pt", "not a readable model file")),
    Case("evaluate-model-truncated",
         lambda w, d: [shutil.copy(w.model, d / "m.pt"), truncate(d / "m.pt"), "evaluate", d / "m.pt",
                       "--store", w.store][2:], 2, ("{d}/m.pt", "truncated or corrupt")),
    Case("evaluate-model-a-code-pickle",
         lambda w, d: [torch.save(argparse.Namespace(a=1), d / "m.pt"), "evaluate", d / "m.pt", "--store", w.store][1:],
         2, ("{d}/m.pt", "pickle")),
    Case("evaluate-model-weights-do-not-match-config",
         lambda w, d: ["evaluate", model_copy(w, d, lambda p: p["config"].__setitem__("num_clusters", 5)),
                       "--store", w.store, "--split", "Validation"], 2,
         ("{d}/edited.pt", "do not match its own config", "num_clusters=5")),
    Case("evaluate-model-missing-entry",
         lambda w, d: ["evaluate", model_copy(w, d, lambda p: p.pop("norm_mean")), "--store", w.store], 2,
         ("{d}/edited.pt", "norm_mean")),
    Case("evaluate-split-missing", lambda w, d: ["evaluate", w.model, "--store", w.store, "--split", "Test9"], 2,
         ("Test9",)),
    Case("evaluate-store-nan-frames",
         lambda w, d: ["evaluate", w.model, "--store", copy_store(w, d, nan_frames), "--split", "Validation"], 2,
         ("{d}/copy.store/frames.npy", "corrupt")),
    Case("evaluate-batch-zero", lambda w, d: ["evaluate", w.model, "--store", w.store, "--batch-sentences", 0], 2,
         ("--batch-sentences=0",)),
    # predict
    Case("predict-out-is-a-folder", lambda w, d: ["predict", w.model, w.wav, "--out", junk_dir(d)], 2,
         ("{d}/junk", "is a folder")),
    Case("predict-out-under-a-file", lambda w, d: ["predict", w.model, w.wav, "--out", text_file(d) / "p.csv"], 2,
         ("{d}/notes.txt", "not a folder")),
    Case("predict-nothing-readable-keeps-old-output",
         lambda w, d: ["predict", w.model, d / "gone.wav", "--out", text_file(d, "p.csv", "file,act\nold,1\n")], 2,
         ("{d}/gone.wav", "none of the 1 audio file", "p.csv")),
    Case("predict-all-corrupt",
         lambda w, d: ["predict", w.model, text_file(d, "a.wav", "x"), text_file(d, "b.wav", "y"), "--out", d / "p.csv"],
         2, ("{d}/a.wav", "{d}/b.wav", "none of the 2")),
    Case("predict-folder-without-audio", lambda w, d: ["predict", w.model, junk_dir(d), "--out", d / "p.csv"], 2,
         ("no audio files",)),
    Case("predict-model-a-code-pickle",
         lambda w, d: [torch.save(argparse.Namespace(a=1), d / "m.pt"), "predict", d / "m.pt", w.wav,
                       "--out", d / "p.csv"][1:], 2, ("{d}/m.pt",)),
    Case("predict-attribute-from-yaml-duplicate-attribute",
         lambda w, d: ["predict", w.wav, "--attribute-from", text_file(d, "t.yaml", f"act: {w.model}\nact: {w.model}\n"),
                       "--out", d / "p.csv"], 2, ("{d}/t.yaml", "'act' is given twice")),
    Case("predict-model-and-attribute-from",
         lambda w, d: ["predict", w.model, w.wav, "--attribute-from", f"act={w.model}", "--out", d / "p.csv"], 2,
         ("{run}/best_model.pt", "--attribute-from")),
    Case("predict-skips-one-bad-file",
         lambda w, d: ["predict", w.model, w.wav, text_file(d, "junk.wav", "x"), "--out", d / "p.csv"], 0,
         check=check_predict_skips, unchanged=False),
    # import-reference
    Case("import-reference-not-a-checkpoint",
         lambda w, d: ["import-reference", text_file(d, "x_Act.pth.tar"), "--norm-terms", NORM_TERMS,
                       "--out", d / "m.pt"], 2,
         ("{d}/x_Act.pth.tar", "not a readable PyTorch checkpoint")),
    Case("import-reference-out-is-a-folder",
         lambda w, d: ["import-reference", text_file(d, "x_Act.pth.tar"), "--norm-terms", NORM_TERMS,
                       "--out", junk_dir(d)],
         2, ("{d}/junk", "is a folder")),
    # run (every one fails before Ray starts)
    Case("run-space-missing", lambda w, d: ["run", "--space", d / "s.yaml", "--store", w.store, "--storage", d], 2,
         ("{d}/s.yaml", "not found")),
    Case("run-space-nan-bound",
         lambda w, d: ["run", "--space", space_file(d, lambda t: t.replace("low: 1.0e-4", "low: .nan")),
                       "--store", w.store, "--storage", d], 2, ("{d}/space.yaml", "parameters.lr_adam.low", "finite")),
    Case("run-space-huge-value",
         lambda w, d: ["run", "--space", space_file(d, lambda t: t.replace("[16, 24]", "[16, 100000]")),
                       "--store", w.store, "--storage", d], 2,
         ("{d}/space.yaml", "parameters.chunk_frames.choices", "chunk_frames=100000")),
    Case("run-space-duplicate-key",
         lambda w, d: ["run", "--space", space_file(d, lambda t: t + "  width: 0.25\n"), "--store", w.store,
                       "--storage", d], 2, ("{d}/space.yaml", "'width' is given twice (lines 32 and 38)")),
    Case("run-space-utf16-is-read",   # then refused for its --num-samples: the space itself was fine
         lambda w, d: [(d / "space.yaml").write_text(SMOKE.read_text(), encoding="utf-16"), "run", "--space",
                       d / "space.yaml", "--store", w.store, "--storage", d, "--num-samples", 0][1:], 2,
         ("--num-samples 0",)),
    Case("run-space-latin1",
         lambda w, d: [(d / "space.yaml").write_bytes(b"# caf\xe9\n" + SMOKE.read_bytes()), "run", "--space",
                       d / "space.yaml", "--store", w.store, "--storage", d][1:], 2,
         ("{d}/space.yaml", "not UTF-8", "byte 5")),
    Case("run-space-infinite-cpu",
         lambda w, d: ["run", "--space", space_file(d, lambda t: t.replace("cpu: 1", "cpu: .inf")),
                       "--store", w.store, "--storage", d], 2, ("{d}/space.yaml", "resources.cpu")),
    Case("run-space-metric-never-reported",   # gru trials never report a triplet loss: no best model, no score
         lambda w, d: ["run", "--space", space_file(d, lambda t: t.replace("metric: val_ccc_mean",
                                                                           "metric: loss_triplet")),
                       "--store", w.store, "--storage", d], 2,
         ("{d}/space.yaml: metric: 'loss_triplet' is never reported", "parameters.temporal chooses 'gru'",
          "temporal: triplet")),
    Case("run-store-corrupt",
         lambda w, d: ["run", "--space", SMOKE, "--store", copy_store(w, d, nan_frames), "--storage", d / "res",
                       "--name", "x"], 2, ("{d}/copy.store/frames.npy", "corrupt")),
    Case("run-name-bad", lambda w, d: ["run", "--space", SMOKE, "--store", w.store, "--storage", d, "--name", "a/b"],
         2, ("--name 'a/b'",)),
    Case("run-name-empty", lambda w, d: ["run", "--space", SMOKE, "--store", w.store, "--storage", d, "--name", ""],
         2, ("--name ''",)),
    Case("run-name-exists",
         lambda w, d: [fake_run(w, d), "run", "--space", SMOKE, "--store", w.store, "--storage", d, "--name", "demo"][1:],
         2, ("{d}/demo", "exists already")),
    Case("run-num-samples-zero",
         lambda w, d: ["run", "--space", SMOKE, "--store", w.store, "--storage", d, "--num-samples", 0], 2,
         ("--num-samples 0",)),
    # status, export, resume, tensorboard on damaged run folders
    Case("status-run-missing", lambda w, d: ["status", "nope", "--storage", d], 2, ("{d}/nope", "no search run")),
    Case("status-manifest-truncated",
         lambda w, d: [fake_run(w, d, manifest_text='{"version": 1, "na'), "status", "demo", "--storage", d][1:], 2,
         ("{d}/demo/run.json", "damaged manifest")),
    Case("status-manifest-a-list",
         lambda w, d: [fake_run(w, d, manifest_text="[1, 2]"), "status", "demo", "--storage", d][1:], 2,
         ("{d}/demo/run.json", "JSON object")),
    Case("status-manifest-without-conditions",
         lambda w, d: [fake_run(w, d, manifest_text=json.dumps({"version": 1, "metrics": ["val_ccc_mean"],
                                                                 "modes": ["max"]})),
                       "status", "demo", "--storage", d][1:], 2, ("{d}/demo/run.json", "conditions")),
    Case("status-manifest-run-id-a-path",
         lambda w, d: [fake_run(w, d, manifest_text=json.dumps({"version": 1, "run_id": "../../elsewhere",
                                                                 "metrics": ["val_ccc_mean"], "modes": ["max"],
                                                                 "conditions": []})),
                       "status", "demo", "--storage", d][1:], 2,
         ("{d}/demo/run.json", "run_id '../../elsewhere'", "32 hexadecimal digits")),
    Case("status-experiment-state-corrupt",
         lambda w, d: [fake_run(w, d, state_text='{"trial_data": [["{bad'), "status", "demo", "--storage", d][1:], 2,
         ("{d}/demo/all/experiment_state-2026-01-01_00-00-00.json", "damaged Ray experiment state")),
    Case("status-corrupt-result-is-a-warning-naming-the-trial",
         lambda w, d: [fake_run(w, d, result_text={"a": "\x00\x01garbage\n"}), "status", "demo", "--storage", d][1:],
         0, check=check_status_warning),
    Case("export-corrupt-result-is-a-warning",
         lambda w, d: [fake_run(w, d, result_text={"b": '{"val_ccc_mean": "high"}\n'}), "export", "demo",
                       "--storage", d, "--out", d / "best.yaml"][1:], 0, check=check_export_warning, unchanged=False),
    Case("export-out-is-a-folder",
         lambda w, d: [fake_run(w, d), "export", "demo", "--storage", d, "--out", junk_dir(d)][1:], 2,
         ("{d}/junk", "is a folder")),
    Case("export-out-exists",
         lambda w, d: [fake_run(w, d), "export", "demo", "--storage", d, "--out", text_file(d, "b.yaml")][1:], 2,
         ("{d}/b.yaml", "--force")),
    Case("export-top-zero", lambda w, d: [fake_run(w, d), "export", "demo", "--storage", d, "--top", 0][1:], 2,
         ("--top 0",)),
    Case("resume-run-missing", lambda w, d: ["resume", "nope", "--storage", d], 2, ("{d}/nope",)),
    Case("tensorboard-run-missing", lambda w, d: ["tensorboard", "nope", "--storage", d], 2, ("{d}/nope",)),
    Case("tensorboard-port-out-of-range",
         lambda w, d: [fake_run(w, d), "tensorboard", "demo", "--storage", d, "--port", 70000][1:], 2, ("--port 70000",)),
    Case("confirm-baseline-a-folder",
         lambda w, d: [fake_run(w, d), "confirm", "demo", "--storage", d, "--baseline", junk_dir(d)][1:], 2,
         ("{d}/junk", "is a folder", "config file")),
    Case("predict-attribute-from-a-folder-named-yaml",
         lambda w, d: [(d / "t.yaml").mkdir(), "predict", w.wav, "--attribute-from", d / "t.yaml",
                       "--out", d / "p.csv"][1:], 2, ("{d}/t.yaml", "is a folder")),
    # --resamples 5 is refused too, after them: on a run the bounds' errors come first, before anything is planned
    Case("confirm-seeds-huge",
         lambda w, d: [fake_run(w, d), "confirm", "demo", "--storage", d, "--seeds", 100000, "--resamples", 5][1:], 2,
         ("--seeds 100000", "<= 100")),
    Case("confirm-top-huge",
         lambda w, d: [fake_run(w, d), "confirm", "demo", "--storage", d, "--top", 1000, "--resamples", 5][1:], 2,
         ("--top 1000", "<= 20")),
    Case("confirm-plan-truncated",
         lambda w, d: [fake_run(w, d, files={"confirm/plan.json": b'{"version": 1, "top": 3, "se'}), "confirm", "demo",
                       "--storage", d][1:], 2, ("{d}/demo/confirm/plan.json", "damaged confirmation plan")),
    Case("report-confirm-json-garbled",
         lambda w, d: [fake_run(w, d, files={"confirm/confirm.json": b"\x00garbled{"}), "report", "demo",
                       "--storage", d, "--out", d / "rep"][1:], 2,
         ("{d}/demo/confirm/confirm.json", "damaged confirmation results"), unchanged=False),
    Case("report-confirm-json-empty",
         lambda w, d: [fake_run(w, d, files={"confirm/confirm.json": b""}), "report", "demo",
                       "--storage", d, "--out", d / "rep"][1:], 2,
         ("{d}/demo/confirm/confirm.json", "damaged confirmation results"), unchanged=False),
    Case("export-confirmed-json-a-string",
         lambda w, d: [fake_run(w, d, files={"confirm/confirm.json": b'"done"'}), "export", "demo", "--storage", d,
                       "--by", "confirmed", "--out", d / "b.yaml"][1:], 2,
         ("{d}/demo/confirm/confirm.json", "expected a JSON object, found str")),
    Case("export-confirmed-json-wrong-shape",
         lambda w, d: [fake_run(w, d, files={"confirm/confirm.json": json.dumps({"version": 2, "test_splits": ["T"]})
                                             .encode()}),
                       "export", "demo", "--storage", d, "--by", "confirmed", "--out", d / "b.yaml"][1:], 2,
         ("{d}/demo/confirm/confirm.json", "run, state, plan, configurations, best, comparisons, tests missing")),
    Case("dashboard-journal-junk",
         lambda w, d: [fake_run(w, d, files={"optuna.journal": bytes(range(256)) * 4}, optuna_storage="journal"),
                       "dashboard", "demo", "--storage", d][1:], 2, ("{d}/demo/optuna.journal", "damaged Optuna")),
    Case("report-journal-junk",
         lambda w, d: [fake_run(w, d, files={"optuna.journal": bytes(range(256)) * 4}, optuna_storage="journal"),
                       "report", "demo", "--storage", d, "--out", d / "rep"][1:], 2,
         ("{d}/demo/optuna.journal", "damaged Optuna"), unchanged=False),
    Case("report-journal-missing",
         lambda w, d: [fake_run(w, d, optuna_storage="journal"), "report", "demo", "--storage", d, "--out", d / "rep"][1:],
         2, ("{d}/demo/optuna.journal", "Optuna storage is missing", "all")),
    Case("report-sqlite-moved-is-not-created",
         lambda w, d: [fake_run(w, d, optuna_storage=f"sqlite:///{d}/studies.db"), "report", "demo", "--storage", d,
                       "--out", d / "rep"][1:], 2, ("{d}/studies.db", "Optuna storage is missing")),
    Case("dashboard-journal-empty",
         lambda w, d: [fake_run(w, d, files={"optuna.journal": b""}, optuna_storage="journal"),
                       "dashboard", "demo", "--storage", d][1:], 2, ("{d}/demo/optuna.journal", "storage is empty")),
    Case("confirm-run-missing", lambda w, d: ["confirm", "nope", "--storage", d], 2, ("{d}/nope",)),
    Case("dashboard-run-missing", lambda w, d: ["dashboard", "nope", "--storage", d], 2, ("{d}/nope",)),
    Case("report-run-missing", lambda w, d: ["report", "nope", "--storage", d], 2, ("{d}/nope",)),
    Case("report-out-is-a-file",
         lambda w, d: [fake_run(w, d), "report", "demo", "--storage", d, "--out", text_file(d)][1:], 2,
         ("{d}/notes.txt", "is a file")),
    # sync-store
    Case("sync-store-upload-corrupt-store",
         lambda w, d: ["sync-store", copy_store(w, d, nan_frames), "--upload", f"file://{d}/bucket"], 2,
         ("{d}/copy.store/frames.npy", "corrupt")),
    Case("sync-store-upload-to-a-path",
         lambda w, d: ["sync-store", w.store, "--upload", d / "plain"], 2, ("{d}/plain", "bucket URI")),
    Case("sync-store-missing", lambda w, d: ["sync-store", d / "none.store"], 2, ("{d}/none.store",)),
    Case("sync-store-cache-is-a-file",
         lambda w, d: ["sync-store", f"file://{w.store}", "--cache", text_file(d)], 2, ("--cache", "{d}/notes.txt")),
    # the command line itself
    Case("unknown-command", lambda w, d: ["frobnicate"], 2, ("frobnicate",)),
    Case("unknown-option", lambda w, d: ["status", "x", "--colour"], 2, ("--colour",)),
]


# ---- issue 21 §1: every file the tool writes and reads back, damaged, empty, truncated, wrongly shaped ----
# (files and their readers: docs/resume.md "Damaged files"; §5, §6 and §13 cases follow)
def plan_doc(**changes) -> bytes:
    """A confirm/plan.json as `confirm` writes it (tuner/answers/confirm/plan.py), with `changes`."""
    plan = {"version": 1, "run": "demo", "top": 1, "seeds": [1, 2], "splits": None, "baselines": [],
            "configurations": [{"id": "all/rank1", "kind": "search", "conditions": ["all"],
                                "config": {"attributes": ["act"], "epochs": 2}}],
            "search": [{"condition": "all", "state": "done", "trials": 2, "finished": 2, "planned": 2}]}
    return json.dumps({**plan, **changes}).encode()


def confirm_doc(edit: Callable[[dict], None] | None = None, **changes) -> bytes:
    """A confirm/confirm.json (version 2, tuner/answers/confirm/results.py) of one configuration, two seeds done."""
    stat = {"mean": 0.4, "sd": 0.01, "n": 2, "ci95": [0.3, 0.5]}
    conf = {"id": "all/rank1", "kind": "search", "conditions": ["all"], "condition_values": {}, "rank": 1,
            "trial_id": "b", "attributes": ["act"], "epochs": 2, "config": {"temporal": "gru", "epochs": 2},
            "seeds": [{"seed": s, "status": "done"} for s in (1, 2)],
            "summary": {"seeds_done": 2, "seeds_failed": 0, "validation": {"ccc_mean": dict(stat)},
                        "test": {"Test1": {"ccc_mean": dict(stat)}}}}
    doc = {"version": 2, "run": "demo", "state": "complete",
           "plan": {"seeds": [1, 2], "search": [{"condition": "all", "state": "done", "trials": 2, "finished": 2,
                                                 "planned": 2}]},
           "validation_split": "Validation", "test_splits": ["Test1"], "configurations": [conf],
           "best": {"all": "all/rank1"}, "comparisons": [], "tests": {}, **changes}
    if edit:
        edit(doc)
    return json.dumps(doc).encode()


def with_files(files: dict[str, bytes], command: str, *args: str,
               optuna_storage: str | None = None) -> Callable[[World, Path], list]:
    """A case on a fake run holding `files` (relative to the run): `COMMAND demo --storage D ARGS` ({d}: D)."""
    def build(w: World, d: Path) -> list:
        fake_run(w, d, files=files, optuna_storage=optuna_storage)
        return [command, "demo", "--storage", d, *[a.replace("{d}", str(d)) for a in args]]
    return build


def study_journal(d: Path, keep: float = 1.0) -> bytes:
    """An Optuna journal of study demo/all with Ray's two trials a and b finished, cut to `keep` of its bytes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = d / "made.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="demo/all", storage=storage, direction="maximize")
    for tid, score in (("a", 0.31), ("b", 0.42)):
        trial = study.ask({"width": optuna.distributions.FloatDistribution(0.1, 1.0)})
        trial.set_user_attr("ray_trial_id", tid)
        trial.set_user_attr("best_value", score)
        trial.report(score, 1)
        study.tell(trial, score)
    data = path.read_bytes()
    path.unlink()
    return data[: int(len(data) * keep)]


def truncated_journal_run(w: World, d: Path) -> list:
    fake_run(w, d, files={"optuna.journal": study_journal(d, 2 / 3)}, optuna_storage="journal")
    return ["report", "demo", "--storage", d, "--out", d / "rep"]


def check_truncated_journal(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    journal = f"{d}/demo/optuna.journal"
    assert f"warning: {journal}: its last record is cut short" in proc.stderr, proc.stderr
    assert f"warning: condition all: the Optuna storage {journal} lacks 1 of the 2 trials Ray finished" \
        in proc.stderr, proc.stderr
    assert "lacks 1 of the 2 trials Ray finished (missing or unfinished there: b)" in (d / "rep" / "report.md").read_text()


def check_whole_journal(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert "warning" not in proc.stderr, proc.stderr


def resumable_run(w: World, d: Path, edit: Callable[[Path], None]) -> list:
    shutil.copytree(w.run, d / "r")
    edit(d / "r")
    return ["train", "--store", w.store, "--out", d / "r", "--resume"]


def edit_state(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        state = torch.load(folder / "checkpoint" / "state.pt", weights_only=True)
        change(state)
        torch.save(state, folder / "checkpoint" / "state.pt")
    return run


def implausible_audio(w: World, d: Path) -> list:
    """Audio prepare lists as implausible: one sample, silence, a 2 kHz rate, a file cut short."""
    sf.write(d / "one.wav", np.array([0.1], dtype=np.float32), 16000)
    sf.write(d / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(d / "low.wav", (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32), 2000)
    shutil.copy(w.wav, d / "cut.wav")
    truncate(d / "cut.wav", 0.6)
    return ["predict", w.model, w.wav, d / "one.wav", d / "silent.wav", d / "low.wav", d / "cut.wav", "--out", d / "p.csv"]


def check_implausible_warnings(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    for name, why in (("one.wav", "frames < 62"), ("silent.wav", "all zeros"), ("low.wav", "2000 Hz"),
                      ("cut.wav", "cut short")):
        line = next((x for x in proc.stderr.splitlines() if x.startswith(f"warning: {d}/{name}:")), "")
        assert why in line and line.endswith("predicted anyway (doubtful)"), (name, proc.stderr)
    assert f"warning: {w.wav}" not in proc.stderr
    assert len((d / "p.csv").read_text().splitlines()) == 6


def check_freeze_warnings(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    assert "warning: freeze_encoder_epochs=3 without init_model: the encoder is frozen at its random " \
           "initialisation" in proc.stderr, proc.stderr
    assert "warning: freeze_encoder_epochs=3 > epochs=1: the encoder stays frozen for the whole run" in proc.stderr


def partial_confirm(doc: dict) -> None:
    doc["state"] = "partial"
    doc["plan"]["search"][0].update(state="stopped", finished=1)


def check_partial_export(w: World, d: Path, proc: subprocess.CompletedProcess) -> None:
    stopped = ("partial confirmation: its configurations were picked from a search stopped before it finished "
               "(confirm --partial): all 1 of 2 trials finished (study stopped")
    unevaluated = "partial confirmation: not every seed is evaluated yet (state partial)"
    for text in (stopped, unevaluated):
        assert f"warning: {text}" in proc.stderr, proc.stderr
        assert f"# {text}" in (d / "b.yaml").read_text()
    assert yaml.safe_load((d / "b.yaml").read_text())["metadata"]["configuration"] == "all/rank1"


def bad_seed(doc: dict) -> None:
    doc["configurations"][0]["seeds"][0]["seed"] = "one"


def bad_config_error(doc: dict) -> None:
    doc["configurations"][0]["seeds"][0].update(status="failed", error="fewer than num_clusters=500", config_error="yes")


def bad_stat(doc: dict) -> None:
    doc["configurations"][0]["summary"]["validation"]["ccc_mean"]["mean"] = "high"


def bad_condition_values(text: str) -> str:
    manifest = json.loads(text)
    manifest["conditions"][0]["values"] = "all"
    return json.dumps(manifest)


CASES += [
    # run.json
    Case("status-manifest-empty", with_files({"run.json": b""}, "status"), 2, ("{d}/demo/run.json", "damaged manifest")),
    Case("status-manifest-binary-junk", with_files({"run.json": b"\xff\xfe\x00\x01junk"}, "status"), 2,
         ("{d}/demo/run.json", "damaged manifest")),
    Case("status-manifest-condition-values-a-string",
         lambda w, d: [fake_run(w, d), (d / "demo" / "run.json").write_text(
             bad_condition_values((d / "demo" / "run.json").read_text())), "status", "demo", "--storage", d][2:], 2,
         ("{d}/demo/run.json", "conditions: expected a list of {label, values, state, trainable}")),
    # confirm/plan.json (confirm, status)
    Case("confirm-plan-empty", with_files({"confirm/plan.json": b""}, "confirm"), 2,
         ("{d}/demo/confirm/plan.json", "damaged confirmation plan")),
    Case("confirm-plan-binary-junk", with_files({"confirm/plan.json": b"\x00\xff{junk"}, "confirm"), 2,
         ("{d}/demo/confirm/plan.json", "damaged confirmation plan")),
    Case("confirm-plan-a-list", with_files({"confirm/plan.json": b"[1, 2]"}, "confirm"), 2,
         ("{d}/demo/confirm/plan.json", "expected a JSON object, found list")),
    Case("confirm-plan-seeds-strings", with_files({"confirm/plan.json": plan_doc(seeds=["1", "2"])}, "confirm"), 2,
         ("{d}/demo/confirm/plan.json", "damaged confirmation plan: seeds[0]: expected an integer, found a string")),
    Case("confirm-plan-configuration-without-config",
         with_files({"confirm/plan.json": plan_doc(configurations=[{"id": "x", "kind": "search",
                                                                    "conditions": ["all"]}])}, "confirm"), 2,
         ("{d}/demo/confirm/plan.json", "configurations[0]: config missing")),
    Case("status-plan-configurations-an-object",
         with_files({"confirm/plan.json": plan_doc(configurations={"id": "x"})}, "status"), 2,
         ("{d}/demo/confirm/plan.json", "configurations: expected a list, found an object")),
    # confirm/confirm.json (report, export --by confirmed)
    Case("report-confirm-json-truncated",
         with_files({"confirm/confirm.json": confirm_doc()[:150]}, "report", "--out", "{d}/rep"), 2,
         ("{d}/demo/confirm/confirm.json", "damaged confirmation results"), unchanged=False),
    Case("report-confirm-json-a-list", with_files({"confirm/confirm.json": b"[]"}, "report", "--out", "{d}/rep"), 2,
         ("{d}/demo/confirm/confirm.json", "expected a JSON object, found list"), unchanged=False),
    Case("report-confirm-json-mean-a-string",
         with_files({"confirm/confirm.json": confirm_doc(bad_stat)}, "report", "--out", "{d}/rep"), 2,
         ("{d}/demo/confirm/confirm.json",
          "configurations[0].summary.validation.ccc_mean.mean: expected a number or null, found a string"),
         unchanged=False),
    Case("export-confirmed-json-configurations-an-object",
         with_files({"confirm/confirm.json": confirm_doc(configurations={})}, "export", "--by", "confirmed",
                    "--out", "{d}/b.yaml"), 2,
         ("{d}/demo/confirm/confirm.json", "configurations: expected a list, found an object")),
    Case("export-confirmed-json-seed-a-string",
         with_files({"confirm/confirm.json": confirm_doc(bad_seed)}, "export", "--by", "confirmed",
                    "--out", "{d}/b.yaml"), 2,
         ("{d}/demo/confirm/confirm.json", "configurations[0].seeds[0].seed: expected an integer, found a string")),
    Case("export-confirmed-json-config-error-a-string",
         with_files({"confirm/confirm.json": confirm_doc(bad_config_error)}, "export", "--by", "confirmed",
                    "--out", "{d}/b.yaml"), 2,
         ("{d}/demo/confirm/confirm.json",
          "configurations[0].seeds[0].config_error: expected true or false, found a string")),
    # Ray's experiment state and result rows (status, export, report)
    Case("status-experiment-state-empty",
         lambda w, d: [fake_run(w, d, state_text=""), "status", "demo", "--storage", d][1:], 2,
         ("{d}/demo/all/experiment_state-2026-01-01_00-00-00.json", "damaged Ray experiment state")),
    Case("status-experiment-state-a-list",
         lambda w, d: [fake_run(w, d, state_text="[1]"), "status", "demo", "--storage", d][1:], 2,
         ("{d}/demo/all/experiment_state-2026-01-01_00-00-00.json", "damaged Ray experiment state")),
    Case("status-experiment-state-trial-a-string",
         lambda w, d: [fake_run(w, d, state_text=json.dumps({"trial_data": [['"x"', "{}"]]})), "status", "demo",
                       "--storage", d][1:], 2,
         ("{d}/demo/all/experiment_state-2026-01-01_00-00-00.json", "a trial entry without trial_id")),
    Case("status-result-empty-is-a-trial-without-results",
         with_files({"all/trial_b/result.json": b""}, "status"), 0,
         check=lambda w, d, proc: (assert_in("best: trial a", proc.stdout), assert_in("warning", proc.stdout, False))),
    Case("status-result-last-line-cut-is-a-warning",
         with_files({"all/trial_b/result.json": b'{"val_ccc_mean": 0.5, "training_iteration": 1}\n{"val_cc'},
                    "status"), 0,
         check=lambda w, d, proc: (assert_in("trial b (condition all, trial_b): result.json line 2 is not valid JSON",
                                             proc.stdout), assert_in("best: trial b", proc.stdout))),
    Case("status-result-row-a-list-is-a-warning", with_files({"all/trial_a/result.json": b"[1, 2]\n"}, "status"), 0,
         check=lambda w, d, proc: assert_in("result.json line 1 is not a result row", proc.stdout)),
    # the Optuna storage (report, dashboard)
    Case("report-journal-not-optuna-records",
         with_files({"optuna.journal": b'{"op_code": 99}\n'}, "report", "--out", "{d}/rep", optuna_storage="journal"),
         2, ("{d}/demo/optuna.journal", "damaged Optuna storage"), unchanged=False),
    Case("dashboard-journal-lists",
         with_files({"optuna.journal": b"[1, 2]\n"}, "dashboard", optuna_storage="journal"), 2,
         ("{d}/demo/optuna.journal", "damaged Optuna storage")),
    Case("report-sqlite-junk",
         lambda w, d: [text_file(d, "studies.db", "not a database" * 100),
                       fake_run(w, d, optuna_storage=f"sqlite:///{d}/studies.db"), "report", "demo", "--storage", d,
                       "--out", d / "rep"][2:], 2, ("{d}/studies.db", "cannot open the database"), unchanged=False),
    # the feature store (train, evaluate, prepare)
    Case("train-store-meta-empty",
         lambda w, d: ["train", "--store", copy_store(w, d, lambda s: (s / "meta.json").write_bytes(b"")),
                       "--out", d / "r"], 2, ("{d}/copy.store/meta.json", "unreadable")),
    Case("train-store-index-truncated",
         lambda w, d: ["train", "--store", copy_store(w, d, lambda s: truncate(s / "index.npy")), "--out", d / "r"], 2,
         ("{d}/copy.store/index.npy",)),
    Case("train-store-index-empty",
         lambda w, d: ["train", "--store", copy_store(w, d, lambda s: (s / "index.npy").write_bytes(b"")),
                       "--out", d / "r"], 2, ("{d}/copy.store/index.npy",)),
    Case("prepare-store-report-junk-is-rebuilt",   # the tolerance: a store that cannot show its report is built again
         lambda w, d: ["prepare", w.corpus, "--out", copy_store(w, d, lambda s: (s / "report.json").write_bytes(b"\x00")),
                       "--quiet"], 0,
         check=lambda w, d, proc: assert_in("utterances", (d / "copy.store" / "report.json").read_text()),
         unchanged=False),
    Case("prepare-lock-file-junk-is-taken",
         lambda w, d: [copy_store(w, d), (d / ".copy.store.lock").write_bytes(b"\x00junk"), "prepare", w.corpus,
                       "--out", d / "copy.store"][2:], 0,
         check=lambda w, d, proc: assert_in("up to date", proc.stdout), unchanged=False),
    # model files (evaluate, predict) and the trainer's checkpoint (train --resume)
    Case("evaluate-model-empty",
         lambda w, d: [(d / "m.pt").write_bytes(b""), "evaluate", d / "m.pt", "--store", w.store][1:], 2,
         ("{d}/m.pt", "not a readable model file")),
    Case("evaluate-model-config-a-list",
         lambda w, d: ["evaluate", model_copy(w, d, lambda p: p.__setitem__("config", [1])), "--store", w.store], 2,
         ("{d}/edited.pt:config", "expected a mapping of config keys")),
    Case("predict-model-norm-mean-a-string",
         lambda w, d: ["predict", model_copy(w, d, lambda p: p.__setitem__("norm_mean", "x")), w.wav,
                       "--out", d / "p.csv"], 2, ("{d}/edited.pt", "damaged model file")),
    Case("train-resume-checkpoint-empty",
         lambda w, d: resumable_run(w, d, lambda r: (r / "checkpoint" / "state.pt").write_bytes(b"")), 2,
         ("{d}/r/checkpoint/state.pt", "not a readable checkpoint"), unchanged=False),
    Case("train-resume-checkpoint-missing-entry",
         lambda w, d: resumable_run(w, d, edit_state(lambda s: s.pop("optimizers"))), 2,
         ("{d}/r/checkpoint/state.pt", "damaged checkpoint", "optimizers"), unchanged=False),
    Case("train-resume-checkpoint-epoch-a-string",
         lambda w, d: resumable_run(w, d, edit_state(lambda s: s.__setitem__("epoch", "one"))), 2,
         ("{d}/r/checkpoint/state.pt", "damaged checkpoint", "ValueError"), unchanged=False),
    Case("train-resume-config-junk",
         lambda w, d: resumable_run(w, d, lambda r: (r / "config.yaml").write_bytes(b"epochs: [1\n")), 2,
         ("{d}/r/config.yaml", "YAML"), unchanged=False),
    # exported files: best.yaml (train --config), best.attribute_models.yaml (predict --attribute-from)
    Case("train-config-empty",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config", text_file(d, "best.yaml", "")], 2,
         ("{d}/best.yaml", "the config file is empty")),
    Case("train-config-exported-epochs-a-string",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--config",
                       text_file(d, "best.yaml", "epochs: two\nmetadata: {run: demo}\n")], 2,
         ("{d}/best.yaml", "epochs='two'")),
    Case("predict-attribute-from-yaml-empty",
         lambda w, d: ["predict", w.wav, "--attribute-from", text_file(d, "b.attribute_models.yaml", ""),
                       "--out", d / "p.csv"], 2, ("{d}/b.attribute_models.yaml", "mapping of attribute to model")),
    Case("predict-attribute-from-yaml-a-list",
         lambda w, d: ["predict", w.wav, "--attribute-from", text_file(d, "b.attribute_models.yaml", "- act\n"),
                       "--out", d / "p.csv"], 2, ("{d}/b.attribute_models.yaml", "mapping of attribute to model")),
    Case("predict-attribute-from-yaml-model-a-number",
         lambda w, d: ["predict", w.wav, "--attribute-from", text_file(d, "b.attribute_models.yaml", "act: 5\n"),
                       "--out", d / "p.csv"], 2, ("{d}/b.attribute_models.yaml", "mapping of attribute to model")),
    # issue 21 §5: a journal cut to 2/3 of its bytes (the whole one reads without a word)
    Case("report-journal-truncated-is-said", truncated_journal_run, 0, check=check_truncated_journal, unchanged=False),
    Case("report-journal-whole-is-silent",
         lambda w, d: [fake_run(w, d, files={"optuna.journal": study_journal(d)}, optuna_storage="journal"),
                       "report", "demo", "--storage", d, "--out", d / "rep"][1:], 0, check=check_whole_journal,
         unchanged=False),
    Case("report-before-any-study-creates-no-sqlite-file",
         lambda w, d: [pending_run(w, d, f"sqlite:///{d}/studies.db"), "report", "demo", "--storage", d,
                       "--out", d / "rep"][1:], 0,
         check=lambda w, d, proc: assert_in("studies.db", " ".join(p.name for p in d.iterdir()), False),
         unchanged=False),
    Case("dashboard-before-any-study-creates-no-journal",
         lambda w, d: [pending_run(w, d, "journal"), "dashboard", "demo", "--storage", d][1:], 2,
         ("run demo: no condition has begun yet", "(journal) does not exist yet")),
    # issue 21 §13: settings and inputs a user would want a word about
    Case("train-freeze-without-init-model-beyond-epochs",
         lambda w, d: ["train", "--store", w.store, "--out", d / "r", "--set", *TINY, "freeze_encoder_epochs=3"], 0,
         check=check_freeze_warnings, unchanged=False),
    Case("predict-implausible-audio-is-named", implausible_audio, 0, check=check_implausible_warnings,
         unchanged=False),
    Case("export-confirmed-partial-says-so",
         with_files({"confirm/confirm.json": confirm_doc(partial_confirm)}, "export", "--by", "confirmed",
                    "--out", "{d}/b.yaml"), 0, check=check_partial_export, unchanged=False),
]


def pending_run(w: World, d: Path, optuna_storage: str) -> Path:
    """A fake run whose one condition has not begun (its Optuna storage not made yet)."""
    run = fake_run(w, d, optuna_storage=optuna_storage)
    manifest = json.loads((run / "run.json").read_text())
    manifest["conditions"][0]["state"] = "pending"
    (run / "run.json").write_text(json.dumps(manifest))
    return run


def assert_in(text: str, where: str, present: bool = True) -> None:
    assert (text in where) == present, (text, where)


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    before: dict[str, str]
    after: dict[str, str]
    folder: Path
    seconds: float = 0.0
    error: str = ""


@pytest.fixture(scope="session")
def outcomes(world: World, request) -> dict[str, Outcome]:
    """Every selected case built, run (a pool of subprocesses) and snapshotted before and after."""
    selected = {item.callspec.params["case"].id for item in request.session.items  # other files have a "case" too
                if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)}
    shared_before = {p: snapshot(p) for p in (world.store, world.run, world.corpus)}
    jobs = {}
    for case in (c for c in CASES if c.id in selected):
        folder = world.root / "cases" / case.id
        folder.mkdir(parents=True)
        jobs[case.id] = (folder, [str(a) for a in case.build(world, folder)], snapshot(folder))

    def run(case_id: str) -> Outcome:
        folder, args, before = jobs[case_id]
        start = time.monotonic()
        proc = subprocess.run(tuner_cmd(args), cwd=folder, env=env(world.logs), capture_output=True, text=True,
                              timeout=300)
        return Outcome(proc, before, snapshot(folder), folder, time.monotonic() - start)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(jobs, pool.map(run, jobs)))
    for path, before in shared_before.items():   # nothing a case did touched the shared store, run or corpus
        assert snapshot(path) == before, path
    return results


def test_the_table_covers_every_command():
    prefixes = {c.id.split("-")[0] for c in CASES}
    assert {"synth", "prepare", "train", "evaluate", "predict", "import", "run", "status", "export", "resume",
            "tensorboard", "sync", "confirm", "dashboard", "report"} <= prefixes
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, outcomes, world):
    out = outcomes[case.id]
    proc = out.proc
    text = proc.stdout + proc.stderr
    context = f"args: {proc.args[3:]}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert proc.returncode == case.code, context
    for word in UNSAFE_ADVICE:
        assert word not in text, (word, context)
    if case.code == 2:
        assert len([line for line in proc.stderr.splitlines() if "error:" in line]) == 1, context
        for name in case.names:
            name = name.replace("{d}", str(out.folder)).replace("{run}", str(world.run))
            assert name in proc.stderr, (name, context)
    if case.check is not None:
        case.check(world, out.folder, proc)
    if case.unchanged:
        assert out.after == out.before, context


def test_no_case_was_an_internal_error(outcomes, world):
    assert not world.logs.exists() or not list(world.logs.iterdir())


# ---- a memory bomb -------------------------------------------------------------------------------
def alias_bomb() -> str:
    """A 607-byte search space whose one choice, nine levels of nine aliases, stands for 9**9 values ("billion
    laughs"; formatting its error message took over a minute and all the memory allowed)."""
    levels = ["&l0 [" + ", ".join(f'"l{i}"' for i in range(9)) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "metric: val_ccc_mean\nparameters:\n  temporal:\n    choices:\n      - - " + "\n        - ".join(levels) + "\n"


def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path):
    space = tmp_path / "bomb.yaml"
    space.write_text(alias_bomb())
    limit = 2 << 30   # address space: the command needs about 1 GiB; expanding the aliases needs far more

    def bounded():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(tuner_cmd(["run", "--space", space, "--store", tmp_path / "none", "--storage", tmp_path]),
                          env=env(tmp_path / "logs"), capture_output=True, text=True, timeout=5, preexec_fn=bounded)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: {space}: its aliases expand to more than 100000 values (nested aliases, a "
                           '"billion laughs"?); write the values out\n')


# ---- a full disk ---------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs; mounting needs root, which the test machines have)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", disk], check=True, capture_output=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", disk], check=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill `disk` until at most `leave` bytes remain free."""
    with open(disk / "filler", "wb") as f:
        try:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
                f.write(bytes(4096))
                f.flush()
        except OSError:
            pass


def refused_for_a_full_disk(world: World, disk: Path, args: list, out: Path, unchanged: bool = True) -> None:
    """`args` on the full `disk`: exit 2, one line naming `out`, no temporary left (nor any change, `unchanged`)."""
    before = snapshot(disk)
    proc = subprocess.run(tuner_cmd(args), env=env(world.logs), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: {out}: the disk holding it is full (no space left on device); nothing "
                           "partial was left there: free some space and run the command again\n")
    assert not [p for p in disk.rglob(".*") if "tmp" in p.name]   # no temporary file or folder left
    assert not unchanged or snapshot(disk) == before


def test_a_full_disk_is_exit_2_naming_it(world, small_disk):
    def run(args: list, out: Path, unchanged: bool = True) -> None:
        refused_for_a_full_disk(world, small_disk, args, out, unchanged)

    run(["prepare", world.corpus, "--out", small_disk / "s.store", "--quiet"], small_disk / "s.store")  # 6.7 MB
    fake_run(world, small_disk)
    fill(small_disk)
    run(["report", "demo", "--storage", small_disk], small_disk / "demo")
    (small_disk / "filler").unlink()
    fill(small_disk, leave=24 << 10)   # room for the config and a line of metrics, not for the checkpoint
    run(["train", "--store", world.store, "--out", small_disk / "r", "--set", *TINY], small_disk / "r",
        unchanged=False)   # the run's config and (empty) metrics: `train --resume` continues it
    assert not world.logs.exists() or not list(world.logs.iterdir())


def test_a_checkpoint_writer_failing_on_a_full_disk_is_the_full_disk_error(small_disk):
    """A checkpoint's writer that fails on a full disk with an error other than OSError (torch.save's "unexpected
    pos") after closing its file: the full disk is looked at before the partial checkpoint is removed, which
    frees the space (it was looked at after, and the error escaped as a bug)."""
    from model.atomic_files import DiskFull
    from model.checkpoint import write_checkpoint

    def fill_then_fail(path: Path) -> None:
        try:
            with open(path, "wb", buffering=0) as f:
                while True:
                    f.write(bytes(1 << 16))
        except OSError:
            pass
        raise RuntimeError("unexpected pos")   # as torch.save's writer says after a short write

    fill(small_disk, leave=256 << 10)
    with pytest.raises(DiskFull, match=f"^{small_disk}: the disk holding it is full"):
        write_checkpoint(small_disk / "checkpoint", {"epoch": 1}, {"big.pt": fill_then_fail})
    assert [p.name for p in small_disk.iterdir()] == ["filler"]   # nothing partial left


def test_a_full_disk_export_and_confirm(world, small_disk):
    """issue 21 §6: `export` and `confirm` (its plan.json, written as its results are) on a full disk."""
    fake_run(world, small_disk)
    fill(small_disk)
    refused_for_a_full_disk(world, small_disk, ["export", "demo", "--storage", small_disk, "--out",
                                                small_disk / "best.yaml"], small_disk)
    confirm = ["confirm", "demo", "--storage", small_disk]
    refused_for_a_full_disk(world, small_disk, confirm, small_disk)   # its run lock cannot be written
    (small_disk / "filler").unlink()
    fill(small_disk, leave=4096)   # one page: the lock's
    refused_for_a_full_disk(world, small_disk, confirm, small_disk / "demo" / "confirm")   # its plan cannot
    assert not world.logs.exists() or not list(world.logs.iterdir())


# ---- two writers ---------------------------------------------------------------------------------
def start(args: list, world: World, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(tuner_cmd(args), cwd=cwd, env=env(world.logs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_trains_into_one_out(world, tmp_path):
    out = tmp_path / "r"
    first = start(["train", "--store", world.store, "--out", out, "--set", *TINY, "epochs=2"], world, tmp_path)
    wait_until(lambda: (tmp_path / ".r.lock").exists() or first.poll() is not None, "the first train's lock",
               timeout=120)
    second = subprocess.run(tuner_cmd(["train", "--store", world.store, "--out", out, "--set", *TINY]),
                            env=env(world.logs), capture_output=True, text=True, timeout=300)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"{out}: run folder (--out) is in use by another process (host " in second.stderr
    assert f"pid {first.pid}, started " in second.stderr
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]          # one run, not two mixed
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    assert not (tmp_path / ".r.lock").exists()


def test_two_prepares_into_one_out_and_a_held_run_name(world, tmp_path):
    # a process holding the locks the way prepare and run do (the lock files name it)
    code = ("import sys, time\nfrom model.locks import writer_lock\nfrom tuner.runs.run_dir import RunDir\n"
            f"with writer_lock({str(tmp_path / 's.store')!r}, 'feature store (--out)'), "
            f"RunDir({str(tmp_path / 'res')!r}, 'demo').sole_driver():\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], env=env(world.logs), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        prep = subprocess.run(tuner_cmd(["prepare", world.corpus, "--out", tmp_path / "s.store", "--quiet"]),
                              env=env(world.logs), capture_output=True, text=True, timeout=300)
        assert prep.returncode == 2 and f"pid {holder.pid}" in prep.stderr and "s.store" in prep.stderr, prep.stderr
        assert not (tmp_path / "s.store").exists()
        fake_run(world, tmp_path / "res")
        for args in (["run", "--space", SMOKE, "--store", world.store, "--storage", tmp_path / "res", "--name", "demo"],
                     ["resume", "demo", "--storage", tmp_path / "res"]):
            proc = subprocess.run(tuner_cmd(args), env=env(world.logs), capture_output=True, text=True, timeout=300)
            assert proc.returncode == 2 and "search run 'demo' is in use by another process" in proc.stderr, proc.stderr
            assert f"pid {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock files remain and are taken over
    assert (tmp_path / ".s.store.lock").exists()
    prep = subprocess.run(tuner_cmd(["prepare", world.corpus, "--out", tmp_path / "s.store"]),
                          env=env(world.logs), capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    assert f"took over the lock of a process that is gone (host" in prep.stderr and f"pid {holder.pid}" in prep.stderr


# ---- interrupted and re-run ----------------------------------------------------------------------
def test_sigkill_during_prepare_then_rerun(world, tmp_path):
    store = tmp_path / "s.store"
    shutil.copytree(world.store, store)   # an existing store being rebuilt (--force)
    before = snapshot(store)
    proc = start(["prepare", world.corpus, "--out", store, "--force", "--workers", "1"], world, tmp_path)
    wait_until(lambda: any((t / "raw.f32").exists() for t in tmp_path.glob(".s.store.tmp-*"))
               or proc.poll() is not None, "prepare's temporary build folder", timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(store) == before                     # the old store is intact
    assert list(tmp_path.glob(".s.store.tmp-*"))         # the killed build's leftovers
    again = subprocess.run(tuner_cmd(["prepare", world.corpus, "--out", store, "--quiet"]), env=env(world.logs),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not list(tmp_path.glob(".s.store.tmp-*")) and not list(tmp_path.glob(".s.store.old-*"))
    assert json.loads((store / "report.json").read_text())["utterances"] == \
        json.loads((world.store / "report.json").read_text())["utterances"]


def test_sigkill_during_train_then_resume(world, tmp_path):
    out = tmp_path / "r"
    proc = start(["train", "--store", world.store, "--out", out, "--set", *TINY, "epochs=3"], world, tmp_path)

    def one_epoch_checkpointed() -> bool:
        return proc.poll() is not None or (
            (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 1)

    wait_until(one_epoch_checkpointed, "the first epoch", timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".r.lock").exists()   # left by the killed process
    again = subprocess.run(tuner_cmd(["train", "--store", world.store, "--out", out, "--resume"]),
                           env=env(world.logs), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "took over the lock" in again.stderr
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    assert (out / "best_model.pt").is_file() and not list(out.glob(".*.tmp"))


# ---- an internal error ---------------------------------------------------------------------------
def test_an_internal_error_is_exit_1_with_the_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    from tuner import cli
    from tuner.commands import status

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(status, "main", broken)
    monkeypatch.setenv("DEEPEMOCLUSTER_LOG_DIR", str(tmp_path / "logs"))
    assert cli.main(["status", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (a bug, not your input): ZeroDivisionError: a bug" in err
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in err and log.name.startswith("tuner-status-")
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError: a bug" in text and "python -m tuner status x" in text
