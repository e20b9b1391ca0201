"""The package's shape, checked: no import cycle, a leaf config, small files, and no
reference to a document outside the repository.

Every import counts, the ones inside functions too: a cycle hidden behind a lazy
import still means two modules that cannot be understood (or loaded) one without the
other. An import edge goes to the module named (`from vocolab.data.scenes import X`
-> `vocolab.data.scenes`; `from vocolab.zoo import builtin` -> `vocolab.zoo.builtin`)
and, when it enters another package, to every package above the module, whose
`__init__` Python runs first: a package that re-exports its modules for the notebooks
must not sit on a cycle either. (Inside a package, its `__init__` is already running.)
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vocolab"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def import_graph() -> dict[str, set[str]]:
    """module -> the vocolab modules it imports (anywhere in its source)."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = _package_of(name, path).split(".")
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                parts = target.split(".")
                above = {".".join(parts[:i]) for i in range(2, len(parts))}
                graph[name] |= {target} | {p for p in above if not name.startswith(p + ".") and name != p}
            graph[name] &= set(modules)
            graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_config_is_a_leaf():
    """Validating a config must not import the rest of the package."""
    assert import_graph()["vocolab.core.config"] == set()
    assert import_graph()["vocolab.core"] == set()  # nor does the package it sits in


def test_core_depends_on_nothing_above_it():
    graph = import_graph()
    for name in ("vocolab.core.layout", "vocolab.core.masks", "vocolab.core.runtime"):
        assert all(t.startswith("vocolab.core") for t in graph[name]), (name, graph[name])


@pytest.mark.parametrize("name", sorted(_modules()))
def test_every_module_is_small(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by job (at most {MAX_LINES})"


def test_the_package_cites_only_documents_in_the_repository():
    """The package, its notebooks and its documents name only documents a clone has."""
    cited = set()
    texts = [*PACKAGE.rglob("*.py"), *(ROOT / "notebooks").glob("*.py"),
             *ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")]
    for path in texts:
        # documents: CAPITALISED.md or anything under docs/ (lower-case names are output files)
        cited |= set(re.findall(r"\b(?:docs/[\w./-]+|[A-Z][A-Z_]*)\.md\b", path.read_text()))
    missing = sorted(c for c in cited if not (ROOT / c).exists())
    assert missing == [], f"the package cites documents that are not in the repository: {missing}"


def test_code_imports_from_the_defining_module_not_from_a_package():
    """Package `__init__` files re-export for notebooks and users; inside the package every
    import names the module that defines the thing, so a re-export can never close a cycle."""
    modules = _modules()
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    offenders = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in packages and not node.level:
                named = [a.name for a in node.names if f"{node.module}.{a.name}" not in modules]
                if named:
                    offenders.append(f"{name}: from {node.module} import {', '.join(named)}")
    assert offenders == []
