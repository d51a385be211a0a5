"""Every `from model.X import name` / `from tuner.X import name` in benchmarks/ names something that exists.

The benchmarks are not run by the suite (they take minutes to hours); their imports sit inside
functions, so a renamed module or function would only show when someone runs them."""
import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def project_imports(path: Path) -> list[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(node.module, alias.name, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("model", "tuner")
            for alias in node.names]


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(path):
    missing = [f"{path.name}:{line}: from {module} import {name}"
               for module, name, line in project_imports(path)
               if not hasattr(importlib.import_module(module), name)]
    assert not missing, "\n".join(missing)


def test_the_check_sees_imports():
    assert any(project_imports(p) for p in BENCHMARKS)
