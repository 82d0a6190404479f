"""AddressSanitizer runs of memdiag's C extensions: the heap profiler, the container scan and
the cache's C paths are each built with ``-fsanitize=address`` and run under a stress script.

Python itself is not instrumented: libasan is preloaded so that the extension's memory
accesses (and every malloc/free of the process) are checked; leak detection is off (the
interpreter keeps memory until exit by design). The tests that use this are slow (a build
each); CI installs the compiler and libasan (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

__all__ = ["asan_build", "asan_run"]


def _compiler() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed (CI installs memdiag from source with one)"
    return cc


def _libasan() -> str:
    path = subprocess.run([_compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert os.path.isabs(path) and os.path.exists(path), "libasan is missing (apt-get install libasan8)"
    return path


def asan_build(src: str, out_dir: Path, *libs: str) -> Path:
    """``src`` (one C file of an extension) built with AddressSanitizer into ``out_dir``;
    the path of the shared object (``NAME_asan.so``). ``libs``: extra linker flags (``-lm``)."""
    so = out_dir / f"{Path(src).stem}_asan.so"
    build = subprocess.run(
        [_compiler(), "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-std=gnu11", "-shared", "-fPIC",
         "-I" + sysconfig.get_paths()["include"], src, *libs, "-o", str(so)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    return so


def asan_run(
    args: Sequence[str],
    *,
    unset: Sequence[str] = (),
    timeout: float = 300,
    preload_also: Sequence[str] = (),
    env_extra: dict[str, str] | None = None,
) -> str:
    """Run ``python ARGS`` with libasan preloaded (``unset``: environment variables to drop;
    ``preload_also``: libraries preloaded after libasan; ``env_extra``: variables set);
    fails the test on any AddressSanitizer report or a non-zero exit. Returns its stdout."""
    env = {**os.environ, "LD_PRELOAD": " ".join([_libasan(), *preload_also]),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", **(env_extra or {})}  # fmt: skip
    for name in unset:
        env.pop(name, None)
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert "AddressSanitizer" not in out.stderr, out.stderr[-5000:]
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout
