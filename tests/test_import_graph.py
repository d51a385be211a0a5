"""The import graph of model/ and tuner/, read with `ast` (every import, at module level or inside a
function, absolute or relative): no circle, model/ never imports ray or tuner, and tuner's packages import
one way only (docs/architecture.md): cli and commands -> answers -> search -> runs -> space, storage -> model."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "tuner")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> set[str]:
    """Every module name `path` (module `name`) imports; `from A import B` is A.B when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of model/ and tuner/ it imports."""
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    return {name: {m for m in imported(path, name) if m in files and m != name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (its modules, the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            if cycle := visit(target, path + [node]):
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start, []):
            return cycle
    return None


def all_imports(pkg: str) -> dict[str, set[str]]:
    return {module_name(p): imported(p, module_name(p)) for p in (REPO / pkg).rglob("*.py")}


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_model_never_imports_ray_or_tuner():
    bad = {name: sorted(m for m in mods if m.split(".")[0] in ("ray", "tuner"))
           for name, mods in all_imports("model").items()}
    assert not {name: mods for name, mods in bad.items() if mods}


# lowest first; a module may import its own layer and those below it (space and storage do not import each other)
LAYERS = [("model",), ("tuner.storage", "tuner.space"), ("tuner.runs",), ("tuner.search",), ("tuner.answers",),
          ("tuner.commands", "tuner.cli", "tuner.__main__")]


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) for name in names
                if module == name or module.startswith(name + "."))


def package(module: str) -> str:
    """model, or tuner's package (tuner.runs, ...) of a module."""
    return ".".join(module.split(".")[:2]) if module.startswith("tuner.") else module.split(".")[0]


def test_packages_import_one_way():
    graph = import_graph()
    upward = [f"{a} -> {b}" for a, targets in graph.items() if a != "tuner" for b in targets
              if layer(b) > layer(a)]
    sideways = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
                if {package(a), package(b)} == {"tuner.space", "tuner.storage"}]
    assert not upward and not sideways, upward + sideways
    top = [p.name for p in (REPO / "tuner").glob("*.py")]
    assert sorted(top) == ["__init__.py", "__main__.py", "cli.py"], top


def test_nothing_imports_a_moved_modules_old_name():
    """The old names (tuner.MOVED) are for Ray's pickles of old runs only: the code, the tests and the
    benchmarks import the modules where they are."""
    from tuner import MOVED

    files = [p for d in ("model", "tuner", "tests", "benchmarks") for p in (REPO / d).rglob("*.py")
             if p.name != "test_moved_modules.py" and p != REPO / "tuner" / "__init__.py"]
    old = {path.relative_to(REPO).as_posix(): sorted(m for m in imported(path, module_name(path)) if m in MOVED)
           for path in files}
    assert not {path: names for path, names in old.items() if names}


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    import pkg.c\n")
    found = imported(pkg / "a.py", "pkg.a")
    assert {"pkg.b", "pkg.b.g", "pkg.c"} <= found
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
