"""The package layers the README states: imports flow ``prompts <- curation <- tuning <- mtl_baselines`` (a package
imports only from packages to its left) and no two modules import each other, directly or round a longer cycle.

Every module of the four packages is parsed with :mod:`ast`; every import counts, at module level, inside a function
or class, under ``if TYPE_CHECKING:``: ``import a.b``, ``from a.b import c`` (``a.b.c`` when that is a module,
else ``a.b``) and relative imports (``from . import x``, ``from ..b import c``). Only imports of the four packages
are edges.

Exempt: dispatch by name. ``curation/cli.py``'s ``COMMANDS`` and ``curate combos``'s ``EVALUATORS``
(``curation/combos_cli.py``) name modules as strings (``"tuning.generate"``, ``"module:Class"``) and import them
with :func:`importlib.import_module` only when that command or evaluator is asked for; a string is not an import,
and this test does not read strings. The dispatcher is how a lower package runs a higher one's command without
depending on it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

LAYERS = ("prompts", "curation", "tuning", "mtl_baselines")
OPTIONAL_EXTRAS = ("bitsandbytes", "llguidance", "tensorboard")  # pyproject's quantization, constrained, tensorboard


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target``; ``where`` is ``path:line``, ``in_function`` whether the import runs only when a
    function (or method) is called."""

    source: str
    target: str
    where: str
    in_function: bool


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted name -> file of every module of ``packages`` under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def import_edges(root: Path, packages: Iterable[str]) -> list[Edge]:
    """Every import between modules of ``packages`` (see the module doc for what counts)."""
    modules = module_names(root, packages)
    edges = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _imports(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    here = source.split(".") if is_package else source.split(".")[:-1]
                    base_parts = here[:len(here) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != source:
                    edges.append(Edge(source, target, f"{path.relative_to(root)}:{node.lineno}", in_function))
    return edges


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def module_level_imports(root: Path, packages: Iterable[str], names: Iterable[str]) -> list[str]:
    """``path:line: name`` for every import of one of the top-level packages ``names`` that runs when a module of
    ``packages`` is imported (not inside a function)."""
    names = set(names)
    out = []
    for path in module_names(root, packages).values():
        for node, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if in_function or getattr(node, "level", 0):
                continue
            out += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in imported if n.split(".")[0] in names]
    return sorted(out)


def _layer(module: str, layers: tuple[str, ...]) -> int:
    return layers.index(module.split(".")[0])


def upward_imports(edges: Iterable[Edge], layers: tuple[str, ...]) -> list[str]:
    """One line per import of a package to the importer's right in ``layers``."""
    return [f"{e.where}: {e.source} imports {e.target}{' (in a function)' if e.in_function else ''}, but "
            f"{e.target.split('.')[0]} sits above {e.source.split('.')[0]} ({' <- '.join(layers)})"
            for e in edges if _layer(e.target, layers) > _layer(e.source, layers)]


def import_cycles(edges: Iterable[Edge]) -> list[str]:
    """One line per strongly connected group of modules: a cycle through it, each step with where it is imported
    (``[in function]`` for an import that runs only when its function is called)."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    lines = []
    for group in _strongly_connected(graph):
        if len(group) < 2:
            continue
        cycle = _cycle_in(graph, group)
        steps = [graph[a][b] for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)]
        lines.append(" -> ".join([cycle[0]] + [f"{s.target} ({s.where}{' in function' if s.in_function else ''})"
                                               for s in steps]))
    return lines


def _strongly_connected(graph: Mapping[str, Mapping[str, Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; groups in a deterministic order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(groups)


def _cycle_in(graph: Mapping[str, Mapping[str, Edge]], group: list[str]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group (breadth-first search)."""
    members, start = set(group), group[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if child in members and child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in the strongly connected group {group}")


def _project_edges() -> list[Edge]:
    return import_edges(REPO, LAYERS)


# ---------------------------------------------------------------------------------------------------------------
# the project


def test_no_package_imports_one_above_it():
    problems = upward_imports(_project_edges(), LAYERS)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules():
    problems = import_cycles(_project_edges())
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_optional_extras_are_imported_inside_functions():
    """pytest imports every module for its docstring examples (--doctest-modules), and ``bioselect --help`` must work
    without the extras: an extra is imported by the function that needs it (pyproject's optional-dependencies)."""
    found = module_level_imports(REPO, LAYERS, OPTIONAL_EXTRAS)
    assert not found, "module-level imports of optional extras:\n" + "\n".join(found)


def test_every_package_module_is_walked():
    modules = module_names(REPO, LAYERS)
    assert {"prompts", "curation.cli", "curation.readers.iob", "tuning.generate",
            "mtl_baselines.token_mtl.train"} <= set(modules)
    walked = {e.source for e in import_edges(REPO, LAYERS)}
    assert {"curation.scoring", "tuning.generate", "mtl_baselines.sru_ner.train"} <= walked


# ---------------------------------------------------------------------------------------------------------------
# the checker, on a package written here


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def layered(tmp_path: Path) -> Path:
    """``low <- high``: ``low.a`` imports ``high.b`` inside a function (upward), ``high.b`` imports ``high.c`` and
    ``high.c`` imports ``high.b`` back through a relative import inside a method (a cycle), ``high.d`` imports
    ``low.a`` at module level (allowed) and ``low.e`` only names ``high.b`` in a string (not an import)."""
    _write(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": "import os\n\n\ndef f():\n    from high.b import thing\n    return thing\n",
        "low/e.py": 'TABLE = {"x": "high.b:thing"}\n',
        "high/__init__.py": "",
        "high/b.py": "from high import c\n\nthing = 1\n",
        "high/c.py": "class K:\n    def m(self):\n        from . import b\n        return b\n",
        "high/d.py": "import low.a\nfrom low import e\n",
    })
    return tmp_path


def test_checker_reports_an_upward_import_inside_a_function(layered):
    edges = import_edges(layered, ("low", "high"))
    problems = upward_imports(edges, ("low", "high"))
    assert problems == ["low/a.py:5: low.a imports high.b (in a function), but high sits above low (low <- high)"]
    assert upward_imports(edges, ("high", "low")) == [  # the other order makes the other imports the wrong ones
        "high/d.py:1: high.d imports low.a, but low sits above high (high <- low)",
        "high/d.py:2: high.d imports low.e, but low sits above high (high <- low)"]


def test_checker_reports_a_cycle_with_its_path(layered):
    cycles = import_cycles(import_edges(layered, ("low", "high")))
    assert cycles == ["high.b -> high.c (high/b.py:1) -> high.b (high/c.py:3 in function)"]


def test_checker_finds_a_longer_cycle_and_no_cycle_once_an_edge_is_gone(tmp_path):
    _write(tmp_path, {"p/__init__.py": "", "p/x.py": "from .y import f\n", "p/y.py": "from p.z import g\nf = 1\n",
                      "p/z.py": "import p.x\ng = 1\n", "p/w.py": "import p.x\n"})
    edges = import_edges(tmp_path, ("p",))
    assert import_cycles(edges) == ["p.x -> p.y (p/x.py:1) -> p.z (p/y.py:1) -> p.x (p/z.py:1)"]
    assert import_cycles([e for e in edges if (e.source, e.target) != ("p.z", "p.x")]) == []


def test_checker_finds_module_level_imports_of_extras_only(tmp_path):
    _write(tmp_path, {"p/__init__.py": "import llguidance.torch\n",
                      "p/a.py": "def f():\n    import bitsandbytes\n", "p/b.py": "from tensorboard import x\n"})
    assert module_level_imports(tmp_path, ("p",), OPTIONAL_EXTRAS) == ["p/__init__.py:1: llguidance.torch",
                                                                        "p/b.py:1: tensorboard"]


def test_checker_resolves_relative_imports_from_a_package_init(tmp_path):
    _write(tmp_path, {"p/__init__.py": "from .sub import m\n", "p/sub/__init__.py": "from .. import q\n",
                      "p/sub/m.py": "", "p/q.py": ""})
    assert sorted((e.source, e.target) for e in import_edges(tmp_path, ("p",))) == [
        ("p", "p.sub.m"), ("p.sub", "p.q")]


def test_importing_the_project_keeps_bitsandbytes_cpu_warning_off_stderr():
    """bitsandbytes logs "Failed to load CPU gemm_4bit_forward ..." on CPUs with AVX512-BF16 when the `kernels` package
    is absent; every command imports curation first, which silences it, so a bad-input error stays one line."""
    import subprocess
    import sys

    pytest.importorskip("bitsandbytes", reason="the quantization extra is not installed")
    code = "import curation, mtl_baselines, peft, bitsandbytes; import bitsandbytes.backends.cpu.ops"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gemm_4bit" not in done.stderr and "Failed to load" not in done.stderr, done.stderr
