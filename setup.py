"""Build the optional C parts of memdiag; everything else is in pyproject.toml.

``memdiag.cache._fastget`` (SharedPromptCache's get and set for the built-in policies, in C) and
``memdiag.leaks._heapprof`` (the sampled heap profiler, and ``_preload``, its malloc
shim for ``memdiag run``) ``memdiag.leaks._scan`` (leak detection's container scan) and ``memdiag.leaks._audit``
(its audit hook, filtered in C) need a C compiler and the Python
headers. Where they cannot be built the install still succeeds: the cache uses its
pure-Python path, and memdiag says once (logger ``memdiag``) that the heap profile falls
back to tracemalloc.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_CFLAGS = ["-O2", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]


class _OptionalBuildExt(build_ext):
    """A failed extension build is a warning, never a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all, for instance
            print(f"memdiag: C extensions not built ({exc}); pure-Python fallbacks in use", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"memdiag: {ext.name} not built ({exc}); pure-Python fallback in use", file=sys.stderr)


_EXTENSIONS = []
if sys.implementation.name == "cpython":
    _EXTENSIONS = [
        Extension(
            "memdiag.cache._fastget",
            ["src/memdiag/cache/_fastget.c"],
            extra_compile_args=_CFLAGS,
            optional=True,
        ),
    ]
if sys.implementation.name == "cpython" and sys.platform.startswith("linux"):
    _EXTENSIONS.append(
        Extension(
            "memdiag.leaks._heapprof",
            ["src/memdiag/leaks/_heapprof.c"],
            depends=["src/memdiag/leaks/_hp_core.h"],
            extra_compile_args=_CFLAGS,
            libraries=["m"],
            optional=True,
        )
    )
    # gc.get_objects() / get_referrers() without the tuples other threads are building.
    _EXTENSIONS.append(
        Extension("memdiag.probes._gcwalk", ["src/memdiag/probes/_gcwalk.c"], extra_compile_args=_CFLAGS, optional=True)
    )
    # The container scan's walk over gc.get_objects() (leak detection), in C.
    _EXTENSIONS.append(
        Extension("memdiag.leaks._scan", ["src/memdiag/leaks/_scan.c"], extra_compile_args=_CFLAGS, optional=True)
    )
    # The resource-origin audit hook, filtered by event name in C (leak detection).
    _EXTENSIONS.append(
        Extension("memdiag.leaks._audit", ["src/memdiag/leaks/_audit.c"], extra_compile_args=_CFLAGS, optional=True)
    )
    # The LD_PRELOAD malloc shim of `memdiag run` (a shared object, not a module).
    _EXTENSIONS.append(
        Extension(
            "memdiag.leaks._preload",
            ["src/memdiag/leaks/_preload.c"],
            depends=["src/memdiag/leaks/_hp_core.h"],
            extra_compile_args=_CFLAGS,
            libraries=["dl", "m", "pthread"],
            optional=True,
        )
    )

setup(ext_modules=_EXTENSIONS, cmdclass={"build_ext": _OptionalBuildExt})
