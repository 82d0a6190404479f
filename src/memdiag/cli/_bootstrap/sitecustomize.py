"""memdiag's start-up hook for processes launched by ``memdiag run``.

Python imports ``sitecustomize`` at start-up from the first directory on ``sys.path``
that has one. ``memdiag run`` puts this file's directory first on ``PYTHONPATH``, so the
launched program gets memdiag without any code change:

1. it removes itself from ``PYTHONPATH`` and ``sys.path``, and runs the
   ``sitecustomize`` the program would have had anyway (the next one on the path);
2. when ``MEMDIAG_AUTOSTART=1`` it starts the monitor (configured by the ``MEMDIAG_*``
   environment, as ``memdiag.start()`` always is), with the API server when
   ``MEMDIAG_AUTOSTART_HTTP=1``, and clears both variables so only the first Python
   process of the tree starts an agent (its Python children do not).

It never stops the program from starting: any failure is one line on stderr.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _warn(message):
    try:
        sys.stderr.write(f"memdiag run: {message}\n")
    except Exception:
        pass


def _unhook():
    """Take this directory off PYTHONPATH (for children) and sys.path (for imports)."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    kept = [p for p in parts if os.path.abspath(p) != _HERE]
    if kept:
        os.environ["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        os.environ.pop("PYTHONPATH", None)
    sys.path[:] = [p for p in sys.path if not p or os.path.abspath(p) != _HERE]


def _chain():
    """Run the sitecustomize that this one shadows, if there is one."""
    import importlib.machinery
    import importlib.util

    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None or (spec.origin and os.path.dirname(os.path.abspath(spec.origin)) == _HERE):
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _autostart():
    if os.environ.pop("MEMDIAG_AUTOSTART", "") != "1":
        return
    http = os.environ.pop("MEMDIAG_AUTOSTART_HTTP", "") == "1"
    import memdiag

    memdiag.start(http=http or None)


def _main():
    try:
        _unhook()
    except Exception as exc:
        _warn(f"could not clean PYTHONPATH: {type(exc).__name__}: {exc}")
    try:
        _chain()
    except Exception as exc:
        _warn(f"the program's own sitecustomize failed: {type(exc).__name__}: {exc}")
    try:
        _autostart()
    except Exception as exc:
        _warn(f"memdiag did not start in this process ({type(exc).__name__}: {exc}); monitoring from outside only")


_main()
