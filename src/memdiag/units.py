"""Human units for people-facing output."""

from __future__ import annotations

__all__ = ["MIB", "human_bytes"]

MIB = 1024 * 1024  # bytes in a MiB; the configuration's "_mb" fields are MiB too

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float | int | None, precision: int = 1, *, signed: bool = False) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``None`` -> ``"-"``; binary units, as ``free -h`` uses.

    Negative sizes keep their sign; ``signed`` also marks positive ones with ``+``.

    >>> human_bytes(0), human_bytes(1023), human_bytes(5 * 1024**3)
    ('0 B', '1023 B', '5.0 GiB')
    """
    if n is None:
        return "-"
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    value = float(abs(n))
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{sign}{int(value)} B"
            return f"{sign}{value:.{precision}f} {unit}"
        value /= 1024
    return f"{sign}{value:.{precision}f} {_UNITS[-1]}"  # pragma: no cover
