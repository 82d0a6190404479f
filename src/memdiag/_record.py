"""Records: what ``@dataclass(frozen=True, slots=True)`` gives memdiag's core types,
without importing :mod:`dataclasses`.

The command line's outside views (``memdiag profile`` with no service, ``profile --pid N``)
build the same samples, configuration and reports as a service, and a command starts in
<= 50 ms (issue 17): ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``,
``tokenize``), about 42 M instructions (~13 ms here) before its first class, and each class
it builds compiles five methods more. :func:`record` builds the same class from the same
class body (annotations, defaults, :func:`field`) with shared, generic methods and no code
generation: ``__slots__``, ``__init__`` (positional or keyword, defaults, default
factories, ``__post_init__``), ``__repr__``, ``__eq__`` and ``__hash__`` over the compared
fields, ``__match_args__``, frozen ``__setattr__``/``__delattr__``, pickling and copying.

:mod:`dataclasses`' functions still work on a record (``dataclasses.fields``, ``replace``,
``asdict``, ``is_dataclass``): its ``__dataclass_fields__`` is built on first use, from a
dataclass made by :func:`dataclasses.make_dataclass` with the same fields (the import is
paid then, by the code that asked). Inside memdiag, :func:`fields`, :func:`replace` and
:func:`asdict` do the same jobs without the import.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = [
    "Field",
    "FrozenInstanceError",
    "asdict",
    "field",
    "fields",
    "mutable_record",
    "record",
    "replace",
    "tuple_record",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a record (as ``dataclasses.FrozenInstanceError``)."""


class Field:
    """One field of a record: its name, annotation (a string), default or default
    factory, whether it is compared (``__eq__``, ``__hash__``) and its metadata."""

    __slots__ = ("compare", "default", "default_factory", "metadata", "name", "repr", "type")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Any = MISSING,
        compare: bool = True,
        metadata: dict[str, Any] | None = None,
        repr: bool = True,
    ) -> None:
        self.name = ""
        self.repr = repr
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.metadata = metadata if metadata is not None else {}

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, type={self.type!r}, default={self.default!r})"


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    compare: bool = True,
    metadata: dict[str, Any] | None = None,
    repr: bool = True,
) -> Any:
    """A field with a default (or a factory of one), left out of comparisons if
    ``compare`` is false and out of ``repr`` if ``repr`` is false, with ``metadata`` (as
    :func:`dataclasses.field`)."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, compare, metadata, repr)


def fields(obj: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    return (obj if isinstance(obj, type) else type(obj)).__record_fields__  # type: ignore[no-any-return,attr-defined]


def asdict(obj: Any) -> dict[str, Any]:
    """``{field: value}`` of a record, shallow (memdiag's records hold plain values)."""
    return {f.name: getattr(obj, f.name) for f in type(obj).__record_fields__}


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes``, made (and checked) by its class's ``__init__``."""
    return type(obj)(**{**asdict(obj), **changes})


# -- the methods every record shares ------------------------------------------------------


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    spec: tuple[Field, ...] = cls.__record_fields__
    if len(args) > len(spec):
        raise TypeError(f"{cls.__name__}() takes {len(spec)} positional arguments but {len(args)} were given")
    setattr_ = object.__setattr__
    used = 0
    for i, f in enumerate(spec):
        name = f.name
        if i < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            value = args[i]
        elif name in kwargs:
            value = kwargs[name]
            used += 1
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        setattr_(self, name, value)
    if used != len(kwargs):
        names = {f.name for f in spec}
        extra = next(k for k in kwargs if k not in names)
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {extra!r}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _repr(self: Any) -> str:
    body = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in type(self).__record_fields__ if f.repr)
    return f"{type(self).__qualname__}({body})"


