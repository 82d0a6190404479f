"""The lines that insert into a growing container, read from the holder's code.

A sampled heap names where an entry's bytes were *allocated*: for a dict keyed by fresh
strings that is often the line that builds the key (``sid = f"session-{uuid4()}"``), not
the one that keeps the entry (``_SESSIONS[sid] = session``), which is where a fix goes
(issue 14: "blamed on the insertion ... not on the key expression"). For a container held
by a module global, the insertion is in the module's own code: every function and method
defined in that module (nested ones and comprehensions included) is read for

* ``NAME[key] = value``: the global loaded, then a subscript store with no read of it in
  between (``other[k] = NAME[j]`` reads it first: not an insertion);
* ``NAME.append(...)``, ``.add``, ``.setdefault``, ``.update``, ``.insert``, ``.extend``,
  ``.appendleft``, ``.extendleft``, ``.__setitem__``: the method loaded right after it.

For a container held as an attribute (``self._history`` of a long-lived object, a class's
``_registry``), the same stores into that attribute of any object, in the module that
defines the holder's class. For a container that is an item of such a dict (a
``defaultdict(list)`` of subscribers), the stores into an item of it:
``self._subs[topic].append(fn)``.

For an ``lru_cache`` the insertion is the cache itself: the decorated function's
definition is named (where ``maxsize`` is set).

Bytecode is read with :mod:`opcode` (no :mod:`dis`, which a running monitor does not
import), CPython 3.10-3.13 layouts; anything unexpected gives no line, never an error.
"""

from __future__ import annotations

import opcode
import sys
import types
from typing import Any

__all__ = ["insertion_sites", "lru_site"]

_METHODS = frozenset(
    {"append", "add", "setdefault", "update", "insert", "extend", "appendleft", "extendleft", "__setitem__"}
)
_OP = opcode.opmap
_LOAD_GLOBAL = _OP.get("LOAD_GLOBAL")
_LOAD_METHOD = _OP.get("LOAD_METHOD")  # <= 3.11
_LOAD_ATTR = _OP.get("LOAD_ATTR")
_STORE_SUBSCR = _OP.get("STORE_SUBSCR")
_BINARY_SUBSCR = _OP.get("BINARY_SUBSCR")
_CACHE = _OP.get("CACHE")
_EXTENDED_ARG = _OP.get("EXTENDED_ARG")
# A read or a use of the loaded global before any subscript store: not an insertion.
_BREAK_NAMES = [
    "BINARY_SUBSCR",
    "CALL",
    "CALL_FUNCTION",
    "CALL_METHOD",
    "CALL_FUNCTION_KW",
    "CALL_FUNCTION_EX",
    "PRECALL",
    "LOAD_GLOBAL",
    "STORE_FAST",
    "STORE_NAME",
    "STORE_GLOBAL",
    "STORE_ATTR",
    "RETURN_VALUE",
    "DELETE_SUBSCR",
    "GET_ITER",
    "FOR_ITER",
    "COMPARE_OP",
    "CONTAINS_OP",
]
_BREAKS = frozenset(_OP[n] for n in _BREAK_NAMES if n in _OP)
_NEW_ARGS = sys.version_info >= (3, 11)  # LOAD_GLOBAL's arg is namei << 1 (+ a NULL flag)
_ATTR_FLAG = sys.version_info >= (3, 12)  # LOAD_ATTR's arg is namei << 1 (+ a method flag)
MAX_CODES = 4000  # code objects read per module at most
MAX_SITES = 8


def _instructions(code: types.CodeType) -> list[tuple[int, int, int]]:
    """``(offset, op, arg)`` of ``code``, caches left out, EXTENDED_ARG folded."""
    raw = code.co_code
    out = []
    ext = 0
    for i in range(0, len(raw) - 1, 2):
        op, arg = raw[i], raw[i + 1]
        if op == _CACHE:
            continue
        if op == _EXTENDED_ARG:
            ext = (ext | arg) << 8
            continue
        out.append((i, op, ext | arg))
        ext = 0
    return out


def _line_at(code: types.CodeType) -> Any:
    spans = [(start, end, line) for start, end, line in code.co_lines() if line is not None]

    def at(offset: int) -> int | None:
        for start, end, line in spans:
            if start <= offset < end:
                return int(line)
        return None

    return at


def _loads(op: int, arg: int, names: tuple[str, ...], name: str, attribute: bool) -> bool:
    """Whether the instruction loads the global ``name`` (or, ``attribute``, the attribute
    ``name`` of whatever is on the stack: ``self.name``, ``Class.name``)."""
    if attribute:
        idx = arg >> 1 if _ATTR_FLAG else arg
        return op == _LOAD_ATTR and idx < len(names) and names[idx] == name
    idx = arg >> 1 if _NEW_ARGS else arg
    return op == _LOAD_GLOBAL and idx < len(names) and names[idx] == name


