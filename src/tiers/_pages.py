"""Short-lived index arrays without transparent huge pages.

numpy advises the kernel to back every array of 4 MB or more with huge pages
(``madvise(MADV_HUGEPAGE)``). Where the kernel's ``transparent_hugepage/defrag`` is ``madvise``
(this project's test machine, and a common default), a page fault in such a region compacts
memory synchronously to find a free 2 MB page. On a fragmented machine that stalls: the crossed
engine's set-up on InstEval (about 36 MB of index arrays, used once, in a fresh process) spent
0.05-0.15 s in the kernel in 2 to 5 of 9 processes, with the same number of faults as the others;
with the advice off during the set-up all 9 took 0.081-0.087 s CPU (against 0.076-0.237).

numpy exposes the switch as ``_set_madvise_hugepage`` (its documented runtime counterpart of
``NUMPY_MADVISE_HUGEPAGE``); where a numpy lacks it, nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _switch() -> Callable[[bool], bool] | None:
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module: Any = __import__(name, fromlist=["_set_madvise_hugepage"])
        except ImportError:
            continue
        switch = getattr(module, "_set_madvise_hugepage", None)
        if callable(switch):
            return switch
    return None


@contextmanager
def small_pages() -> Iterator[None]:
    """Allocate without huge-page advice inside the block; the previous setting is restored."""
    switch = _switch()
    if switch is None:
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)
