"""Sums by group a million rows at a time, and the size classes of the leaves.

The nested engines' set-up (`tiers.engine.nested_scalar`) and the Dask path's reductions
(`tiers.scale.design`) sum rows by group with bincounts rather than sorts, in steps that bound the
temporaries (an intp copy of int32 codes, a contiguous copy of a strided column).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


#: Leaves (or nodes) summed per step: whole columns would copy a strided column to a contiguous one
#: and int32 indices to intp, 0.8 GB per column at 50 million leaves (10^8 rows of the seed design).
STEP = 1 << 20


def sum_rows(
    values: FloatArray,
    group: NDArray[np.integer[Any]],
    ngroups: int,
    out: FloatArray | None = None,
) -> FloatArray:
    """Sum the rows of ``values`` by ``group`` (bincounts: no sort needed), added to ``out``.

    A million rows at a time, each step over the range of groups it touches (a few when the groups
    are sorted, as parents of renumbered levels are).
    """
    out = np.zeros((ngroups, values.shape[1])) if out is None else out
    for i in range(0, group.size, STEP):
        g = group[i : i + STEP]
        if g.size == 0:
            continue
        lo, hi = int(g.min()), int(g.max()) + 1
        g = g - lo if lo else g
        for j in range(values.shape[1]):
            out[lo:hi, j] += np.bincount(g, weights=values[i : i + STEP, j], minlength=hi - lo)
    return out


def size_classes(sizes: FloatArray) -> tuple[FloatArray, NDArray[np.integer[Any]]]:
    """The distinct leaf sizes, ascending, and each leaf's index among them (int32).

    Counts take a bincount, a million leaves at a time; weight totals (precision weights) a sort.
    """
    integral = all(
        np.array_equal(np.floor(sizes[i : i + STEP]), sizes[i : i + STEP])
        for i in range(0, sizes.size, STEP)
    )
    if integral and sizes.size and 0 <= sizes.min() and sizes.max() <= 4 * sizes.size + 1024:
        seen = np.zeros(int(sizes.max()) + 1, dtype=bool)
        for i in range(0, sizes.size, STEP):
            seen[sizes[i : i + STEP].astype(np.intp)] = True
        present = np.flatnonzero(seen)
        lookup = np.zeros(seen.size, dtype=np.int32)
        lookup[present] = np.arange(present.size, dtype=np.int32)
        size_class = np.empty(sizes.size, dtype=np.int32)
        for i in range(0, sizes.size, STEP):
            size_class[i : i + STEP] = lookup[sizes[i : i + STEP].astype(np.intp)]
        return present.astype(np.float64), size_class
    present_w, inverse = np.unique(sizes, return_inverse=True)
    return present_w, inverse.astype(np.int32 if present_w.size < 2**31 else np.int64)
