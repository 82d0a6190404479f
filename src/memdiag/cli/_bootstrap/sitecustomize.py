"""memdiag's start-up hook for processes launched by ``memdiag run``.

Python imports ``sitecustomize`` at start-up from the first directory on ``sys.path``
that has one. ``memdiag run`` puts this file's directory first on ``PYTHONPATH``, so the
launched program gets memdiag without any code change:

1. it removes itself from ``PYTHONPATH`` and ``sys.path``, and runs the
   ``sitecustomize`` the program would have had anyway (the next one on the path);
2. when ``MEMDIAG_AUTOSTART=1`` it starts the monitor (configured by the ``MEMDIAG_*``
   environment, as ``memdiag.start()`` always is), with the API server when
   ``MEMDIAG_AUTOSTART_HTTP=1``, and clears both variables so only the first Python
   process of the tree starts an agent (its Python children do not);
3. except for a pre-fork server (gunicorn, uvicorn): its master keeps this directory on
   ``PYTHONPATH`` and names itself in ``MEMDIAG_AUTOSTART_SERVER``, so every worker
   starts its own agent: forked workers (gunicorn) restart the monitor after ``fork()``
   (memdiag's ``os.register_at_fork`` handler), spawned ones (``uvicorn --workers``) start
   it here because their parent is that master. Their own children do not.

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


def _unhook(keep_env=False):
    """Take this directory off PYTHONPATH (for children, unless ``keep_env``) and sys.path."""
    if not keep_env:
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        kept = [p for p in parts if os.path.abspath(p) != _HERE]
        if kept:
            os.environ["PYTHONPATH"] = os.pathsep.join(kept)
        else:
            os.environ.pop("PYTHONPATH", None)
    sys.path[:] = [p for p in sys.path if not p or os.path.abspath(p) != _HERE]


_SERVERS = ("gunicorn", "uvicorn")


def _is_server():
    """This process is a pre-fork server's master (gunicorn or uvicorn, however launched)."""
    with open("/proc/self/cmdline", "rb") as fh:
        argv = [a.decode("utf-8", "replace") for a in fh.read(65536).split(b"\0") if a]
    head = argv[:3]
    return any(os.path.basename(a) in _SERVERS for a in head) or any(
        a == "-m" and i + 1 < len(argv) and argv[i + 1] in _SERVERS for i, a in enumerate(head)
    )


def _role():
    """``"first"`` (started by ``memdiag run``), ``"master"`` (the same, a pre-fork server),
    ``"worker"`` (spawned by such a master) or ``None``."""
    if os.environ.get("MEMDIAG_AUTOSTART") == "1":
        return "master" if _is_server() else "first"
    server = os.environ.get("MEMDIAG_AUTOSTART_SERVER")
    if server and server == str(os.getppid()):
        with open("/proc/self/cmdline", "rb") as fh:
            helper = b"multiprocessing.resource_tracker" in fh.read(65536)
        return None if helper else "worker"  # not the helper multiprocessing starts beside them
    return None


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


def _autostart(role):
    if role is None:
        return
    os.environ.pop("MEMDIAG_AUTOSTART", None)
    if role == "master":  # its workers start their own agents (they keep these variables)
        os.environ["MEMDIAG_AUTOSTART_SERVER"] = str(os.getpid())
        http = os.environ.get("MEMDIAG_AUTOSTART_HTTP", "") == "1"
    else:
        http = os.environ.pop("MEMDIAG_AUTOSTART_HTTP", "") == "1"
    import memdiag

    memdiag.start(http=http or None)


def _main():
    role = None
    try:
        role = _role()
    except Exception as exc:
        _warn(f"could not tell what this process is: {type(exc).__name__}: {exc}")
    try:
        _unhook(keep_env=role == "master")
    except Exception as exc:
        _warn(f"could not clean PYTHONPATH: {type(exc).__name__}: {exc}")
    try:
        _chain()
    except Exception as exc:
        _warn(f"the program's own sitecustomize failed: {type(exc).__name__}: {exc}")
    try:
        _autostart(role)
    except Exception as exc:
        _warn(f"memdiag did not start in this process ({type(exc).__name__}: {exc}); monitoring from outside only")


_main()
