"""The import rules of DESIGN.md ("Layers: imports only point down"), read from the source.

Every ``import`` of a qmonitor module is counted, wherever it is (inside functions and under
``TYPE_CHECKING`` too: a type-only import is still a dependency, and the one that closed the
builtins/monitor/qmp_session circle was one). A new violation fails here, naming the file and
the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import qmonitor

PACKAGE_ROOT = Path(qmonitor.__file__).parent

PUBLIC_API = "qmonitor"
"""The package itself: ``from qmonitor import ...`` is the public API (its ``__all__``)."""

ALLOWED: dict[str, frozenset[str]] = {
    # no I/O at all: the bottom layer
    "core": frozenset({"core"}),
    # sans-I/O protocols over core
    "qmp": frozenset({"core", "qmp"}),
    "hmp": frozenset({"core", "hmp"}),
    "cmdline": frozenset({"core", "qmp", "cmdline"}),  # QEMU's JSON parser for -object/-qmp
    # who may do what, sans I/O: authz objects from -object options, roles over HMP lines too
    "security": frozenset({"core", "hmp", "cmdline", "security"}),
    # asyncio: sockets, sessions, the Monitor
    "server": frozenset({"core", "qmp", "hmp", "cmdline", "security", "server"}),
    # the public API re-exports the layers below the applications
    PUBLIC_API: frozenset({"core", "qmp", "hmp", "server"}),
    # the reference machine is an application of the public API, as an embedder's would be
    "machine": frozenset({PUBLIC_API, "machine"}),
    # which form runs, pure Python or compiled: read by setup.py too, so it imports nothing
    "form": frozenset(),
    # test helpers for users: anything but the applications
    "testing": frozenset({PUBLIC_API, "core", "qmp", "hmp", "server", "testing"}),
}
"""For each part of the package, the parts its modules may import. ``cli``, ``launch``,
``standin`` and ``__main__`` (the programs) may import anything."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """``qmonitor.core.schema`` -> ``core``; ``qmonitor`` -> the public API."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PUBLIC_API


def qmonitor_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a qmonitor module in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "qmonitor":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == "qmonitor":
                yield node.lineno, module


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        graph[module_name(path)] = {module for _, module in qmonitor_imports(path)}
    return graph


def test_each_layer_imports_only_the_layers_below_it() -> None:
    violations = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        part = part_of(module_name(path))
        allowed = ALLOWED.get(part)
        if allowed is None:
            assert part in ("cli", "launch", "standin", "__main__"), (
                f"{path}: a new part of the package needs a rule"
            )
            continue
        for line, module in qmonitor_imports(path):
            if part_of(module) not in allowed:
                where = path.relative_to(PACKAGE_ROOT.parent)
                violations.append(f"{where}:{line}: {part} imports {module}")
    assert violations == [], (
        "imports that break DESIGN.md's layers (machine: use `from qmonitor import ...`, and "
        "export what it legitimately needs from qmonitor/__init__.py):\n" + "\n".join(violations)
    )


def test_no_import_cycles_between_modules() -> None:
    graph = import_graph()
    # Tarjan's strongly connected components: a component of more than one module is a circle.
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for imported in graph[module]:
            if imported not in graph:
                continue  # qmonitor.x.y where y is a name, or a module that does not exist
            if imported not in index:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in stack:
                lowest[module] = min(lowest[module], index[imported])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert circles == []


def test_the_machine_imports_only_what_the_package_exports() -> None:
    """What machine/ takes from ``qmonitor`` is in ``qmonitor.__all__``."""
    missing = []
    for path in sorted((PACKAGE_ROOT / "machine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "qmonitor" and not node.level:
                missing += [a.name for a in node.names if a.name not in qmonitor.__all__]
    assert missing == []
