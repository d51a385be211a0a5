"""The CLI starts without the heavy libraries: `--help`, and the modules that status, export and report
read run folders with, import neither torch nor Ray (each costs seconds per command on a small node)."""
import subprocess
import sys

HEAVY = ("torch", "ray", "optuna")


def test_cli_parser_and_run_readers_import_no_heavy_library():
    code = ("import sys; from tuner.cli import build_parser; build_parser(); "
            "import tuner.runs.summary, tuner.runs.export, tuner.answers.report.data, tuner.answers.confirm.results; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_check_sees_an_import():
    code = f"import sys, model.trainer; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" in out.stdout.split()
