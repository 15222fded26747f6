"""The house plan holds: no import cycle, the check table on the ground floor, frameworks in one place.

Read from the source with ``ast``, so every import counts, the ones inside functions too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dualwatch"
#: where a framework's own package may be named: its backend module (and the classes that must
#: subclass the framework's, beside it) and the integrations, which subclass trainers' callbacks
FRAMEWORK_PLACES = ("backends", "integrations")
FRAMEWORK = re.compile(r"^(torch|paddle)(\.|$)")
TRAINER = re.compile(r"^(lightning|pytorch_lightning|mmengine|deepspeed)(\.|$)")


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package (C extensions by their source)."""
    modules = {}
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c")]:
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, at its top or inside a function: ``from a import b`` is
    ``a.b`` where that is a module, else ``a``."""
    modules = _modules()
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return names


def _dependencies() -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``; a name that is not a Python module of the
    package (a class, a function, the compiled ``_hoststats``) is no edge."""
    modules = _modules()
    return {
        name: {other for other in _imported(name, path) if other in modules and other != name}
        for name, path in modules.items()
        if path.suffix == ".py"
    } | {name: set() for name, path in modules.items() if path.suffix == ".c"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    return next((found for node in sorted(graph) if node not in state and (found := visit(node))), None)


def test_the_package_has_no_import_cycle_even_through_imports_inside_functions() -> None:
    graph = _dependencies()
    assert len(graph) > 40
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_check_table_at_the_bottom_imports_nothing_from_dualwatch() -> None:
    names = _imported("dualwatch._table", PACKAGE / "_table.py")
    assert not [name for name in names if name.startswith("dualwatch")]


def test_the_engine_reads_no_framework_and_no_backend() -> None:
    graph = _dependencies()
    for module in ("dualwatch._table", "dualwatch._stats", "dualwatch._health"):
        assert not [dep for dep in graph[module] if dep.startswith("dualwatch.backends")], module


def test_only_the_backends_and_the_integrations_name_a_framework() -> None:
    """No import of a framework or a trainer, and no lookup of a framework by name
    (``sys.modules.get("torch")``); MMEngine's log file is a format the readers know by its name."""
    offenders = []
    for name, path in _modules().items():
        if path.suffix != ".py" or (name.split(".")[1:2] and name.split(".")[1] in FRAMEWORK_PLACES):
            continue
        tree = ast.parse(path.read_text())
        imported = _imported(name, path)
        strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
        offenders += [
            f"{name} imports {word}" for word in imported if FRAMEWORK.match(word) or TRAINER.match(word)
        ]
        offenders += [
            f"{name} names {word!r}" for word in strings if isinstance(word, str) and FRAMEWORK.match(word)
        ]
    assert offenders == []


def test_the_read_side_does_not_reach_into_the_write_side() -> None:
    """Readers, the report and the formats' decoders need no writer, watcher, sink or framework."""
    graph = _dependencies()
    seen: set[str] = set()
    todo = ["dualwatch.readers", "dualwatch._report", "dualwatch._rules", "dualwatch._view"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    forbidden = ("dualwatch._writer", "dualwatch._watcher", "dualwatch.sinks", "dualwatch.backends.torch")
    assert not [module for module in seen if module.startswith(forbidden)]
