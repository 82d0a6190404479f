"""The package is the pipeline it claims to be: no import cycles, no import up the layers,
no function over 60 lines without a written reason.

Every ``import`` and ``from ... import`` in ``src/memdiag`` is read with ``ast``, at any
depth (imports inside functions, under ``TYPE_CHECKING``, in ``try`` blocks) plus
``importlib.import_module("memdiag...")`` with a literal name. The layers below are the
architecture of docs/architecture.md; a module may import its own layer and the layers
under it, never one above, and no set of modules may import each other in a loop.
A new module must be given a layer here.

A function's length is counted from its ``def`` line to its last line, docstring and
comments included (decorators not): what a reader has to take in, and the figure issue 13
quoted. A nested function counts inside its enclosing one and on its own. Over
:data:`MAX_FUNCTION_LINES` a function needs an entry in :data:`LONG_FUNCTIONS` with the
reason it stays whole.
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
            "memdiag._record",
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


def _extension_modules(src: Path) -> set[str]:
    """The C extension modules (``memdiag/.../NAME.c``, built by setup.py): import targets
    with no Python to read, and they import nothing of the package."""
    return {".".join(path.relative_to(src).with_suffix("").parts) for path in (src / "memdiag").rglob("*.c")}


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
    known = set(modules) | _extension_modules(src)
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = _imported(node, package)
            if not names:
                continue
            # `from pkg import sub` imports the module pkg.sub; `from mod import name`, mod.
            targets = {n for n in names[1:] if n in known} or {n for n in names[:1] if n in known}
            if isinstance(node, ast.Import):
                targets = {n for n in names if n in known}
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
    (pkg / "leaks" / "_native.c").write_text("/* a C extension module */\n")
    (pkg / "leaks" / "live.py").write_text("from . import _native\n")
    edges = import_edges(tmp_path)
    # `from . import _native` loads the extension module, not the package's __init__
    assert [e for e in edges if e[0] == "memdiag.leaks.live"] == [
        ("memdiag.leaks.live", "memdiag.leaks._native", "memdiag/leaks/live.py:1")
    ]
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


# -- function length ----------------------------------------------------------------------

MAX_FUNCTION_LINES = 60

# "path under src:Qualified.name" -> why it may be longer than MAX_FUNCTION_LINES. An
# entry whose function is gone or short again fails too (remove it), except a "pending"
# one: another engineer is splitting it this session, and its entry is expected to go.
LONG_FUNCTIONS: dict[str, str] = {
    "memdiag/cache/fastpaths.py:_TinyLFUCache.set": (
        "inlined on purpose for speed: the policy's put and victim choice in one call on every "
        "cache miss (bench_cache.py; a test compares it decision by decision with the policy)"
    ),
    "memdiag/cache/fastpaths.py:_TinyLFUCache.get": (
        "inlined on purpose for speed: the lock-free hit and the policy's lookup in one call on "
        "every cache read (bench_cache.py; a test compares it with the policy)"
    ),
}


def function_lengths(src: Path = SRC) -> dict[str, tuple[int, str]]:
    """``{"path:Qualified.name": (lines, "path:line")}`` for every function and method."""
    out: dict[str, tuple[int, str]] = {}

    def visit(node: ast.AST, path: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                assert child.end_lineno is not None
                out[f"{path}:{name}"] = (child.end_lineno - child.lineno + 1, f"{path}:{child.lineno}")
                visit(child, path, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, path, prefix + child.name + ".")
            else:
                visit(child, path, prefix)

    for file in sorted((src / "memdiag").rglob("*.py")):
        path = file.relative_to(src).as_posix()
        visit(ast.parse(file.read_text(encoding="utf-8"), str(file)), path, "")
    return out


def long_functions(lengths: dict[str, tuple[int, str]], allowed: dict[str, str]) -> list[str]:
    """One message per function over the limit without an entry in ``allowed``."""
    return [
        f"{name.partition(':')[2]} at {where} is {n} lines (over {MAX_FUNCTION_LINES}): split it into "
        f"steps with one job each, or add it to LONG_FUNCTIONS in {__file__} with the reason it stays whole"
        for name, (n, where) in sorted(lengths.items())
        if n > MAX_FUNCTION_LINES and name not in allowed
    ]


def stale_entries(lengths: dict[str, tuple[int, str]], allowed: dict[str, str]) -> list[str]:
    """One message per allowlist entry (not pending) naming no function over the limit."""
    out = []
    for name, reason in sorted(allowed.items()):
        if reason.startswith("pending"):
            continue
        if name not in lengths:
            out.append(f"LONG_FUNCTIONS names {name}, which does not exist: remove or rename the entry")
        elif lengths[name][0] <= MAX_FUNCTION_LINES:
            n, where = lengths[name]
            out.append(f"{name} at {where} is {n} lines now: remove its LONG_FUNCTIONS entry")
    return out


def test_no_function_over_60_lines_without_a_reason() -> None:
    found = long_functions(function_lengths(), LONG_FUNCTIONS)
    assert not found, "\n".join(found)


def test_every_long_function_entry_is_still_needed() -> None:
    assert all(reason.strip() for reason in LONG_FUNCTIONS.values()), "every entry needs its reason"
    found = stale_entries(function_lengths(), LONG_FUNCTIONS)
    assert not found, "\n".join(found)


def test_the_length_check_names_function_place_and_length(tmp_path: Path) -> None:
    """The checker itself: a 61-line method is caught with its file:line and length; 60
    lines pass, nested functions count on their own, and the allowlist is honoured."""
    pkg = tmp_path / "memdiag"
    pkg.mkdir()

    def lines(n: int, indent: str) -> str:
        return f"{indent}x = 1\n" * n

    method = "class Box:\n    @staticmethod\n    def long():\n" + lines(59, " " * 8)  # lines 3-62: 60
    nested = "def outer():\n    def inner():\n" + lines(59, " " * 8) + "    return inner\n"  # 63-124: 62
    (pkg / "mod.py").write_text(method + nested)
    (pkg / "other.py").write_text("async def big():\n" + lines(61, "    "))  # 62 lines
    lengths = function_lengths(tmp_path)
    assert lengths["memdiag/mod.py:Box.long"] == (60, "memdiag/mod.py:3")
    assert lengths["memdiag/mod.py:outer"] == (62, "memdiag/mod.py:63")
    assert lengths["memdiag/mod.py:outer.inner"] == (60, "memdiag/mod.py:64")
    found = long_functions(lengths, {})
    assert len(found) == 2, found
    assert found[0].startswith("outer at memdiag/mod.py:63 is 62 lines (over 60)"), found
    assert found[1].startswith("big at memdiag/other.py:1 is 62 lines (over 60)"), found
    assert long_functions(lengths, {"memdiag/mod.py:outer": "why", "memdiag/other.py:big": "why"}) == []
    stale = stale_entries(lengths, {"memdiag/mod.py:Box.long": "why", "memdiag/gone.py:f": "why", "x:y": "pending"})
    assert stale == [
        "LONG_FUNCTIONS names memdiag/gone.py:f, which does not exist: remove or rename the entry",
        "memdiag/mod.py:Box.long at memdiag/mod.py:3 is 60 lines now: remove its LONG_FUNCTIONS entry",
    ], stale


# -- annotations: every name a signature or class body uses is defined ----------------------


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines at its top level (also under ``if TYPE_CHECKING:`` and ``try``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) or (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node in tree.body
        ):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def undefined_annotation_names(root: Path = SRC) -> list[str]:
    """``file:line: name`` for each name in an annotation (strings included: the package
    uses ``from __future__ import annotations``) that its module never defines or imports."""
    import builtins

    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        known = _defined_names(tree) | set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                anns = [a.annotation for a in every if a is not None] + [node.returns]
            elif isinstance(node, ast.AnnAssign):
                anns = [node.annotation]
            else:
                continue
            for ann in filter(None, anns):
                text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else None
                expr = ann if text is None else ast.parse(text, mode="eval")
                for name in {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)} - known:
                    out.append(f"{path.relative_to(root)}:{ann.lineno}: {name}")
    return out


def test_every_name_in_an_annotation_is_defined() -> None:
    found = undefined_annotation_names()
    assert not found, "annotations naming nothing (import it, under TYPE_CHECKING if need be):\n" + "\n".join(found)
