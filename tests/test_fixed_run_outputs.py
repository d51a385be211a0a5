"""The read-only commands' outputs on a fixed run folder are the golden files: `status --json`, `export`
(its stdout and the YAML files it writes) and `report` (stdout and report.md). The run folder
(tests/data/fixed_run/fix: a 2-condition x 3-trial, 2-epoch search on the tests' tiny store, without model
weights or Ray's pickles, which these commands do not read) and the golden files were made once by the code
before tuner/ was reorganised into packages: equal outputs show the reorganisation changed no behaviour.
Only what legitimately varies is normalised: the folder the run is copied to and the output folder (a
fresh /tmp/fixed-run-XXXXXXXX, always as long: YAML wraps long lines, so the paths' length shows). Run this file as a script to rewrite the golden files (only after a deliberate change of an output)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "fixed_run"
GOLDEN = FIXTURE / "golden"
NAME = "fix"


def outputs() -> dict[str, str]:
    """Copy the fixed run to a fresh folder, run status --json, export and report there; file name ->
    normalised text."""
    work = Path(tempfile.mkdtemp(prefix="fixed-run-", dir="/tmp"))
    try:
        return _outputs(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _outputs(work: Path) -> dict[str, str]:
    storage = work / "results"
    shutil.copytree(FIXTURE / NAME, storage / NAME)
    out = work / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    commands = {
        "status.json": ["status", NAME, "--storage", str(storage), "--json"],
        "export.out": ["export", NAME, "--storage", str(storage), "--top", "2", "--out", str(out / "best.yaml")],
        "report.out": ["report", NAME, "--storage", str(storage), "--out", str(out / "report")],
    }
    found = {}
    for key, args in commands.items():
        proc = subprocess.run([sys.executable, "-m", "tuner", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
        found[key] = proc.stdout
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix != ".html":   # report.html: plotly's random div ids and the time
            found[path.relative_to(out).as_posix()] = path.read_text()
    return {key: text.replace(str(storage), "<STORAGE>").replace(str(out), "<OUT>") for key, text in found.items()}


def golden() -> dict[str, str]:
    return {path.relative_to(GOLDEN).as_posix(): path.read_text() for path in sorted(GOLDEN.rglob("*"))
            if path.is_file()}


def test_outputs_equal_the_golden_files():
    expected = golden()
    found = outputs()
    assert sorted(found) == sorted(expected)
    for key in expected:
        assert found[key] == expected[key], key


def test_golden_files_cover_the_three_commands():
    expected = golden()
    assert {"status.json", "export.out", "report.out", "best.yaml", "report/report.md"} <= set(expected)
    assert '"name": "fix"' in expected["status.json"]
    assert "| labeled_ratio=0.5 | done | 3/3 |" in expected["report/report.md"]


if __name__ == "__main__":
    shutil.rmtree(GOLDEN, ignore_errors=True)
    for key, text in outputs().items():
        (GOLDEN / key).parent.mkdir(parents=True, exist_ok=True)
        (GOLDEN / key).write_text(text)
    print(f"wrote {GOLDEN}")
