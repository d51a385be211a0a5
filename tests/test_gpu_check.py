"""benchmarks/gpu_check.py: its CPU mode (every part at toy sizes) and its failure handling."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def gpu_check(tmp_path: Path, *args: str, timeout: float = 400) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(tmp_path / "work"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return proc, (json.loads(out.read_text()) if out.exists() else {})


def test_cpu_mode_runs_every_part(tiny_store, tmp_path):
    proc, report = gpu_check(tmp_path, "--cpu", "--store", str(tiny_store))
    assert proc.returncode == 0, proc.stderr
    parts = report["parts"]
    assert report["mode"] == "cpu" and list(parts) == ["environment", "kmeans", "encoder", "epoch", "sharing"]
    assert {n: p["ok"] for n, p in parts.items()} == dict.fromkeys(parts, True), \
        {n: p.get("log_tail") for n, p in parts.items() if not p["ok"]}

    env = parts["environment"]
    assert env["torch"] and "faiss-cpu" in env["faiss_builds"] and env["faiss_gpu_ready"] is False

    km = parts["kmeans"]
    assert km["full_scale"]["n"] == 10 * km["cpu_at_fraction"]["n"]
    assert km["full_scale"]["project_kmeans_s"] > 0 and km["cpu_at_fraction"]["all_points_kmeans_s"] > 0

    enc = parts["encoder"]["settings"]
    assert set(enc) == {"fp32", "fp32 channels-last", "bf16", "bf16 channels-last"}
    assert all(s["chunks_per_s_median"] > 0 for s in enc.values())

    epoch = parts["epoch"]
    assert epoch["device"] == "cpu" and len(epoch["epochs"]) == 1
    assert math.isfinite(epoch["epochs"][0]["val_ccc_mean"]) and epoch["epochs"][0]["time_epoch_s"] > 0

    share = parts["sharing"]
    alone, together = share["alone"], share["together"]
    assert alone["trials"] == 1 and together["trials"] == 2 and len(set(together["pids"])) == 2
    assert share["throughput_ratio"] == round(together["epochs_per_s"] / alone["epochs_per_s"], 2)
    assert together["all_running_s"] > 0  # the barrier: both trials were training at the same time
    assert report["summary"]["parts_failed"] == []


def test_a_part_over_its_cap_is_recorded_and_the_next_still_runs(tmp_path):
    proc, report = gpu_check(tmp_path, "--cpu", "--parts", "kmeans,environment", "--cap", "kmeans=0.01")
    assert proc.returncode == 0, proc.stderr
    assert report["parts"]["kmeans"]["ok"] is False and "time cap" in report["parts"]["kmeans"]["error"]
    assert report["parts"]["environment"]["ok"] is True
    assert report["summary"]["parts_failed"] == ["kmeans"]


def test_unknown_part_is_exit_2(tmp_path):
    proc, _ = gpu_check(tmp_path, "--parts", "kmeans,warp", timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --parts") and "warp" in proc.stderr


def test_the_store_is_built_once_before_the_parts_at_the_asked_size(tmp_path):
    proc, report = gpu_check(tmp_path, "--cpu", "--parts", "epoch", "--corpus", "40,4")
    assert proc.returncode == 0, proc.stderr
    assert report["store_build_s"] > 0 and report["parts"]["epoch"]["ok"], report["parts"]["epoch"].get("log_tail")
    assert report["parts"]["epoch"]["train_utterances"] < 40  # the 40-utterance corpus, not the default 48
    assert (tmp_path / "work" / "synth-40-4-0.store" / "meta.json").exists()


def test_bad_corpus_size_is_exit_2(tmp_path):
    proc, _ = gpu_check(tmp_path, "--corpus", "600", timeout=60)
    assert proc.returncode == 2 and "--corpus" in proc.stderr and "UTTERANCES,UNLABELED" in proc.stderr
