"""Importing the published reference checkpoints: parity with the reference's predictions, and bad input."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REFERENCE, REFERENCE_CHECKPOINTS, REFERENCE_MODELS, REPO
from model.errors import UserError
from model.model_file import load_model
from model.reference import import_reference, read_reference_checkpoint, reference_key
from tuner.cli import main as cli

PARITY = REFERENCE / "parity"
NORM = REFERENCE_MODELS / "NormTerm"
CLIPS = sorted(p.name for p in (PARITY / "audio").glob("*.wav"))


def expected_predictions() -> dict[str, dict[str, float]]:
    with open(PARITY / "expected_predictions.csv", newline="") as f:
        return {row["file"]: {a: float(row[a]) for a in ("act", "dom", "val")} for row in csv.DictReader(f)}


def test_parity_fixtures_present():
    assert len(CLIPS) == 3 and set(expected_predictions()) == set(CLIPS)


@pytest.mark.parametrize("attr", ["act", "dom", "val"])
def test_parity_with_reference_predictions(attr, reference_models, tmp_path, capsys):
    """predict with each imported model reproduces the reference code's outputs to 1e-4 (1..7 scale)."""
    out = tmp_path / "preds.csv"
    assert cli(["predict", str(reference_models[attr]), *(str(PARITY / "audio" / c) for c in CLIPS),
                "--out", str(out), "--device", "cpu"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r["file"]) for r in rows] == CLIPS
    assert list(rows[0]) == ["file", attr]
    expected = expected_predictions()
    for row in rows:
        got, want = float(row[attr]), expected[os.path.basename(row["file"])][attr]
        assert abs(got - want) < 1e-4, (row["file"], attr, got, want)


def test_imported_model_file_carries_reference_settings(reference_models):
    state = read_reference_checkpoint(REFERENCE_CHECKPOINTS["dom"])
    network, info = load_model(reference_models["dom"])
    cfg = info.config
    assert (cfg.temporal, cfg.num_clusters, cfg.chunk_frames, cfg.chunks_per_sentence) == ("none", 30, 62, 11)
    assert cfg.attributes == ["dom"] and cfg.width == 1.0
    assert info.feature_spec["kind"] == "reference"
    assert info.label_terms["dom"] == pytest.approx((4.52987382, 0.74576035))
    assert set(info.label_terms) == {"dom"}
    assert info.norm_mean.shape == (128,) and info.norm_mean[0] == pytest.approx(0.09699686, rel=1e-6)
    assert info.norm_std[0] == pytest.approx(1.70387881, rel=1e-6)
    ours = network.state_dict()
    assert len(ours) == len(state)
    for key, value in state.items():
        assert torch.equal(ours[reference_key(key)], value), key


