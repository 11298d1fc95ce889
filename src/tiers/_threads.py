"""Run the numerical core with single-threaded BLAS.

The engine's linear algebra is many small products (p x p, n x p with small p). A threaded BLAS
wakes and synchronises its threads for each of them, which costs more than the work: on a 2-core
machine a whole fit ran 30% slower with two BLAS threads than with one, and up to 6x slower while
another process kept the second core busy.

The limit is set directly on the OpenBLAS libraries loaded in the process (the BLAS of numpy's
and scipy's wheels), found in ``/proc/self/maps``: threadpoolctl's controller, the general
route, inspects every loaded shared library (30 ms with pandas and scipy loaded, paid by the
first fit of a process). Any other BLAS (MKL, BLIS, FlexiBLAS) goes through threadpoolctl.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

#: File names of BLAS libraries that only threadpoolctl knows how to limit.
_OTHER_BLAS = ("libmkl_rt", "libmkl_core", "libblis", "libflexiblas")


@lru_cache(maxsize=1)
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _openblas_functions(path: str) -> tuple[Any, Any] | None:
    """``(get, set)`` of the thread count in the OpenBLAS at ``path`` (symbols as threadpoolctl)."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
        set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            set_.argtypes = [ctypes.c_int]
            return get, set_
    return None


#: Modules whose import loads a BLAS (numpy's and scipy's wheels each bring their own).
_LOADERS = ("numpy", "scipy.linalg")


@lru_cache(maxsize=4)
def _openblas(loaded: tuple[bool, ...] = ()) -> tuple[tuple[Any, Any], ...] | None:
    """The loaded OpenBLAS libraries' thread-count functions; None when another route is needed.

    Cached per ``loaded`` (which of `_LOADERS` are imported), so a BLAS loaded later is found.
    """
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split(maxsplit=5)[-1].strip() for line in fh if ".so" in line}
    except OSError:  # pragma: no cover - not Linux
        return None
    names = {path: path.rsplit("/", 1)[-1] for path in paths}
    if any(name.startswith(_OTHER_BLAS) for name in names.values()):
        return None
    found = []
    for path, name in sorted(names.items()):
        if "openblas" in name:
            functions = _openblas_functions(path)
            if functions is None:
                return None
            found.append(functions)
    return tuple(found) if found else None


@contextmanager
def limit_blas(threads: int) -> Iterator[None]:
    """Limit every loaded BLAS to ``threads`` threads inside the block."""
    libs = _openblas(tuple(name in sys.modules for name in _LOADERS))
    if libs is None:
        with _controller().limit(limits=threads, user_api="blas"):
            yield
        return
    before = [get() for get, _ in libs]
    for _, set_ in libs:
        set_(threads)
    try:
        yield
    finally:
        for (_, set_), n in zip(libs, before, strict=True):
            set_(n)


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """Limit every loaded BLAS to one thread inside the block."""
    with limit_blas(1):
        yield


#: What BLAS and OpenMP libraries read, once, when they are loaded.
_THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@contextmanager
def single_thread_children() -> Iterator[None]:
    """Processes started inside the block load their BLAS with one thread.

    A spawned worker imports numpy, and with it a BLAS that starts a thread per core, before any
    code of ours runs in it; the processes are the parallelism, so each worker's BLAS threads
    would compete with the other workers for the same cores (on 2 cores, 2 workers were slower
    than 1). The limit is in the environment the workers start with; this process, whose BLAS
    is loaded already, is not affected, and its environment is restored on leaving.
    """
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
