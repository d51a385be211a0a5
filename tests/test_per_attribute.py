"""A per_attribute search end to end on the tiny synthetic store: one study per attribute, each training a
model of its attribute alone; `export` writes the attribute -> model file that `predict --attribute-from`
reads; `confirm` confirms each attribute's pick on its attribute's CCC, a one-attribute baseline only in
that attribute's condition."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tune_helpers import SMOKE, short_tmp, tuner

NAME = "perattr"
SPLIT = "Validation"   # the tiny store's Test1 holds one utterance (no CCC)
LABELS = ["attributes=act", "attributes=val"]


@pytest.fixture(scope="module")
def searched(tiny_store, tmp_path_factory):
    """A finished per_attribute search: act and val, one 1-epoch trial each, act's K set apart from val's."""
    work = tmp_path_factory.mktemp("perattr")
    space = yaml.safe_load(SMOKE.read_text())
    del space["conditions"]
    space["budget"] = {"num_samples": 1, "max_epochs": 1}
    space["scheduler"] = "none"
    space["parameters"]["width"] = 0.25
    space["per_attribute"] = {"act": {"num_clusters": 2}, "val": {"num_clusters": 4, "temporal": "gru"}}
    (work / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    baseline = {"temporal": "none", "num_clusters": 3, "chunk_frames": 16, "chunks_per_sentence": 4, "width": 0.25,
                "batch_size": 8, "kmeans_iterations": 5, "epochs": 1, "precision": "fp32"}
    (work / "base_act.yaml").write_text(yaml.safe_dump({**baseline, "attributes": ["act"]}))
    (work / "base.yaml").write_text(yaml.safe_dump(baseline))
    (work / "base_joint.yaml").write_text(yaml.safe_dump({**baseline, "attributes": ["act", "val"]}))
    (work / "base_dom.yaml").write_text(yaml.safe_dump({**baseline, "attributes": ["dom"]}))
    ray_tmp = short_tmp()
    done = tuner(["run", "--space", "space.yaml", "--store", str(tiny_store), "--name", NAME, "--storage", "results",
                  "--num-cpus", "2"], cwd=work, ray_tmp=ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    models_file = work / "results" / NAME / "best.attribute_models.yaml"
    assert f"per attribute: python -m tuner predict --attribute-from {models_file} AUDIO" in done.stdout
    return work


def test_each_attribute_study_trains_its_attribute_alone_and_export_writes_the_attribute_file(searched):
    from model.model_file import load_model

    run = searched / "results" / NAME
    assert [c["label"] for c in json.loads((run / "run.json").read_text())["conditions"]] == LABELS
    models_file = run / "best.attribute_models.yaml"
    assert models_file.exists()   # the run's own export at its end
    models_file.unlink()
    exported = tuner(["export", NAME, "--storage", "results", "--force"], cwd=searched, ray_tmp="/tmp")
    assert exported.returncode == 0, exported.stderr
    assert str(models_file) in exported.stdout.splitlines()
    models = yaml.safe_load(models_file.read_text())
    assert list(models) == ["act", "val"]
    for attr, clusters in (("act", 2), ("val", 4)):
        best = yaml.safe_load((run / f"best.attributes={attr}.rank1.yaml").read_text())
        assert best["attributes"] == [attr] and best["num_clusters"] == clusters   # the attribute's own K
        assert models[attr] == best["metadata"]["best_model"]   # the attribute's best trial's model
        assert Path(models[attr]).is_relative_to(run / f"attributes={attr}")
        _, info = load_model(models[attr])
        assert info.config.attributes == [attr]
        metrics = best["metadata"]["metrics"]
        assert metrics["val_ccc_mean"] == metrics[f"val_ccc_{attr}"]   # the study ranked its attribute's CCC

    (run / "best.yaml").rename(run / "kept.yaml")   # the attribute file alone is not overwritten either
    again = tuner(["export", NAME, "--storage", "results"], cwd=searched, ray_tmp="/tmp")
    assert again.returncode == 2 and f"{models_file}: exists already" in again.stderr
    (run / "kept.yaml").rename(run / "best.yaml")


def test_report_shows_each_attribute_study(searched, tmp_path):
    from tuner.cli import main as cli

    assert cli(["report", NAME, "--storage", str(searched / "results"), "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for label in LABELS:
        assert f"Best configurations: {label}" in report


def test_predict_reads_the_exported_attribute_file(searched, tiny_corpus, tmp_path, capsys):
    from tuner.cli import main as cli

    models_file = searched / "results" / NAME / "best.attribute_models.yaml"
    models = yaml.safe_load(models_file.read_text())
    wavs = [str(p) for p in sorted((tiny_corpus / "Audio").glob("*.wav"))[:2]]
    assert cli(["predict", "--attribute-from", str(models_file), *wavs, "--out", str(tmp_path / "both.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "both.csv").open()))
    assert [r["file"] for r in rows] == wavs and list(rows[0]) == ["file", "act", "val"]
    for attr in ("act", "val"):   # each column is its own model's prediction
        assert cli(["predict", models[attr], *wavs, "--out", str(tmp_path / f"{attr}.csv")]) == 0
        own = list(csv.DictReader((tmp_path / f"{attr}.csv").open()))
        assert list(own[0]) == ["file", attr]
        assert [r[attr] for r in rows] == [r[attr] for r in own]


def test_predict_says_it_cannot_read_a_bucket_model(tmp_path, tiny_corpus, capsys):
    from tuner.cli import main as cli

    table = tmp_path / "remote.yaml"
    table.write_text(yaml.safe_dump({"act": "s3://bucket/run/attributes=act/t/checkpoint_000000/best_model.pt"}))
    wav = str(sorted((tiny_corpus / "Audio").glob("*.wav"))[0])
    assert cli(["predict", "--attribute-from", str(table), wav, "--out", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --attribute-from {table}: act: s3://bucket/run/attributes=act/t/checkpoint_000000/best_model.pt "
        "is a URI; predict reads local model files: copy the model to this machine and give its path")
    assert not (tmp_path / "p.csv").exists()


def test_confirm_plans_a_one_attribute_baseline_in_its_attribute_condition_only(searched):
    from model.errors import UserError
    from tuner.answers.confirm.plan import confirm_seeds, plan_confirmation
    from tuner.runs.run_dir import open_run

    run = open_run(NAME, str(searched / "results"))
    plan = plan_confirmation(run, run.read_manifest(), 1, confirm_seeds(1), [SPLIT],
                             [searched / "base_act.yaml", searched / "base.yaml", searched / "base_joint.yaml"])
    by_id = {c["id"]: c for c in plan["configurations"]}
    assert list(by_id) == ["attributes=act/rank1", "attributes=val/rank1", "base_act", "base@attributes=act",
                           "base@attributes=val", "base_joint"]
    assert by_id["base_act"]["conditions"] == ["attributes=act"]
    assert by_id["base@attributes=val"]["config"]["attributes"] == ["val"]   # the condition's attribute
    assert by_id["base_joint"]["conditions"] == LABELS   # one joint model, compared in both
    with pytest.raises(UserError, match=r"base_dom.yaml: trains dom alone, which no condition of this run trains "
                                        r"\(attributes=act, attributes=val\)"):
        plan_confirmation(run, run.read_manifest(), 1, confirm_seeds(1), [SPLIT], [searched / "base_dom.yaml"])


def test_confirm_compares_each_attribute_on_its_own_ccc(searched):
    ray_tmp = short_tmp()
    done = tuner(["confirm", NAME, "--storage", "results", "--num-cpus", "2", "--top", "1", "--seeds", "2",
                  "--split", SPLIT, "--baseline", "base_joint.yaml"], cwd=searched, ray_tmp=ray_tmp, timeout=400)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    confirm = json.loads((searched / "results" / NAME / "confirm" / "confirm.json").read_text())
    assert confirm["best"] == {"attributes=act": "attributes=act/rank1", "attributes=val": "attributes=val/rank1"}
    by_id = {c["id"]: c for c in confirm["configurations"]}
    for cid, attr in (("attributes=act/rank1", "act"), ("attributes=val/rank1", "val")):
        for seed in by_id[cid]["seeds"]:   # the pick is chosen and measured on its attribute's CCC
            for scores in (seed["validation"], seed["test"][SPLIT]):
                assert scores["ccc_mean"] == scores[f"ccc_{attr}"]
    # each attribute's pick against the joint baseline on that attribute's CCC only; the picks share no attribute
    assert {(c["a"], c["b"], c["metric"]) for c in confirm["comparisons"]} == {
        ("attributes=act/rank1", "base_joint", "ccc_act"), ("attributes=val/rank1", "base_joint", "ccc_val")}


def record(label: str, attributes, checkpoints=("checkpoint_000000",)):
    from tuner.runs.trials import TrialRecord

    return TrialRecord(label, f"t_{label[-3:]}", "TERMINATED", {"attributes": attributes}, f"trial_{label[-3:]}",
                       checkpoints=list(checkpoints), best={"val_ccc_mean": 0.1, "training_iteration": 1,
                                                            "checkpoint_dir_name": "checkpoint_000000"})


def test_attribute_models_of_a_bucket_run_are_uris_and_said_so(capsys):
    from tuner.runs.export import Pick, attribute_models
    from tuner.runs.run_dir import RunDir

    run = RunDir("s3://bucket/results?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1", "r")
    conditions = [{"label": "attributes=act", "values": {"attributes": ["act"]}},
                  {"label": "attributes=val", "values": {"attributes": "val"}}]   # TrainConfig's string form
    picks = [Pick(c["label"], c["values"], 1, record(c["label"], c["values"]["attributes"], checkpoints))
             for c, checkpoints in zip(conditions, [("checkpoint_000000",), ()])]
    models = attribute_models(run, {"conditions": conditions}, picks)
    assert models == {"act": "s3://bucket/results/r/attributes=act/trial_act/checkpoint_000000/best_model.pt"
                             "?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"}
    err = capsys.readouterr().err
    assert "attributes=val: its best trial t_val kept no checkpoint" in err
    assert "`predict` reads local model files" in err


def test_no_attribute_file_unless_every_condition_trains_one_attribute_of_its_own(tmp_path):
    from tuner.runs.export import attribute_models
    from tuner.runs.run_dir import RunDir

    run = RunDir(tmp_path, "r")
    for values in ([{"labeled_ratio": 0.5}, {"labeled_ratio": 1.0}], [{}],
                   [{"attributes": ["act"]}, {"attributes": ["act", "val"]}],
                   [{"attributes": ["act"], "labeled_ratio": 0.5}, {"attributes": ["act"], "labeled_ratio": 1.0}]):
        assert attribute_models(run, {"conditions": [{"label": "x", "values": v} for v in values]}, []) is None