def test_import_reference_command_in_subprocess(tmp_path):
    """The real entry point `python -m tuner import-reference`, attribute taken from the file name."""
    out = tmp_path / "act.pt"
    proc = subprocess.run([sys.executable, "-m", "tuner", "import-reference", str(REFERENCE_CHECKPOINTS["act"]),
                           "--norm-terms", str(NORM), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _, info = load_model(out)
    assert info.config.attributes == ["act"] and info.config.num_clusters == 10


# ---- bad input -----------------------------------------------------------------------------
def _run_import(tmp_path, capsys, ckpt, norm=NORM, attr="act"):
    code = cli(["import-reference", str(ckpt), "--norm-terms", str(norm), "--attribute", attr,
                "--out", str(tmp_path / "out.pt")])
    err = capsys.readouterr().err
    return code, err


def test_not_a_checkpoint_file(tmp_path, capsys):
    bad = tmp_path / "notes.pth.tar"
    bad.write_text("this is not a checkpoint")
    code, err = _run_import(tmp_path, capsys, bad)
    assert code == 2 and "notes.pth.tar" in err and "not a readable PyTorch checkpoint" in err
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_without_state_dict(tmp_path, capsys):
    bad = tmp_path / "weights.pth.tar"
    torch.save({"model": {"w": torch.zeros(2)}}, bad)
    code, err = _run_import(tmp_path, capsys, bad)
    assert code == 2 and "'state_dict'" in err and "model" in err


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, capsys):
    payload = torch.load(REFERENCE_CHECKPOINTS["act"], map_location="cpu", weights_only=True)
    state = payload["state_dict"]
    del state["cnn_out.module.0.weight"], state["cnn_features.module.4.running_var"]
    state["extra_head.weight"] = torch.zeros(3)
    state["top_layer_attri.weight"] = torch.zeros(2, 256)
    bad = tmp_path / "broken_Act.pth.tar"
    torch.save(payload, bad)
    code, err = _run_import(tmp_path, capsys, bad)
    assert code == 2 and "broken_Act.pth.tar" in err
    assert "missing keys: cnn_features.module.4.running_var, cnn_out.module.0.weight" in err
    assert "unexpected keys: extra_head.weight" in err
    assert "top_layer_attri.weight (2, 256) (expected (1, 256))" in err
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_without_cluster_layer(tmp_path, capsys):
    payload = torch.load(REFERENCE_CHECKPOINTS["act"], map_location="cpu", weights_only=True)
    del payload["state_dict"]["top_layer_class.weight"]
    bad = tmp_path / "no_top.pth.tar"
    torch.save(payload, bad)
    code, err = _run_import(tmp_path, capsys, bad)
    assert code == 2 and "top_layer_class.weight" in err


def test_bad_attribute(tmp_path, capsys):
    code, err = _run_import(tmp_path, capsys, REFERENCE_CHECKPOINTS["act"], attr="arousal")
    assert code == 2 and "'arousal'" in err and "act, dom, val" in err


def test_attribute_required_when_file_name_does_not_tell(tmp_path, capsys):
    renamed = tmp_path / "model.pth.tar"
    shutil.copy(REFERENCE_CHECKPOINTS["act"], renamed)
    code = cli(["import-reference", str(renamed), "--norm-terms", str(NORM), "--out", str(tmp_path / "o.pt")])
    assert code == 2 and "--attribute" in capsys.readouterr().err


def test_missing_norm_terms_dir(tmp_path, capsys):
    code, err = _run_import(tmp_path, capsys, REFERENCE_CHECKPOINTS["act"], norm=tmp_path / "NoSuchDir")
    assert code == 2 and "NoSuchDir" in err and "not found" in err


def test_norm_terms_dir_missing_a_file(tmp_path, capsys):
    partial = tmp_path / "NormTerm"
    shutil.copytree(NORM, partial)
    (partial / "feat_norm_stds.mat").unlink()
    code, err = _run_import(tmp_path, capsys, REFERENCE_CHECKPOINTS["act"], norm=partial)
    assert code == 2 and "feat_norm_stds.mat" in err


def test_import_function_rejects_bad_attribute_before_reading():
    with pytest.raises(UserError, match="expected one of act, dom, val"):
        import_reference(REFERENCE_CHECKPOINTS["act"], NORM, "Valence")


# ---- no code is ever unpickled -------------------------------------------------------------
class _MakesADirectory:
    """Pickles as a call to os.mkdir: loading it unsafely would create the marker folder."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_crafted_pickle_is_refused_by_import(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_Act.pth.tar"
    torch.save({"arch": "vgg16", "state_dict": _MakesADirectory(marker)}, evil)
    code, err = _run_import(tmp_path, capsys, evil)
    assert code == 2 and "evil_Act.pth.tar" in err
    assert not marker.exists()


def test_crafted_pickle_is_refused_by_load_model(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_model.pt"
    torch.save({"format": "deepemocluster-model/1", "config": _MakesADirectory(marker)}, evil)
    with pytest.raises(UserError, match="evil_model.pt"):
        load_model(evil)
    assert not marker.exists()
