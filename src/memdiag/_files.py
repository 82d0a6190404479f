"""Private files written atomically: config, runtime entries, flight-recorder dumps."""

from __future__ import annotations

import contextlib
import os

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, with ``mode`` (0600: it may hold a secret).

    A temporary file in the same directory is written, fsynced, chmod-ed and renamed over
    ``path``: readers see the old file or the new one, never a torn one, even if the
    process is killed mid-write (the evidence of an OOM kill must survive it). Missing
    parent directories are made with mode 0700.
    """
    import tempfile  # only needed when writing

    target = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(parent, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
