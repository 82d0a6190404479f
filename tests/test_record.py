"""memdiag's records (memdiag._record) behave as the frozen dataclasses they replaced:
construction, defaults, errors, repr, equality and hashing, immutability, pickling and
copying, and dataclasses' own functions; and building one imports no ``dataclasses``."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import memdiag
from memdiag._record import (
    FrozenInstanceError,
    asdict,
    field,
    fields,
    mutable_record,
    record,
    replace,
    tuple_record,
)
from memdiag.config import MemoryConfig
from memdiag.errors import ConfigError
from memdiag.probes.process import ProcStat
from memdiag.sample import ProcessMemory


@record
class Point:
    """A point."""

    x: int
    y: int = 0
    tags: dict[str, int] = field(default_factory=dict)
    seq: int = field(default=0, compare=False)

    @property
    def norm(self) -> int:
        return abs(self.x) + abs(self.y)


@dataclasses.dataclass(frozen=True)
class DPoint:
    x: int
    y: int = 0
    tags: dict[str, int] = dataclasses.field(default_factory=dict)
    seq: int = dataclasses.field(default=0, compare=False)


def test_construction_matches_a_dataclass() -> None:
    for args, kwargs in [((1,), {}), ((1, 2), {}), ((), {"x": 3, "y": 4}), ((5,), {"seq": 9})]:
        p, d = Point(*args, **kwargs), DPoint(*args, **kwargs)
        assert (p.x, p.y, p.tags, p.seq) == (d.x, d.y, d.tags, d.seq)
    assert Point(1).tags is not Point(1).tags  # a fresh default per instance
    assert Point(1, 2).norm == 3 and Point.__match_args__ == ("x", "y", "tags", "seq")
    for bad in [((), {}), ((1, 2, {}, 0, 5), {}), ((1,), {"x": 2}), ((1,), {"z": 2})]:
        with pytest.raises(TypeError):
            Point(*bad[0], **bad[1])
        with pytest.raises(TypeError):
            DPoint(*bad[0], **bad[1])


def test_repr_eq_hash_and_immutability() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags={}, seq=0)"
    assert Point(1, 2, seq=1) == Point(1, 2, seq=2)  # seq is not compared
    assert Point(1, 2) != Point(2, 1) and Point(1) != DPoint(1)
    assert hash(ProcessMemory(pid=1, rss=2)) == hash(ProcessMemory(pid=1, rss=2))
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.other = 1  # type: ignore[attr-defined]  # slotted: no __dict__
    assert not hasattr(p, "__dict__")


def test_pickle_copy_replace_and_dataclasses_functions() -> None:
    cfg = MemoryConfig(memory_threshold_mb=800)
    for clone in (pickle.loads(pickle.dumps(cfg)), copy.copy(cfg), copy.deepcopy(cfg)):
        assert clone == cfg and clone is not cfg
    assert replace(cfg, psi_threshold=30.0).psi_threshold == 30.0
    assert asdict(Point(1, 2)) == {"x": 1, "y": 2, "tags": {}, "seq": 0}
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "seq"]
    # dataclasses' functions accept a record (their fields are built on first use)
    assert dataclasses.is_dataclass(cfg) and dataclasses.is_dataclass(MemoryConfig)
    assert [f.name for f in dataclasses.fields(cfg)] == [f.name for f in fields(MemoryConfig)]
    assert dataclasses.fields(MemoryConfig)[1].metadata["min"] == 1.0
    assert dataclasses.replace(cfg, memory_threshold_mb=900).memory_threshold_mb == 900
    assert dataclasses.asdict(ProcessMemory(pid=1, rss=2))["rss"] == 2
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, memory_threshold_mb=-1)  # validated by __post_init__, as before


def test_the_core_records_import_no_dataclasses() -> None:
    code = (
        "import sys\n"
        "import memdiag.config, memdiag.sample, memdiag.pressure, memdiag.projection, memdiag.registry\n"
        "memdiag.config.MemoryConfig().updated(psi_threshold=5)\n"
        "print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))\n"
    )
    # -S skips site, and with it the editable install's path entry: name the source tree
    src = Path(memdiag.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@tuple_record
class Pair:
    """A pair."""

    a: int
    b: str = "x"

    @property
    def both(self) -> str:
        return f"{self.a}{self.b}"


class TPair(NamedTuple):
    a: int
    b: str = "x"


def test_tuple_record_is_the_namedtuple_it_declares() -> None:
    p, t = Pair(1), TPair(1)
    assert p == t == (1, "x") and Pair(1, "y") == TPair(1, "y") and hash(p) == hash(t)
    assert Pair._fields == TPair._fields == ("a", "b") and Pair._field_defaults == {"b": "x"}
    assert repr(Pair(2, "z")) == "Pair(a=2, b='z')" and Pair(2).both == "2x"
    assert type(p._replace(b="q")) is Pair and p._replace(b="q").b == "q"
    assert p._asdict() == {"a": 1, "b": "x"} and Pair._make([3, "w"]) == (3, "w")
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is Pair
    assert Pair.__doc__ == "A pair." and not hasattr(p, "__dict__")
    with pytest.raises(TypeError):
        Pair()
    st = ProcStat(1, "x", "S", 0, 1, 1, 5, 4096, 1, 1)
    assert st.vsize_bytes == 0 and not st.zombie and isinstance(st, tuple)


@mutable_record
class _Row:
    x: int
    items: list = field(default_factory=list)
    secret: int = field(default=3, repr=False)


@mutable_record(eq=False)
class _Handle:
    pid: int


def test_a_mutable_record_behaves_as_the_plain_dataclass_it_replaces() -> None:
    a, b = _Row(1), _Row(1)
    assert a == b and a.items is not b.items and repr(a) == "_Row(x=1, items=[])"
    a.x, a.extra = 2, "kept"  # mutable, with a __dict__
    assert a != b and pickle.loads(pickle.dumps(a)).extra == "kept"
    with pytest.raises(TypeError):
        hash(a)  # eq without frozen: unhashable, as a dataclass
    assert [f.name for f in dataclasses.fields(_Row)] == ["x", "items", "secret"]
    assert _Handle(1) != _Handle(1) and hash(_Handle(1)) is not None
