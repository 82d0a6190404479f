"""The package is the pipeline it claims to be: no import cycles, no import up the layers.

Every ``import`` and ``from ... import`` in ``src/memdiag`` is read with ``ast``, at any
depth (imports inside functions, under ``TYPE_CHECKING``, in ``try`` blocks) plus
``importlib.import_module("memdiag...")`` with a literal name. The layers below are the
architecture of docs/architecture.md; a module may import its own layer and the layers
under it, never one above, and no set of modules may import each other in a loop.
A new module must be given a layer here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A name covers the module and everything under it (a package).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "memdiag._version",
            "memdiag.errors",
            "memdiag._files",
            "memdiag._libc",
            "memdiag._net",
            "memdiag._logging",
            "memdiag.units",
            "memdiag.redact",
            "memdiag.stats",
        ),
    ),
    ("probes and settings", ("memdiag.probes", "memdiag.config", "memdiag.runtime")),
    ("registry", ("memdiag.registry",)),
    ("sample", ("memdiag.sample",)),
    (
        "pressure, actions, history",
        ("memdiag.pressure", "memdiag.projection", "memdiag.history", "memdiag.cleanup", "memdiag.cache"),
    ),
    ("monitor contract", ("memdiag.monitor",)),
    ("leaks and processes", ("memdiag.leaks", "memdiag.processes")),
    ("reports", ("memdiag.reports",)),
    ("service", ("memdiag.service", "memdiag.wiring", "memdiag.configure")),
    # the local channel and the worker identity follow the service; the HTTP surface
    # serves the channel's socket and forwards to workers, never the other way round
    ("local channel, workers", ("memdiag.control", "memdiag.workers")),
    ("surfaces", ("memdiag.health", "memdiag.http", "memdiag.dashboard", "memdiag.telemetry")),
    ("public face", ("memdiag",)),
    ("command line", ("memdiag.cli", "memdiag.demo", "memdiag.__main__")),
]

Edge = tuple[str, str, str]  # importer, imported, "path:line"


def _modules(src: Path) -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package under ``src``."""
    out = {}
    for path in sorted((src / "memdiag").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import node (or a literal import_module call) may load."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        return [mod] + [f"{mod}.{a.name}" for a in node.names]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, (ast.Attribute, ast.Name))
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def import_edges(src: Path = SRC) -> list[Edge]:
    """Every import between two modules of the package, with where it is written."""
    modules = _modules(src)
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = _imported(node, package)
            if not names:
                continue
            # `from pkg import sub` imports the module pkg.sub; `from mod import name`, mod.
            targets = {n for n in names[1:] if n in modules} or {n for n in names[:1] if n in modules}
            if isinstance(node, ast.Import):
                targets = {n for n in names if n in modules}
            where = f"{path.relative_to(src)}:{node.lineno}"
            edges.extend((name, t, where) for t in sorted(targets) if t != name)
    return edges


def layer_of(module: str) -> int | None:
    """The index of the layer holding ``module`` (the longest matching name wins)."""
    best: tuple[int, int] | None = None
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            # "memdiag" names the public face alone, not every module under it.
            covers = module == n or (n != "memdiag" and module.startswith(n + "."))
            if covers and (best is None or len(n) > best[1]):
                best = (i, len(n))
    return None if best is None else best[0]


def upward_imports(edges: list[Edge]) -> list[str]:
    """One message per import from a lower layer to a higher one."""
    out = []
    for a, b, where in edges:
        la, lb = layer_of(a), layer_of(b)
        if la is not None and lb is not None and la < lb:
            out.append(
                f"{a} (layer {LAYERS[la][0]!r}) imports {b} (layer {LAYERS[lb][0]!r}) at {where}: "
                "a lower layer must not import a higher one"
            )
    return out


def cycles(edges: list[Edge]) -> list[str]:
    """One message per import cycle (a strongly connected set of modules), naming its edges."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is small (recursion is fine)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in components:
        ties = sorted(f"{a} -> {b} ({where})" for a, b, where in edges if a in comp and b in comp)
        out.append(f"import cycle between {', '.join(sorted(comp))}: " + "; ".join(ties))
    return out


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules(SRC) if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in {__file__}): {missing}"


def test_no_import_cycles() -> None:
    found = cycles(import_edges())
    assert not found, "\n".join(found)


def test_no_import_runs_up_the_layers() -> None:
    found = upward_imports(import_edges())
    assert not found, "\n".join(found)


def test_the_checks_name_the_offending_edge(tmp_path: Path) -> None:
    """The checker itself: a package with a cycle and an upward import is caught."""
    pkg = tmp_path / "memdiag"
    (pkg / "leaks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text("def f():\n    from .sample import Sample\n")
    (pkg / "sample.py").write_text("from . import registry\nclass Sample: ...\n")
    leaks = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..service import X\n"
    (pkg / "leaks" / "__init__.py").write_text(leaks)
    (pkg / "service.py").write_text("import importlib\nimportlib.import_module('memdiag.registry')\n")
    edges = import_edges(tmp_path)
    assert ("memdiag.registry", "memdiag.sample", "memdiag/registry.py:2") in edges
    assert ("memdiag.service", "memdiag.registry", "memdiag/service.py:2") in edges
    (cycle,) = cycles(edges)
    assert "memdiag.registry -> memdiag.sample (memdiag/registry.py:2)" in cycle
    assert "memdiag.sample -> memdiag.registry (memdiag/sample.py:1)" in cycle
    assert layer_of("memdiag.brand_new") is None and layer_of("memdiag") is not None  # the face alone
    up = upward_imports(edges)
    assert any(m.startswith("memdiag.registry (layer 'registry') imports memdiag.sample") for m in up), up
    assert any(m.startswith("memdiag.leaks (layer 'leaks and processes') imports memdiag.service") for m in up), up


def test_parts_below_the_service_find_the_shared_monitor_through_the_registry() -> None:
    """leaks imports no service: without one loaded it says what to do; once the service
    is imported, the shared instance is found through registry.shared_monitor()."""
    code = (
        "import sys\n"
        "from memdiag import leaks\n"
        "from memdiag.errors import MemdiagError\n"
        "assert 'memdiag.service' not in sys.modules\n"
        "try:\n"
        "    leaks.get_detector()\n"
        "except MemdiagError as exc:\n"
        "    print('error:', exc)\n"
        "import memdiag.service\n"
        "det = leaks.get_detector()\n"
        "print('same:', det is leaks.get_detector(memdiag.service.MemoryDiagnostics.get_instance()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "error: no memdiag monitor exists yet: call memdiag.start() or pass the instance" in out.stdout
    assert "same: True" in out.stdout
