"""The shape of `server/`, checked from its import graph (every import statement, including those inside
functions and under TYPE_CHECKING): no cycles, and the layers below HTTP know nothing of it."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"
# Packages that do the work; they must not reach up into the transport (http, ws) or its framework.
CORE = ("server.models", "server.graph", "server.images")
FORBIDDEN_FOR_CORE = ("server.http", "server.ws", "server.app", "server.services", "starlette", "uvicorn")


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in SERVER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets.add(base)
                # `from server.models import probe` imports the module server.models.probe.
                targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
        graph[name] = targets
    return graph


def internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: {t for t in targets if t in graph and t != name} for name, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(internal(import_graph())) == []


def test_core_packages_do_not_import_the_transport():
    offending = []
    for name, targets in import_graph().items():
        if name.startswith(CORE):
            offending += [f"{name} -> {t}" for t in sorted(targets) if t.startswith(FORBIDDEN_FOR_CORE)]
    assert offending == []


def test_the_websocket_hub_does_not_import_starlette_or_http():
    offending = []
    for name, targets in import_graph().items():
        if name.startswith("server.ws"):
            offending += [f"{name} -> {t}" for t in sorted(targets) if t.startswith(("starlette", "server.http"))]
    assert offending == []


def test_producers_take_emit_and_never_the_hub():
    """Every producer is handed an `Emit`; none imports the hub or the WebSocket layer."""
    graph = import_graph()
    producers = [name for name in graph if name.startswith(CORE)]
    assert not [name for name in producers if any(t.startswith("server.ws") for t in graph[name])]


def test_the_checker_sees_a_cycle_and_a_forbidden_import():
    # The checks above must be able to fail.
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    graph = import_graph()
    assert "server.http.errors" in graph["server.http.models"]
    assert "starlette.requests" in graph["server.http.state"]
