"""No function in model/ or tuner/ is over 60 lines (read with `ast`: from its `def` to its last line,
docstring included), no exceptions (docs/architecture.md, "Function length")."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 60


def long_functions() -> dict[str, int]:
    """"path::qualified name" -> lines, for every function or method over LIMIT lines."""
    found = {}
    for path in sorted(p for pkg in ("model", "tuner") for p in (REPO / pkg).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef) and child.end_lineno - child.lineno + 1 > LIMIT:
                        found[f"{rel}::{name}"] = child.end_lineno - child.lineno + 1
                    visit(child, name + ".")

        visit(ast.parse(path.read_text(), rel), "")
    return found


def test_no_function_over_the_limit():
    over = long_functions()
    assert not over, f"functions over {LIMIT} lines: {over}"
