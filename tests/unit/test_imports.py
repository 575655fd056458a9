"""No import cycle in agent_exporter: every module's imports, those inside functions included.

The graph is read from the source (ast), so a lazy import that only hides a
cycle at import time still counts.  An edge goes to the module named, or to
the package when the name imported from it is not a module of its own.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import agent_exporter

PACKAGE = Path(agent_exporter.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_the_package_has_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    assert "agent_exporter.server" in GRAPH["agent_exporter.telemetry"]        # inside Telemetry.asgi_app
    assert "agent_exporter.otlp_grpc" in GRAPH["agent_exporter.otlp"]          # inside OTLPReceiver.start_grpc
    assert "agent_exporter.config" in GRAPH["agent_exporter.render.rules"]     # from ..config
    assert "agent_exporter.stack" in GRAPH["agent_exporter.demo.runner"]       # from .. import stack
    assert len(MODULES) > 50


def test_a_cycle_through_a_lazy_import_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_type_checkers_see_every_lazily_exported_name():
    # py.typed is shipped: a name the package's __getattr__ returns must also be imported under
    # TYPE_CHECKING, or `from agent_exporter import Telemetry` is Any to a type checker.
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for_type_checkers = {alias.asname or alias.name
                         for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                         for statement in node.body if isinstance(statement, ast.ImportFrom)
                         for alias in statement.names}
    assert for_type_checkers == set(agent_exporter.__all__) - {"__version__"}
    for name in for_type_checkers:
        assert getattr(agent_exporter, name).__name__ == name


def test_importing_the_package_stays_light():
    # Neither the API's modules nor importlib.metadata (tens of ms) for the version.
    code = "import sys, agent_exporter; print(sorted({'agent_exporter.telemetry', 'importlib.metadata'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_version_is_the_installed_distributions():
    # pyproject.toml takes the version from agent_exporter/version.py: one source for both.
    from importlib.metadata import version

    assert agent_exporter.__version__ == version("agent-exporter")
