"""The floors of the code base (README, Code map; ../shared/DESIGN.md, Layout), as a contract.

A package imports only itself and the floors below it, counting every import: module level,
inside functions, and those under ``TYPE_CHECKING`` (a type-only arrow up is still an arrow a
reader has to follow). No two modules import each other, directly or round a circle. The order
domain and the Redis floor import no client library of a floor they are not.

Each test names the offending lines, so a failure says what to move, not just that one moved.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: each may import the ones before it, never one after it.
FLOORS = ("core", "streams", "order", "state", "analytics", "agents", "web", "ops")
# Client libraries and the lowest floor that may use them (core: the retry policy knows Redis's
# and Kafka's errors, core/health.py serves probes, core/loop.py picks the event loop).
CLIENTS = {
    "redis": "core",
    "aiokafka": "core",
    "kafka": "core",
    "aiohttp": "core",
    "mode": "core",
    "clickhouse_driver": "analytics",
    "faust": "agents",
}
# Floors of plain values and rules: no client library at all (testable without services).
PURE = ("streams", "order")


def modules() -> Iterator[tuple[str, Path]]:
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


@cache
def project_modules() -> frozenset[str]:
    return frozenset(name for name, _ in modules())


def imported(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file, resolved to absolute names; ``from p import
    m`` names the module ``p.m`` when that is one of ours."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in project_modules() else base


def floor_of(module: str) -> int | None:
    top = module.split(".")[0]
    return FLOORS.index(top) if top in FLOORS else None


def test_every_package_is_a_floor() -> None:
    """A new top-level package must be given its floor here (and in the README's code map)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests"} == set(FLOORS)


def test_no_import_runs_up_a_floor() -> None:
    upward = []
    for name, path in modules():
        own = floor_of(name)
        assert own is not None
        for line, target in imported(name, path):
            theirs = floor_of(target)
            if theirs is not None and theirs > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert upward == []


def test_client_libraries_stay_on_their_floors() -> None:
    misplaced = []
    for name, path in modules():
        own = floor_of(name)
        assert own is not None
        for line, target in imported(name, path):
            floor = CLIENTS.get(target.split(".")[0])
            if floor is None:
                continue
            if own < FLOORS.index(floor) or FLOORS[own] in PURE:
                misplaced.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert misplaced == []


def test_the_order_domain_reads_no_clock() -> None:
    """Decisions take the time they are given (``now``, ``Decisions.clock``): a rule that read
    the clock itself could not be replayed or tested at a chosen instant."""
    reads = []
    for name, path in modules():
        if not name.startswith("order"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"time", "now", "utcnow", "monotonic", "today"}
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"time", "datetime", "date"}
            ):
                reads.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert reads == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in modules():
        graph[name] = {
            target
            for _, target in imported(name, path)
            if target in project_modules() and target != name
        }
    circles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert circles == []


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph has a few hundred nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.add(top)
                        if top == node:
                            break
                    out.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_the_circle_finder_finds_circles() -> None:
    """The contract is only as good as its search: a known circle is found, a chain is not."""
    found = strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert {"a", "b", "c"} in found and {"d"} in found
    assert all(len(c) == 1 for c in strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}))
