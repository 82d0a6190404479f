"""How :class:`~memdiag.cache.SharedPromptCache` stores values and counts their bytes.

The cache is bounded by the memory it really holds, so every entry is charged:

* its key: ``sys.getsizeof(key)`` (keys are ``str``; exact, O(1));
* its stored value:

  - ``str`` and ``bytes`` (exactly those types) are stored as they are and charged
    ``sys.getsizeof(value)``, which is exact and O(1) for them;
  - ``None``, ``bool``, ``int`` and ``float`` are immutable and stored as they are,
    charged ``sys.getsizeof(value)`` (exact);
  - anything else (dicts, lists, tuples, sets, ``bytearray``, dataclasses, subclasses
    of ``str``...) is stored **serialised** with :mod:`pickle` (highest protocol) and
    charged the exact size of the pickled ``bytes``. Serialising costs time
    proportional to the value once, in ``set``, outside the cache lock; every ``get``
    returns a fresh copy (so a caller mutating what it got can neither corrupt the
    cache nor change its size behind the accounting). No deep ``getsizeof`` walk is
    ever done;

* a fixed :data:`ENTRY_OVERHEAD` for the cache's own bookkeeping of one entry (hash
  table slots, linked-list node, entry record, expiry time, TTL index slot). It was
  measured with :mod:`tracemalloc` on CPython 3.10-3.13 at about 220-330 bytes
  depending on table fill; charging it is what keeps a cache full of tiny values
  within its bound.

Pickled values are produced and read only by this process (never from outside), so
unpickling them is as safe as the objects that were stored.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

__all__ = ["ENTRY_OVERHEAD", "MIN_ENTRY_CHARGE", "encode_value", "key_size"]

#: Bytes charged per entry for the cache's own structures (see the module docstring).
ENTRY_OVERHEAD = 272

#: The least any entry is charged (an empty key, the value ``None``): a cache of
#: ``max_bytes`` never holds more than ``max_bytes // MIN_ENTRY_CHARGE`` entries, which
#: bounds what a policy sizes by the entry count (the TinyLFU sketch).
MIN_ENTRY_CHARGE = sys.getsizeof("") + sys.getsizeof(None) + ENTRY_OVERHEAD

_getsizeof = sys.getsizeof
_AS_IS = frozenset({str, bytes, int, float, bool, type(None)})
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def key_size(key: str) -> int:
    """Bytes charged for ``key`` (its exact ``sys.getsizeof``)."""
    return _getsizeof(key)


def encode_value(value: Any) -> tuple[Any, int, bool]:
    """Turn ``value`` into what the cache stores.

    Args:
        value: the value given to ``set``.

    Returns:
        ``(stored, size, pickled)``: the object kept, its exact size in bytes, and
        whether it must be unpickled on the way out.

    Raises:
        TypeError: the value is neither stored as-is nor picklable.
    """
    if type(value) in _AS_IS:
        return value, _getsizeof(value), False
    try:
        blob = pickle.dumps(value, protocol=_PROTOCOL)
    except Exception as exc:  # pickling can raise almost anything (PicklingError, TypeError...)
        raise TypeError(
            f"SharedPromptCache stores str, bytes, numbers and picklable values; "
            f"cannot store a {type(value).__name__}: {exc}"
        ) from exc
    return blob, _getsizeof(blob), True


decode_value = pickle.loads
