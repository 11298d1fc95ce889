"""Run the numerical core with single-threaded BLAS.

The engine's linear algebra is many small products (p x p, n x p with small p). A threaded BLAS
wakes and synchronises its threads for each of them, which costs more than the work: on a 2-core
machine a whole fit ran 30% slower with two BLAS threads than with one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """Limit every loaded BLAS to one thread inside the block."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
