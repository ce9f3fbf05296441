"""The package's shape: a CLI whose help imports nothing heavy, no import cycles, small modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "searchmm"
# pydantic too: typer imports it to coerce a None flag, which the CLI's groups avoid.
HEAVY = ("torch", "open_clip", "faiss", "PIL", "numpy", "sqlalchemy", "fastapi", "pydantic")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200

# Runs the real command line (what the console entry point runs), then lists the top-level
# modules it imported.
PROBE = """
import json, sys
sys.argv[0] = "searchmm"
from searchmm.cli.app import run
code = run()
print(json.dumps({"code": code, "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["query", "--help"], ["bench", "--help"], ["bench", "coco", "--help"]]
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == 0
    assert "Usage: searchmm" in result.stdout
    assert [name for name in HEAVY if name in report["modules"]] == []


def test_help_with_x_importtime_lists_no_heavy_module() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "searchmm.cli", "query", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "searchmm.cli.query" in imported
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports when it is imported (not inside functions, nor only for
    type checking)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    deps = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            deps.add(target)
    return deps


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    found = modules()
    graph = {name: module_level_imports(name, path, set(found)) for name, path in found.items()}
    # A package imports its own __init__ first: that edge is not a cycle of ours.
    for name, deps in graph.items():
        deps -= {parent for parent in graph if name.startswith(parent + ".")}
    assert graph["searchmm.cli.app"] >= {"searchmm.cli.bench", "searchmm.cli.query"}
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_modules_and_classes_are_small() -> None:
    too_long = []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"{name}.{node.name}: {size} lines")
    assert too_long == []
