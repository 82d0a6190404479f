"""Start child processes that memdiag owns: a ``Popen`` subclass and two helpers.

``memdiag.Popen`` is ``subprocess.Popen`` with ownership: the child is registered
(identity and pidfd) the moment it exists, its ``NODE_OPTIONS`` is sanitised, and it
carries a role for reports. Everything else is the standard class: ``wait()``,
``communicate()``, ``returncode`` behave exactly as usual, and memdiag reaps it only
through ``poll()``, so ``returncode`` stays right.

The class is defined on first use (``memdiag.Popen``, :func:`spawn`, :func:`owned`):
``subprocess`` imports ``locale`` and ``selectors`` (~0.8 MiB), which a monitor that
never starts a child does not pay for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .ownership import OwnedProcess, track
from .sanitize import sanitize_env

if TYPE_CHECKING:
    import subprocess

__all__ = ["Popen", "owned", "spawn"]


def __getattr__(name: str) -> Any:
    if name == "Popen":
        return _popen_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_define_lock = threading.Lock()


def _popen_class() -> type[Popen]:
    with _define_lock:  # one class, whichever thread asks first
        cls = globals().get("Popen")
        if cls is None:
            import subprocess

            cls = globals()["Popen"] = _define(subprocess.Popen)
        return cls


def _define(base: type[subprocess.Popen[Any]]) -> type[Popen]:
    """The class, on ``subprocess.Popen`` (a function of its base so that importing this
    module does not import ``subprocess``)."""

    class Popen(base):  # type: ignore[valid-type,misc]
        """``subprocess.Popen`` whose child memdiag owns.

        Takes every ``subprocess.Popen`` argument (``env`` by keyword), plus:

        Args:
            role: a label for grouping in reports (default: the command's base name).
            group: a second label (the component it belongs to).
            memory_limit_mb: the child's own RSS limit; over it, the owned-children cleanup
                rung may terminate it in an emergency.
            expendable: may be terminated in an emergency even under its limit.

        Start the child in its own process group (``start_new_session=True``, or
        ``process_group=0`` on Python 3.11+) to have memdiag signal the whole group as a unit.

        Attributes:
            ownership: the :class:`~memdiag.processes.OwnedProcess` entry.
        """

        ownership: OwnedProcess

        def __init__(
            self,
            args: Any,
            *posargs: Any,
            role: str | None = None,
            group: str | None = None,
            memory_limit_mb: float | None = None,
            expendable: bool = False,
            **kwargs: Any,
        ) -> None:
            if len(posargs) < 9:  # env is Popen's 10th parameter; given by position, leave it
                env = sanitize_env(kwargs.get("env"))
                if env is not None:
                    kwargs["env"] = env
            super().__init__(args, *posargs, **kwargs)
            self.ownership = track(
                self,
                role=role or _default_role(args, kwargs.get("executable")),
                group=group,
                memory_limit_mb=memory_limit_mb,
                expendable=expendable,
                kind=self._memdiag_kind,
            )

        _memdiag_kind = "popen"

    Popen.__qualname__ = "Popen"
    return Popen


def _default_role(args: Any, executable: Any) -> str:
    first = executable or (args if isinstance(args, (str, bytes)) else (list(args) or [""])[0])
    if isinstance(first, bytes):
        first = first.decode("utf-8", "replace")
    text = str(first).strip().split()[0] if str(first).strip() else "?"
    return text.rsplit("/", 1)[-1]


def spawn(args: Any, **kwargs: Any) -> Popen:
    """Start an owned child: ``memdiag.Popen(args, **kwargs)``.

    Example::

        proc = memdiag.spawn(["ffmpeg", "-i", src, dst], role="transcode", memory_limit_mb=800)
        proc.wait()
    """
    return _popen_class()(args, **kwargs)


@contextmanager
def owned(args: Any, *, grace: float | None = None, **kwargs: Any) -> Iterator[Popen]:
    """Run an owned child for the duration of a ``with`` block.

    On leaving the block the child, if still running, gets SIGTERM, then SIGKILL after
    ``grace`` seconds (default: the config's ``terminate_grace_seconds``), and is reaped;
    its pipes are closed. The config's ``terminate_policy`` does not apply here: ending a
    child you scoped to a block is part of its contract, not a cleanup decision.

    Example::

        with memdiag.owned(["node", "worker.js"], role="renderer") as proc:
            ...
    """
    import subprocess

    from .terminate import stop_entries

    proc = _popen_class()(args, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stop_entries([proc.ownership], grace=grace, check_policy=False)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # stop_entries KILLed it; reaping may lag
            pass
