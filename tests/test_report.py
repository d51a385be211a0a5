"""`python -m tuner report`: one tiny real search (2 conditions x 5 trials, 2 epochs, width 0.25) shared by
the checks below: the tables agree with the run's own files, the page renders in headless Chromium with
no console error and no network request, and too few trials give a visible note instead of importances."""
from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest
import yaml

from chromium_page import Page
from tune_helpers import SMOKE, experiment_trials, result_rows, short_tmp, tuner

from tuner.cli import main as cli

NAME = "rep"
CONDITIONS = ["labeled_ratio=0.5", "labeled_ratio=1.0"]
TRIALS, EPOCHS = 5, 2


@pytest.fixture(scope="module")
def report_run(tiny_store, tmp_path_factory) -> Path:
    """A finished search; returns its storage folder."""
    work = tmp_path_factory.mktemp("report_run")
    space = yaml.safe_load(SMOKE.read_text())
    space["budget"] = {"num_samples": TRIALS, "max_epochs": EPOCHS}
    space["parameters"]["width"] = 0.25
    (work / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    ray_tmp = short_tmp()
    try:
        proc = tuner(["run", "--space", "space.yaml", "--store", str(tiny_store), "--name", NAME,
                      "--storage", "results", "--num-cpus", "2"], cwd=work, ray_tmp=ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work / "results"


def md_table(md: str, title: str) -> list[dict[str, str]]:
    """Rows of the markdown table under `### title`, as header -> cell."""
    after = md.split(f"### {title}\n", 1)[1].lstrip("\n")
    lines = after.split("\n\n", 1)[0].splitlines()
    assert lines and all(ln.startswith("|") for ln in lines), after[:300]
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(headers, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def stat(mean: float, half: float) -> dict:
    return {"mean": mean, "sd": half, "n": 3, "ci95": [mean - half, mean + half]}


def sample_confirm() -> dict:
    """A confirm.json as `python -m tuner confirm` writes it (schema: tuner/answers/confirm/results.py): the best
    configuration of each condition and a baseline, 3 seeds each (one of the second condition's failed),
    and two paired comparisons."""
    def conf(cid, kind, conditions, mean, failed=0):
        seeds = [{"seed": s, "status": "failed" if s < failed else "done"} for s in (0, 1, 2)]
        summary = {"seeds_done": 3 - failed, "seeds_failed": failed,
                   "validation": {"ccc_mean": stat(mean + 0.05, 0.02)},
                   "test": {"Test1": {"ccc_act": stat(mean + 0.2, 0.03), "ccc_dom": stat(mean + 0.1, 0.03),
                                      "ccc_val": stat(mean - 0.1, 0.04), "ccc_mean": stat(mean, 0.032)}}}
        return {"id": cid, "kind": kind, "conditions": conditions, "attributes": ["act", "dom", "val"],
                "config": {"attributes": ["act", "dom", "val"]}, "seeds": seeds, "summary": summary}

    def test(diff, p, p_holm, significant=None):
        out = {"diff": diff, "ci95": [diff - 0.03, diff + 0.03], "p": p, "p_holm": p_holm}
        return out if significant is None else {**out, "significant": significant}

    return {
        "version": 2, "run": NAME, "state": "complete", "plan": {"top": 1, "seeds": [0, 1, 2]},
        "test_splits": ["Test1"], "confidence": 0.95, "alpha": 0.05,
        "tests": {"method": "method-level test over seeds and speakers", "paired_t": "paired t-test over seeds",
                  "bootstrap": "paired bootstrap over utterances", "correction": "Holm", "resamples": 1000,
                  "bootstrap_seed": 0},
        "selection": "highest mean validation ccc_mean over seeds",
        "configurations": [conf(f"{CONDITIONS[0]}/rank1", "search", [CONDITIONS[0]], 0.512),
                           conf(f"{CONDITIONS[1]}/rank1", "search", [CONDITIONS[1]], 0.431, failed=1),
                           conf(f"vanilla@{CONDITIONS[0]}", "baseline", [CONDITIONS[0]], 0.402)],
        "best": {CONDITIONS[0]: f"{CONDITIONS[0]}/rank1", CONDITIONS[1]: f"{CONDITIONS[1]}/rank1"},
        "comparisons": [
            {"kind": "baseline", "a": f"{CONDITIONS[0]}/rank1", "b": f"vanilla@{CONDITIONS[0]}", "split": "Test1",
             "metric": "ccc_mean", "seeds": [0, 1, 2], "diff": 0.11, "note": None,
             "method": test(0.11, 0.01, 0.02, True), "paired_t": test(0.11, 0.004, 0.008),
             "bootstrap": test(0.108, 0.001, 0.002)},
            {"kind": "condition", "a": f"{CONDITIONS[0]}/rank1", "b": f"{CONDITIONS[1]}/rank1", "split": "Test1",
             "metric": "ccc_mean", "seeds": [1, 2], "diff": 0.081, "note": f"{CONDITIONS[1]}/rank1: seed(s) 0 failed",
             "method": test(0.081, 0.09, 0.09, False), "paired_t": test(0.081, 0.07, 0.07),
             "bootstrap": {"diff": 0.08, "ci95": None, "p": None, "p_holm": None}}]}


@pytest.fixture(scope="module")
def report_files(report_run) -> tuple[Path, Path]:
    """The report of the run, with a confirmation (confirm/confirm.json) in its folder."""
    (report_run / NAME / "confirm").mkdir(exist_ok=True)
    (report_run / NAME / "confirm" / "confirm.json").write_text(json.dumps(sample_confirm()))
    assert cli(["report", NAME, "--storage", str(report_run)]) == 0
    return report_run / NAME / "report.html", report_run / NAME / "report.md"


def test_tables_agree_with_the_run_files(report_run, report_files):
    md = report_files[1].read_text()
    overview = {r["condition"]: r for r in md_table(md, "Conditions")}
    for label in CONDITIONS:
        exp = report_run / NAME / label
        trials = experiment_trials(exp)
        rows = {t["trial_id"]: result_rows(exp / t["relative_logdir"]) for t in trials}
        best_id, best_rows = max(rows.items(), key=lambda kv: max(r["val_ccc_mean"] for r in kv[1]))
        best = max(best_rows, key=lambda r: r["val_ccc_mean"])
        o = overview[label]
        assert o["trials"] == f"{len(trials)}/{TRIALS}" and o["study"] == "done"
        assert int(o["epochs trained"]) == sum(len(r) for r in rows.values())
        assert int(o["stopped early"]) == sum(1 for r in rows.values() if len(r) < EPOCHS)
        assert o["best trial"] == best_id and int(o["at epoch"]) == best["training_iteration"]
        assert float(o["best val_ccc_mean"]) == pytest.approx(best["val_ccc_mean"], rel=1e-3, abs=1e-7)
        hours = sum(r[-1]["time_total_s"] for r in rows.values()) / 3600   # smoke space: 1 CPU, no GPU
        assert float(o["CPU h"]) == pytest.approx(hours, rel=1e-3) and float(o["GPU h"]) == 0
        rungs = {int(r["epoch"]): int(r["trials that reached it"])
                 for r in md_table(md, f"Trials reaching each rung: {label}")}
        assert rungs == {e: sum(1 for r in rows.values() if len(r) >= e) for e in (1, EPOCHS)}
        top = md_table(md, f"Best configurations: {label}")
        assert top[0]["trial"] == best_id and len(top) == 3
        assert top[0]["temporal"] == best_rows[0]["config"]["temporal"]
        importance = {r["parameter"]: float(r["importance"]) for r in md_table(md, f"Hyperparameter importance: {label}")}
        assert {"temporal", "num_clusters", "chunk_frames", "lr_adam"} <= set(importance)
        assert sum(importance.values()) == pytest.approx(1.0, abs=0.01)
    across = md_table(md, "Best configuration per condition")
    assert [r["parameter"] for r in across][:2] == ["temporal", "triplet_margin"]
    for r in across[:-1]:
        assert r["differs"] == ("yes" if r[CONDITIONS[0]] != r[CONDITIONS[1]] else "")


def test_page_renders_offline_in_chromium(report_files, tmp_path):
    page_path = report_files[0]
    html = page_path.read_text()
    assert not re.search(r"<script[^>]+src=", html), "every script must be embedded"
    with Page() as page:
        page.open(page_path)
        charts = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
        # plotly draws each chart into an svg and keeps its traces on the div: all of them, non-empty
        page.wait_for("[...document.querySelectorAll('.plotly-graph-div')].every("
                      "d => d.querySelector('.main-svg') && d.data && d.data.length > 0)")
        # each chart's title and its drawn marks (points and bars are .point, lines .js-line)
        drawn = page.evaluate("[...document.querySelectorAll('.plotly-graph-div')].map(d => ["
                              "d.querySelector('.gtitle').textContent, d.querySelectorAll("
                              "'.point, path.js-line').length])")
        shot = page.screenshot(tmp_path / "report.png")
        errors, exceptions, requests = page.console_errors, page.exceptions, page.requests
    print(f"\nreport screenshot: {shot}")
    assert errors == [] and exceptions == []
    assert requests and all(u.startswith("file://") for u in requests), requests   # nothing from a network
    per_condition = ["Optimisation history", "Hyperparameter importance", "Validation curves",
                     "Trials reaching each rung", "Parallel coordinates", "Slices"]
    titles = [t for t, _ in drawn]
    assert charts == 2 + len(per_condition) * len(CONDITIONS) == len(titles)
    assert "Confirmation on Test1 (red: the best of a condition)" in titles
    for label in CONDITIONS:
        for what in per_condition:
            assert any(t.startswith(what) and label in t for t in titles), (what, label, titles)
    assert all(n > 0 for _, n in drawn), drawn
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])   # PNG IHDR
    assert width == 1400 and height > 3000


def test_confirmation_tables(report_files):
    md = report_files[1].read_text()
    rows = {r["configuration"]: r for r in md_table(md, "Confirmation: test CCC on Test1")}
    best = rows[f"{CONDITIONS[0]}/rank1 (best)"]
    assert best["kind"] == "search" and best["seeds"] == "3/3"
    assert rows[f"{CONDITIONS[1]}/rank1 (best)"]["seeds"] == "2/3 (1 failed)"
    assert best["ccc_mean"] == "0.512 [0.480, 0.544]" and best["ccc_act"] == "0.712 [0.682, 0.742]"
    assert rows[f"vanilla@{CONDITIONS[0]}"]["ccc_mean"] == "0.402 [0.370, 0.434]"
    pairs = md_table(md, "Confirmation: paired comparisons (same seeds)")
    assert [p["A - B"] for p in pairs] == ["+0.110", "+0.081"] and [p["seeds"] for p in pairs] == ["3", "2"]
    assert pairs[0]["95% CI (method)"] == "[+0.080, +0.140]" and pairs[0]["p (method)"] == "0.01 / 0.02 *"
    assert pairs[0]["p (t over seeds)"] == "0.004 / 0.008"       # significant, yet not starred: not the method test
    assert pairs[0]["p (utterances)"] == "0.001 / 0.002"         # a statement about the trained models: no star
    assert pairs[1]["p (method)"] == "0.09 / 0.09" and pairs[1]["note"] == f"{CONDITIONS[1]}/rank1: seed(s) 0 failed"
    assert pairs[1]["95% CI (utterances)"] == "-" and pairs[1]["p (utterances)"] == "n/a"   # an undefined test


def test_too_few_trials_give_a_visible_note(report_run, tmp_path):
    """A copy of the run as a run made before Optuna studies were stored (its studies are rebuilt from the
    trial records) in which only 2 trials of one condition have reported: no importance there, a note."""
    storage = tmp_path / "results"
    shutil.copytree(report_run / NAME, storage / NAME, ignore=shutil.ignore_patterns("report.*", "optuna.journal"))
    manifest = json.loads((storage / NAME / "run.json").read_text())
    del manifest["optuna_storage"]
    (storage / NAME / "run.json").write_text(json.dumps(manifest))
    exp = storage / NAME / CONDITIONS[1]
    for t in experiment_trials(exp)[2:]:
        (exp / t["relative_logdir"] / "result.json").unlink()
    out = tmp_path / "out"
    assert cli(["report", NAME, "--storage", str(storage), "--out", str(out)]) == 0
    assert not (storage / NAME / "report.html").exists()   # --out: the run folder is left alone
    note = "hyperparameter importance needs at least 5 finished trials; this condition has 2"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert note in md and note in page
    assert "Optuna studies: rebuilt from the trial records" in md
    assert md_table(md, f"Hyperparameter importance: {CONDITIONS[0]}")   # the other condition still has them


def test_unknown_run_is_an_error(tmp_path, capsys):
    assert cli(["report", "nope", "--storage", str(tmp_path)]) == 2
    assert f"{tmp_path}/nope: no search run here" in capsys.readouterr().err



def test_study_rebuilt_from_records_matches_the_stored_study(report_run):
    """A run without Optuna storage gets its studies rebuilt from Ray's records: the same trials, values,
    states and per-epoch values as the stored study gives the report."""
    from tuner.search.experiment import space_from_manifest
    from tuner.runs.studies import load_studies
    from tuner.answers.report.data import scored_view, study_from_records
    from tuner.runs.run_dir import open_run
    from tuner.runs.trials import read_trials

    run = open_run(NAME, str(report_run))
    manifest = run.read_manifest()
    space = space_from_manifest(manifest)
    stored, records = load_studies(run), read_trials(run, manifest)

    def trials(study):
        return {t.user_attrs["ray_trial_id"]: (t.params, t.value, t.user_attrs["state"], t.intermediate_values)
                for t in scored_view(study, space).trials}

    for cond in manifest["conditions"]:
        from_storage = trials(stored[cond["label"]])
        assert len(from_storage) == TRIALS
        assert {s for _, _, s, _ in from_storage.values()} <= {"COMPLETE", "PRUNED"}
        assert trials(study_from_records(space, cond["values"], cond["label"], records[cond["label"]])) == from_storage


def test_a_whole_study_lacks_none_of_the_trials_ray_finished(report_run):
    """The check that says a truncated or stale Optuna storage (issue 21 §5) is silent on a real run's own."""
    from tuner.runs.studies import load_studies
    from tuner.answers.report.data import study_gaps
    from tuner.runs.run_dir import RunDir
    from tuner.runs.trials import read_trials

    run = RunDir(report_run, NAME)
    manifest = run.read_manifest()
    trials = read_trials(run, manifest)
    assert sum(r.status == "TERMINATED" for records in trials.values() for r in records) == 2 * TRIALS
    assert study_gaps(manifest, load_studies(run), trials, "journal") == {}
