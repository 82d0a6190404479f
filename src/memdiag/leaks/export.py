"""The live heap as data, and in the formats existing viewers open: pprof and speedscope.

:func:`heap_data` turns a :class:`~memdiag.leaks.heapprof.HeapProfile` into plain JSON
(``GET /api/memory/heap``); :func:`to_pprof` and :func:`to_speedscope` take that JSON, so
the CLI can write either file from a service it only reaches over HTTP.

pprof: a gzipped ``perftools.profiles.Profile`` protobuf (encoded here, no dependency),
with Go's four heap sample types (``alloc_objects``, ``alloc_space``, ``inuse_objects``,
``inuse_space``; ``inuse_space`` the default) and one location per frame; ``go tool
pprof`` and ``pprof -http`` open it. speedscope: the file format's ``sampled`` profile
of live bytes per stack (outermost frame first), one profile per domain.
"""

from __future__ import annotations

import gzip
import time
from typing import Any

from .heapprof import HeapProfile

__all__ = ["heap_data", "to_pprof", "to_speedscope", "write_pprof", "write_speedscope"]


def heap_data(prof: HeapProfile, limit: int = 5000) -> dict[str, Any]:
    """Plain data of a profile: its figures and up to ``limit`` sites by live bytes."""
    sites = sorted(prof.sites, key=lambda s: s.live_bytes, reverse=True)[:limit]
    return {
        "backend": prof.backend,
        "taken_at": time.time() - (time.monotonic() - prof.taken_at),
        "interval_bytes": prof.interval_bytes,
        "samples_live": prof.samples_live,
        "dropped": prof.dropped,
        "overhead_bytes": prof.overhead_bytes,
        "sites_total": len(prof.sites),
        "sites": [
            {
                "stack": [[f.filename, f.lineno, f.function] for f in s.stack],
                "domain": s.domain,
                "live_bytes": s.live_bytes,
                "live_count": s.live_count,
                "alloc_bytes": s.alloc_bytes,
                "alloc_count": s.alloc_count,
            }
            for s in sites
        ],
    }


# -- protobuf, the little pprof needs --------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 values as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _field_bytes(field: int, data: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(data)) + data


def _packed(field: int, values: list[int]) -> bytes:
    return _field_bytes(field, b"".join(_varint(v) for v in values))


def to_pprof(data: dict[str, Any]) -> bytes:
    """A gzipped pprof ``Profile`` of :func:`heap_data`'s output."""
    strings: dict[str, int] = {"": 0}

    def s(text: str) -> int:
        return strings.setdefault(text, len(strings))

    functions: dict[tuple[str, str], int] = {}
    locations: dict[tuple[str, int, str], int] = {}
    fn_msgs: list[bytes] = []
    loc_msgs: list[bytes] = []
    samples: list[bytes] = []

    def location(file: str, line: int, func: str) -> int:
        key = (file, int(line), func)
        lid = locations.get(key)
        if lid is None:
            fkey = (file, func or "?")
            fid = functions.get(fkey)
            if fid is None:
                fid = functions[fkey] = len(functions) + 1
                name = f"{func or '?'} ({file.rsplit('/', 1)[-1]})"
                fn_msgs.append(_field_varint(1, fid) + _field_varint(2, s(name)) + _field_varint(3, s(func or "?"))
                               + _field_varint(4, s(file)))
            lid = locations[key] = len(locations) + 1
            line_msg = _field_varint(1, fid) + _field_varint(2, int(line))
            loc_msgs.append(_field_varint(1, lid) + _field_bytes(4, line_msg))
        return lid

    for site in data.get("sites", []):
        ids = [location(str(f[0]), int(f[1]), str(f[2] if len(f) > 2 else "")) for f in site["stack"]]
        if site.get("domain") == "native":
            ids.insert(0, location("<native>", 0, "native code"))
        values = [round(site["alloc_count"]), round(site["alloc_bytes"]), round(site["live_count"]),
                  round(site["live_bytes"])]
        label = _field_varint(1, s("domain")) + _field_varint(2, s(str(site.get("domain"))))
        samples.append(_packed(1, ids) + _packed(2, values) + _field_bytes(3, label))
    types = [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")]
    out = bytearray()
    for t, u in types:
        out += _field_bytes(1, _field_varint(1, s(t)) + _field_varint(2, s(u)))
    for m in samples:
        out += _field_bytes(2, m)
    for m in loc_msgs:
        out += _field_bytes(4, m)
    for m in fn_msgs:
        out += _field_bytes(5, m)
    period_type = _field_varint(1, s("space")) + _field_varint(2, s("bytes"))
    default_type = s("inuse_space")
    comment = s(f"memdiag live heap ({data.get('backend')}, interval {data.get('interval_bytes')} bytes)")
    for text in strings:  # in index order: dicts keep insertion order
        out += _field_bytes(6, text.encode("utf-8"))
    out += _field_varint(9, int(float(data.get("taken_at") or time.time()) * 1e9))
    out += _field_bytes(11, period_type)
    out += _field_varint(12, int(data.get("interval_bytes") or 1))
    out += _packed(13, [comment])
    out += _field_varint(14, default_type)
    return gzip.compress(bytes(out))


def to_speedscope(data: dict[str, Any], name: str = "memdiag live heap") -> dict[str, Any]:
    """A speedscope file (``sampled`` profiles of live bytes, one per domain)."""
    frames: list[dict[str, Any]] = []
    index: dict[tuple[str, int, str], int] = {}
    by_domain: dict[str, tuple[list[list[int]], list[float]]] = {}
    for site in data.get("sites", []):
        stack = []
        for f in reversed(site["stack"]):  # speedscope: outermost frame first
            key = (str(f[0]), int(f[1]), str(f[2] if len(f) > 2 else ""))
            i = index.get(key)
            if i is None:
                i = index[key] = len(frames)
                frames.append({"name": f"{key[2] or '?'} {key[0].rsplit('/', 1)[-1]}:{key[1]}", "file": key[0],
                               "line": key[1]})
            stack.append(i)
        samples, weights = by_domain.setdefault(str(site.get("domain") or "python"), ([], []))
        samples.append(stack)
        weights.append(round(site["live_bytes"]))
    profiles = [
        {"type": "sampled", "name": f"{name} ({domain})", "unit": "bytes", "startValue": 0,
         "endValue": sum(w), "samples": smp, "weights": w}
        for domain, (smp, w) in by_domain.items()
    ]
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "memdiag",
    }


def _write_atomic(path: str, data: bytes) -> None:
    import os

    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_pprof(profile: HeapProfile, path: str) -> None:
    """Write ``profile`` to ``path`` as gzipped pprof (every site)."""
    _write_atomic(path, to_pprof(heap_data(profile, limit=len(profile.sites))))


def write_speedscope(profile: HeapProfile, path: str) -> None:
    """Write ``profile`` to ``path`` as speedscope JSON (every site)."""
    import json

    doc = to_speedscope(heap_data(profile, limit=len(profile.sites)))
    _write_atomic(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
