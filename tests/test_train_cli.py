"""`python -m tuner train`: outputs, refusing to overwrite a run, --resume, Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from model.checkpoint import read_checkpoint
from model.model_file import load_model
from tuner.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["width=0.25", "chunk_frames=16", "chunks_per_sentence=4", "batch_size=8", "num_clusters=4",
        "kmeans_iterations=5", "precision=fp32", "num_threads=1"]


def sets(*items: str) -> list[str]:
    out = []
    for item in (*FAST, *items):
        out += ["--set", item]
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_train_writes_run_refuses_to_overwrite_and_resumes(tiny_store, tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "cfg.yaml").write_text("temporal: transformer\nepochs: 2\n")
    assert main(["train", "--store", str(tiny_store), "--config", str(tmp_path / "cfg.yaml"),
                 *sets(), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "epoch 2/2" in printed and "best val_ccc_mean" in printed
    metrics = lines(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[0]["nmi"] is None and 0 <= metrics[1]["nmi"] <= 1     # NaN is written as null
    assert yaml.safe_load((out / "config.yaml").read_text())["temporal"] == "transformer"
    assert read_checkpoint(out / "checkpoint")["epoch"] == 2
    _, info = load_model(out / "best_model.pt")
    assert info.config.temporal == "transformer" and set(info.label_terms) == {"act", "dom", "val"}
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    events = list(out.glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val/ccc_act", "train/loss_ccc", "cluster/nmi", "time/epoch_s", "ssl/loss_ce"} <= tags
    assert [e.step for e in acc.Scalars("val/ccc_act")] == [1, 2]

    # the same folder again without --resume: refused, nothing touched
    assert main(["train", "--store", str(tiny_store), *sets(), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert len(lines(out / "metrics.jsonl")) == 2

    # --resume with more epochs continues from epoch 3
    assert main(["train", "--store", str(tiny_store), "--out", str(out), "--resume", "--set", "epochs=3"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert [m["epoch"] for m in lines(out / "metrics.jsonl")] == [1, 2, 3]
    assert read_checkpoint(out / "checkpoint")["epoch"] == 3

    # a changed hyperparameter on resume is refused
    assert main(["train", "--store", str(tiny_store), "--out", str(out), "--resume",
                 "--set", "num_clusters=6"]) == 2
    assert "num_clusters" in capsys.readouterr().err


def test_resume_without_a_run_is_an_error(tiny_store, tmp_path, capsys):
    assert main(["train", "--store", str(tiny_store), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes(tiny_store, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tuner", "train", "--store", str(tiny_store), "--out", str(out),
           *sets("epochs=200", "temporal=gru")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Ctrl+C as at a terminal: SIGINT at its default even when this test runs as a background job (which
    # ignores SIGINT, and a command keeps ignoring it: tests/test_stop_signals.py)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").exists() and len(lines(out / "metrics.jsonl")) >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "interrupted" in stderr
    done = read_checkpoint(out / "checkpoint")["epoch"]
    assert 1 <= done < 200
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["epoch"] == done

    result = subprocess.run([sys.executable, "-m", "tuner", "train", "--store", str(tiny_store), "--out", str(out),
                             "--resume", "--set", f"epochs={done + 1}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert [m["epoch"] for m in lines(out / "metrics.jsonl")] == list(range(1, done + 2))
    assert json.loads((out / "status.json").read_text())["state"] == "completed"


def test_a_diverged_run_is_marked_failed(tiny_store, tmp_path, capsys, monkeypatch):
    import torch

    import model.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "ccc_loss", lambda p, t: torch.full((p.shape[1],), float("nan")))
    out = tmp_path / "run"
    assert main(["train", "--store", str(tiny_store), *sets("epochs=2"), "--out", str(out)]) == 2
    assert "training diverged" in capsys.readouterr().err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["epoch"] == 0 and "diverged" in status["message"]
    assert not (out / "best_model.pt").exists() and lines(out / "metrics.jsonl") == []


def test_ctrl_c_before_the_first_checkpoint_reports_epoch_0(tiny_store, tmp_path, capsys, monkeypatch):
    import model.trainer as trainer_module

    def interrupted_while_saving(self, directory):
        raise KeyboardInterrupt

    # epoch 1 has finished (trainer.epoch == 1) but its checkpoint was never written
    monkeypatch.setattr(trainer_module.Trainer, "save_checkpoint", interrupted_while_saving)
    out = tmp_path / "run"
    assert main(["train", "--store", str(tiny_store), *sets("epochs=2"), "--out", str(out)]) == 130
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["epoch"] == 0
    err = capsys.readouterr().err
    assert "--resume" in err and "no complete epoch" in err
