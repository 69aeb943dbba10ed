"""The package's shape: no import cycles, layers that import only downwards, functions short
enough to read, and docstring examples that run."""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import torchexplain

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "torchexplain"
#: a function may be longer than this (docstring excluded) only with a ``# long:`` comment saying why
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name (``kernels/`` is ``torchexplain.kernels``)."""
    found = {}
    for root, prefix in (
        (PACKAGE, ["torchexplain"]),
        (REPO / "kernels", ["torchexplain", "kernels"]),
    ):
        for path in sorted(root.rglob("*.py")):
            parts = [*prefix, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The torchexplain modules ``path`` imports, anywhere in it but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("torchexplain")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("torchexplain")
        ):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return {name for name in found if name in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_no_module_imports_itself_back_through_others():
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        for imported in GRAPH[name]:
            if imported in path:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(name)

    done: set[str] = set()
    for name in GRAPH:
        if name not in done:
            visit(name, [name])
    assert not cycles, cycles


def _reaches(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for imported in GRAPH[todo.pop()]:
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


@pytest.mark.parametrize(
    "module", ["torchexplain.saving", "torchexplain.models", "torchexplain.base"]
)
def test_the_core_does_not_reach_into_the_interfaces(module):
    """Saving, the model-call layer and the contract know nothing of servers or the command line."""
    reached = _reaches(module)
    assert not {m for m in reached if m.startswith(("torchexplain.serving", "torchexplain.cli"))}


def test_the_registry_and_the_settings_import_no_method():
    """Everything lists the methods through the registry, which imports none of them."""
    methods = {cls.__module__ for cls in torchexplain.registry.registered_explainers().values()}
    assert len(methods) == len(torchexplain.registry.registered_explainers())
    assert not _reaches("torchexplain.registry")
    assert not _reaches("torchexplain.settings") & methods


def _long_functions() -> list[str]:
    found = []
    for name, path in MODULES.items():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant
            )
            start = body[0].end_lineno + 1 if has_doc and len(body) > 1 else body[0].lineno
            code = lines[start - 1 : node.end_lineno]
            if len(code) > MAX_FUNCTION_LINES and not any("# long:" in line for line in code):
                found.append(f"{name}.{node.name}: {len(code)} lines")
    return found


def test_no_function_is_longer_than_80_lines_without_a_reason():
    assert not _long_functions()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_docstring_examples_run(module):
    if module.startswith("torchexplain.serving.runtime"):
        pytest.importorskip("mlserver")
    loaded = importlib.import_module(module)
    failures, _ = doctest.testmod(
        loaded, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert failures == 0


def test_tooling_is_not_part_of_the_package():
    """Benchmarks and demos live in benchmarks/ and examples/ (the command runs them from a checkout)."""
    assert not any(name.split(".")[-1].startswith(("_bench", "demo", "_demo")) for name in MODULES)
    assert hasattr(torchexplain, "__version__")