def _method_load(op: int, arg: int) -> bool:
    return op == _LOAD_METHOD or (op == _LOAD_ATTR and _ATTR_FLAG and bool(arg & 1))


def _stored_into(ins: list[tuple[int, int, int]], k: int) -> bool:
    """A subscript store into what instruction ``k`` loaded, its key (and the value) read
    after it: attribute reads are part of the key (``REG[self.sid] = self``), a call, a
    method or a read of the container is not an insertion."""
    for _o, op2, a2 in ins[k + 1 : k + 16]:
        if op2 == _STORE_SUBSCR:
            return True
        if op2 in _BREAKS or _method_load(op2, a2):
            return False
    return False


def _subscript_after(ins: list[tuple[int, int, int]], k: int) -> int | None:
    """The index of the subscript read of what instruction ``k`` loaded (``NAME[key]``, the
    key read in between), or None."""
    for j in range(k + 1, min(len(ins), k + 12)):
        op, arg = ins[j][1], ins[j][2]
        if op == _BINARY_SUBSCR:
            return j
        if op in _BREAKS or _method_load(op, arg):
            return None
    return None


def _inserts_in(code: types.CodeType, name: str, attribute: bool = False, nested: bool = False) -> list[int]:
    """Lines of ``code`` that insert into the global ``name`` (``attribute``: into the
    attribute ``name`` of any object; ``nested``: into one of its items, as
    ``NAME[topic].append(fn)``)."""
    names = code.co_names
    if name not in names:
        return []
    ins = _instructions(code)
    lines: list[int] = []
    at = None
    for k, (offset, op, arg) in enumerate(ins):
        if not _loads(op, arg, names, name, attribute):
            continue
        if nested:
            j = _subscript_after(ins, k)
            if j is None:
                continue
            k = j
        nxt = ins[k + 1] if k + 1 < len(ins) else None
        if nxt is not None and nxt[1] in (_LOAD_METHOD, _LOAD_ATTR):
            j = nxt[2] >> 1 if (nxt[1] == _LOAD_ATTR and _ATTR_FLAG) else nxt[2]
            hit = j < len(names) and names[j] in _METHODS
        else:
            hit = _stored_into(ins, k)
        if hit:
            at = at or _line_at(code)
            line = at(offset)
            if line is not None and line not in lines:
                lines.append(line)
    return lines


def _codes_of(module: types.ModuleType) -> list[types.CodeType]:
    """The code of every function and method defined in ``module``, nested code included."""
    modname = module.__name__
    todo: list[types.CodeType] = []
    seen_classes: set[int] = set()

    def take(obj: Any, depth: int = 0) -> None:
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if isinstance(obj, types.FunctionType):
            if getattr(obj, "__module__", None) == modname:
                todo.append(obj.__code__)
        elif isinstance(obj, type) and getattr(obj, "__module__", None) == modname and depth < 3:
            if id(obj) in seen_classes:
                return
            seen_classes.add(id(obj))
            for v in list(vars(obj).values()):
                take(v, depth + 1)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset):
                if f is not None:
                    take(f, depth)

    for v in list(vars(module).values()):
        take(v)
    out: list[types.CodeType] = []
    seen: set[int] = set()
    while todo and len(out) < MAX_CODES:
        code = todo.pop()
        if id(code) in seen:
            continue
        seen.add(id(code))
        out.append(code)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return out


def insertion_sites(
    module_name: str, name: str, attribute: bool = False, nested: bool = False
) -> list[dict[str, Any]]:
    """``[{"file", "line"}]``: where the module's own code inserts into its global ``name``
    (``attribute``: into an attribute ``name``, as ``self.name.append(x)`` or
    ``Class.name[k] = v`` in the methods of the class holding it; ``nested``: into one of
    its items, ``self.name[topic].append(fn)``); empty when it cannot tell: a module not
    imported, inserts only through an alias."""
    module = sys.modules.get(module_name)
    if module is None:
        return []
    out: list[dict[str, Any]] = []
    try:
        for code in _codes_of(module):
            for line in _inserts_in(code, name, attribute, nested):
                site = {"file": code.co_filename, "line": line}
                if site not in out:
                    out.append(site)
                if len(out) >= MAX_SITES:
                    return out
    except Exception:  # never into the host: an unexpected layout gives no line
        return []
    return sorted(out, key=lambda s: (s["file"], s["line"]))


def lru_site(wrapper: Any) -> dict[str, Any] | None:
    """The definition of the function an ``lru_cache`` wraps (its decorator's line)."""
    code = getattr(getattr(wrapper, "__wrapped__", None), "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    return {"file": code.co_filename, "line": code.co_firstlineno}
