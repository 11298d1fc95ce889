"""Refuse, before any numeric work, a crossed design whose factor would not fit in memory.

The crossed engine eliminates the first term level by level and factors the Schur complement
``S`` on the other terms' ``r`` columns (`crossed`). Its storage is known once the pattern is:

* dense ``S`` (``r`` up to `crossed_blocks.DENSE_MAX`): ``8 r^2`` bytes for ``S``, as much for
  ``Z_r'Z_r`` and for the inverse the gradient needs;
* the list of coupled pairs (`crossed_blocks.Coupling`): about 40 bytes a pair while it is built;
* sparse ``S`` (SuperLU): the fill of its factor. Here it is predicted by the envelope of ``S``
  after a reverse Cuthill-McKee ordering (fill stays inside the envelope: George and Liu 1981,
  "Computer Solution of Large Sparse Positive Definite Systems", ch. 4), a bound that is close
  for designs without structure (two factors drawn independently: the worst case) and loose for
  designs nested in part, which SuperLU's minimum-degree ordering factors with less fill.

Above `tiers.design.diagnostics.LIMITS.max_bytes` the fit is refused with the predicted size
(raise the limit there to try anyway).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.csgraph import reverse_cuthill_mckee

from tiers.design import diagnostics
from tiers.errors import DataError

IntArray = NDArray[np.int64]

#: Bytes per coupled pair while the pair list is built (indices, values, sort keys).
PAIR_BYTES = 40.0
#: Bytes per nonzero of a SuperLU factor (L and U, value and row index each).
FILL_BYTES = 24.0


def envelope(rows: IntArray, cols: IntArray, r: int) -> int:
    """Entries of the lower envelope of a symmetric ``r x r`` pattern after reverse Cuthill-McKee.

    ``(rows, cols)`` lists the pattern's entries (either triangle, repeats allowed); the diagonal
    is counted whether listed or not.
    """
    one = np.ones(rows.size, dtype=np.int8)
    A = sp.csr_matrix((one, (rows, cols)), shape=(r, r))
    A = (A + A.T).tocsr()
    perm = reverse_cuthill_mckee(A, symmetric_mode=True)
    position = np.empty(r, dtype=np.int64)
    position[perm] = np.arange(r)
    a, b = position[rows], position[cols]
    first = np.arange(r, dtype=np.int64)  # each row's first column inside the envelope
    np.minimum.at(first, np.maximum(a, b), np.minimum(a, b))
    return int((np.arange(r) - first + 1).sum())


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:,.2f} MiB"


def refuse_above_limit(need: float, what: str) -> None:
    """Raise a `DataError` naming ``what`` when ``need`` bytes exceed the memory limit."""
    limit = diagnostics.LIMITS.max_bytes
    if need <= limit:
        return
    raise DataError(
        f"the crossed random effects would need about {_size(need)} ({what}), above the limit of "
        f"{_size(limit)}; no fit was started. Group the levels more coarsely, "
        "fit a subset of the data, or raise the limit "
        "(tiers.design.diagnostics.LIMITS = tiers.Limits(max_bytes=...)) to try anyway"
    )


def check_pairs(pairs: int, r: int) -> None:
    """The pair list of `crossed_blocks.Coupling` (``pairs`` entries) and a dense ``S``."""
    refuse_above_limit(
        PAIR_BYTES * pairs,
        f"{pairs:,} pairs of the {r:,} random effects after the first term share a level of it",
    )


def check_dense(r: int) -> None:
    """A dense Schur complement of ``r`` columns, its copy of ``Z_r'Z_r`` and its inverse."""
    refuse_above_limit(
        3.0 * 8.0 * r * r, f"three dense {r:,} x {r:,} matrices for the Schur complement"
    )


def check_sparse(rows: IntArray, cols: IntArray, r: int) -> int:
    """The predicted fill of a sparse Schur complement with pattern ``(rows, cols)``; returns it."""
    fill = envelope(rows, cols, r)
    refuse_above_limit(
        FILL_BYTES * fill,
        f"a sparse factor of the {r:,} x {r:,} Schur complement, predicted at up to {fill:,} "
        "nonzeros from its envelope after a reverse Cuthill-McKee ordering",
    )
    return fill
