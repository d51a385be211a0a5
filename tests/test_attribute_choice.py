"""Per-attribute objectives: loss weights per attribute, and predictions taking each attribute from its own model."""
from __future__ import annotations

import csv

import pytest
import torch

from conftest import REFERENCE
from model.config import TrainConfig
from model.errors import ConfigError
from model.inference import predict_files
from model.trainer import Trainer
from test_trainer import _comparable, config
from tuner.cli import main as cli

AUDIO = REFERENCE / "parity" / "audio"
CLIPS = sorted(AUDIO.glob("*.wav"))


def test_attribute_weights_parse_from_strings_and_mappings():
    assert TrainConfig.load(None, ["attribute_weights=act=2,val=0.5"]).attribute_weights == {"act": 2.0, "val": 0.5}
    c = TrainConfig.from_dict({"attribute_weights": {"dom": 3}, "attributes": ["act", "dom"]})
    assert c.loss_weights() == [1.0, 3.0]
    assert TrainConfig.from_dict(c.to_dict()) == c
    for bad in ("attribute_weights=val=2", "attribute_weights=act=x", "attribute_weights=act=-1",
                "attribute_weights=act=0,dom=0"):
        with pytest.raises(ConfigError, match="attribute_weights"):
            TrainConfig.load(None, [bad, "attributes=act,dom"])


def test_zero_weight_leaves_its_attribute_output_untrained(tiny_store):
    weighted = Trainer(config(epochs=1, weight_decay=0.0, unlabeled_pool=0, attribute_weights={"val": 0.0}),
                       tiny_store)
    head = weighted.network.attribute_head
    before = head.weight.detach().clone(), head.bias.detach().clone()
    weighted.run_epoch()
    assert torch.equal(head.weight[2], before[0][2]) and head.bias[2] == before[1][2]   # val: no gradient
    assert not torch.equal(head.weight[0], before[0][0])                                 # act: trained

    ones = Trainer(config(epochs=1, attribute_weights="act=1,dom=1,val=1"), tiny_store).run_epoch()
    default = Trainer(config(epochs=1), tiny_store).run_epoch()
    assert _comparable(ones) == _comparable(default)


@pytest.fixture(scope="module")
def two_models(reference_models):
    return reference_models["act"], reference_models["val"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_takes_each_attribute_from_its_model(two_models, tmp_path, capsys):
    act_model, val_model = two_models
    act_rows, _ = predict_files(act_model, CLIPS)
    val_rows, _ = predict_files(val_model, CLIPS)
    out = tmp_path / "combined.csv"
    assert cli(["predict", str(AUDIO), "--attribute-from", f"val={val_model}", f"act={act_model}",
                "--out", str(out), "--device", "cpu"]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["file", "act", "val"] and len(rows) == len(CLIPS)
    for row, a, v in zip(rows, act_rows, val_rows):
        assert row["file"] == a["file"] == v["file"]
        assert float(row["act"]) == pytest.approx(a["act"], abs=1e-5)
        assert float(row["val"]) == pytest.approx(v["val"], abs=1e-5)

    # the same choice from a YAML file (paths relative to it); audio after the option is still audio
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.pt").symlink_to(act_model)
    (tmp_path / "combo.yaml").write_text("act: models/a.pt\nval: " + str(val_model) + "\n")
    out2 = tmp_path / "combined2.csv"
    assert cli(["predict", "--attribute-from", str(tmp_path / "combo.yaml"), *map(str, CLIPS),
                "--out", str(out2), "--device", "cpu"]) == 0
    assert read_csv(out2) == rows


def test_attribute_from_errors_name_the_problem(two_models, tmp_path, capsys):
    act_model, _ = two_models
    clip = str(CLIPS[0])
    for specs, words in [([f"dom={act_model}"], ["does not predict dom", "predicts act"]),
                         ([f"arousal={act_model}"], ["unknown attribute 'arousal'"]),
                         ([f"act={act_model}", f"act={act_model}"], ["act is given twice"]),
                         ([f"act={tmp_path / 'none.pt'}"], ["none.pt", "not found"])]:
        code = cli(["predict", clip, "--attribute-from", *specs, "--out", str(tmp_path / "p.csv")])
        err = capsys.readouterr().err
        assert code == 2 and all(w in err for w in words), err
    assert not (tmp_path / "p.csv").exists()