def _key(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in type(self).__record_compare__)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(_key(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _reduce(self: Any) -> tuple[Any, tuple[Any, ...]]:
    return type(self), tuple(getattr(self, f.name) for f in type(self).__record_fields__)


class _DataclassFields:
    """``__dataclass_fields__`` on first use: :mod:`dataclasses`' own fields of the same
    record (made by ``make_dataclass``), so its functions accept the record."""

    def __get__(self, obj: Any, owner: type) -> dict[str, Any]:
        import dataclasses

        specs = []
        for f in owner.__record_fields__:
            kw: dict[str, Any] = {"compare": f.compare, "metadata": f.metadata, "repr": f.repr}
            if f.default is not MISSING:
                kw["default"] = f.default
            elif f.default_factory is not MISSING:
                kw["default_factory"] = f.default_factory
            specs.append((f.name, f.type, dataclasses.field(**kw)))
        shadow = dataclasses.make_dataclass(owner.__name__, specs, frozen=True)
        found: dict[str, Any] = shadow.__dataclass_fields__  # type: ignore[attr-defined]
        type.__setattr__(owner, "__dataclass_fields__", found)
        return found


_SHARED = {
    "__init__": _init,
    "__repr__": _repr,
    "__eq__": _eq,
    "__setattr__": _frozen_setattr,
    "__delattr__": _frozen_delattr,
    "__reduce__": _reduce,
}


def _fields_of(cls: type, ns: dict[str, Any]) -> tuple[Field, ...]:
    """The fields declared by ``cls``'s body (its defaults taken out of ``ns``)."""
    out = []
    # the class body's own annotations (inspect.get_annotations is the import avoided)
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = ns.pop(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name, f.type = name, annotation
        if out and f.default is MISSING and f.default_factory is MISSING:
            prev = out[-1]
            if prev.default is not MISSING or prev.default_factory is not MISSING:
                raise TypeError(f"non-default field {name!r} follows a field with a default")
        out.append(f)
    return tuple(out)


def _build(cls: type[T], ns: dict[str, Any], spec: tuple[Field, ...], match_args: tuple[str, ...]) -> type[T]:
    """``cls`` made anew from ``ns`` with the record's bookkeeping."""
    ns["__match_args__"] = match_args
    ns["__record_fields__"] = spec
    ns["__record_compare__"] = tuple(f.name for f in spec if f.compare)
    ns["__dataclass_fields__"] = _DataclassFields()
    new = type(cls)(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


def record(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, slotted record (the class is rebuilt with ``__slots__``)."""
    ns = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    spec = _fields_of(cls, ns)
    for name, fn in _SHARED.items():
        ns.setdefault(name, fn)
    if ns.get("__hash__") is None:  # a body that defines __eq__ sets __hash__ = None
        ns["__hash__"] = _hash
    ns["__slots__"] = tuple(f.name for f in spec)
    return _build(cls, ns, spec, ns["__slots__"])


def mutable_record(cls: type[T] | None = None, /, *, eq: bool = True) -> Any:
    """What a plain ``@dataclass`` (``eq=True``) or ``@dataclass(eq=False)`` gives: the
    same ``__init__`` (defaults, factories, ``__post_init__``), ``__repr__``, ``__eq__``
    over the compared fields (then unhashable, as a dataclass). No ``__slots__`` and no
    frozen attributes: a mutable record stays an ordinary class with a ``__dict__`` (and
    pickles as one), as the dataclass it replaces was."""

    def build(c: type[T]) -> type[T]:
        ns = {k: v for k, v in c.__dict__.items() if k not in ("__dict__", "__weakref__")}
        spec = _fields_of(c, ns)
        ns.setdefault("__init__", _init)
        ns.setdefault("__repr__", _repr)
        if eq:
            ns.setdefault("__eq__", _eq)
            ns.setdefault("__hash__", None)
        return _build(c, ns, spec, tuple(f.name for f in spec))

    return build if cls is None else build(cls)


def tuple_record(cls: type[T]) -> type[T]:
    """``cls`` as a NamedTuple (its annotations the fields, its values their defaults, its
    methods kept), made by :func:`collections.namedtuple`: ``typing.NamedTuple`` needs
    ``typing`` (~5 ms at a command's start) and turns string annotations into
    ``ForwardRef`` objects, the first of which compiles (~3 ms more)."""
    from collections import namedtuple

    ns = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    names = list(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 (inspect is avoided)
    defaults = [ns.pop(name) for name in names if name in ns]
    base = namedtuple(cls.__name__, names, defaults=defaults, module=cls.__module__)  # type: ignore[misc]
    ns["__slots__"] = ()
    new = type(cls.__name__, (base,), ns)
    new.__qualname__ = cls.__qualname__
    return new  # type: ignore[return-value]


if TYPE_CHECKING:  # type checkers read a record as the dataclass it mirrors
    from dataclasses import dataclass as _dc

    record = _dc(frozen=True)  # type: ignore[assignment]
    mutable_record = _dc  # type: ignore[assignment]
    tuple_record = _dc(frozen=True)  # type: ignore[assignment]  # a NamedTuple at run time
