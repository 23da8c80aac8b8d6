"""Dependencies point one way (docs/architecture.md), checked on the import graph itself.

Every module of shared/, functions/, function_app.py and localdev/ is parsed (ast, nothing
is imported); every import counts, at module level or inside a function, and so do imports
under ``if TYPE_CHECKING:`` for the cycle check (a type-only cycle is still two modules that
cannot be understood apart). Importing ``a.b.c`` also depends on the packages ``a`` and
``a.b`` (their ``__init__`` runs first).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("shared", "functions", "function_app")
DEV_ONLY = ("localdev", "bench", "tests", "tools")
# What the adapters may use from the rest of shared/: the ports they implement and the pure
# leaf modules those speak in. Never a use case (intake, steps, ...), never bootstrap.
ADAPTER_MAY_IMPORT = {
    "shared", "shared.adapters", "shared.errors", "shared.ports", "shared.ledger_protocol", "shared.states",
    "shared.timestamps", "shared.retry", "shared.validation", "shared.logs", "shared.priority", "shared.securescore",
    "shared.securescore.model", "shared.storm", "shared.model",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    files = [ROOT / "function_app.py"]
    for package in ("shared", "functions", "localdev"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def _type_checking_block(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported at run time, modules imported for type checking only)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    runtime: set[str] = set()
    typing_only: set[str] = set()

    def visit(node: ast.AST, into: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_block(child):
                for inner in child.body:
                    visit_stmt(inner, typing_only)
                for inner in child.orelse:
                    visit_stmt(inner, into)
                continue
            visit_stmt(child, into)

    def visit_stmt(node: ast.AST, into: set[str]) -> None:
        if isinstance(node, ast.Import):
            into.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            into.add(target)
            for alias in node.names:  # `from pkg import module` imports pkg.module (kept if it is one)
                if f"{target}.{alias.name}" in KNOWN:
                    into.add(f"{target}.{alias.name}")
        visit(node, into)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), runtime)
    return runtime, typing_only


KNOWN = {module_name(path) for path in source_files()}
GRAPH = {module_name(path): imports_of(path) for path in source_files()}


def _with_packages(target: str) -> set[str]:
    parts = target.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & KNOWN


def edges(include_typing: bool) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, (runtime, typing_only) in GRAPH.items():
        targets = runtime | typing_only if include_typing else runtime
        out[module] = {dep for target in targets for dep in _with_packages(target)} - {module}
    return out


def cycles(graph: dict[str, set[str]], within: str) -> list[list[str]]:
    """Every strongly connected component of more than one module among ``within``'s modules."""
    nodes = [n for n in graph if n == within or n.startswith(within + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in nodes:
                continue
            if dep not in index:
                strongconnect(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
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

    for node in nodes:
        if node not in index:
            strongconnect(node)
    return found


def _is_package_edge(module: str, dep: str) -> bool:
    """A package's __init__ importing its own sub-modules (or a module importing its parent
    package) is how Python packages work, not a design cycle."""
    return dep.startswith(module + ".") or module.startswith(dep + ".")


def test_the_graph_covers_the_product_and_the_dev_tooling():
    assert {"function_app", "shared.bootstrap", "shared.steps.base", "functions.steps", "localdev.demo"} <= KNOWN


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.split(".")[0] in PRODUCT))
def test_the_product_never_imports_dev_tooling(module):
    runtime, typing_only = GRAPH[module]
    dev = sorted(t for t in runtime | typing_only if t.split(".")[0] in DEV_ONLY)
    assert dev == [], f"{module} imports {dev}"


def test_only_bootstrap_and_the_adapters_import_adapters():
    offenders = {
        module: sorted(t for t in runtime | typing_only if t.startswith("shared.adapters"))
        for module, (runtime, typing_only) in GRAPH.items()
        if module.split(".")[0] in PRODUCT and module != "shared.bootstrap" and not module.startswith("shared.adapters")
    }
    assert {m: deps for m, deps in offenders.items() if deps} == {}


def test_adapters_use_only_ports_and_pure_leaf_modules_of_shared():
    offenders = {}
    for module, (runtime, typing_only) in GRAPH.items():
        if not module.startswith("shared.adapters"):
            continue
        bad = sorted(t for t in runtime | typing_only
                     if t.startswith("shared") and not t.startswith("shared.adapters") and t not in ADAPTER_MAY_IMPORT)
        if bad:
            offenders[module] = bad
    assert offenders == {}


@pytest.mark.parametrize("package", ["shared", "functions", "localdev"])
def test_no_import_cycles(package):
    graph = edges(include_typing=True)
    graph = {m: {d for d in deps if not _is_package_edge(m, d)} for m, deps in graph.items()}
    assert cycles(graph, package) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(graph, "p") == [["p.a", "p.b", "p.c"]]
