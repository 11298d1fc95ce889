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

Above the design's ``limits.max_bytes`` (``tiers.fit(..., limits=)``, default
`tiers.design.diagnostics.LIMITS`) the fit is refused with the predicted size.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tiers.design import diagnostics
from tiers.errors import DataError

#: Bytes per coupled pair while the pair list is built (indices, values, sort keys).
PAIR_BYTES = 40.0
#: Bytes per nonzero of a SuperLU factor (L and U, value and row index each).
FILL_BYTES = 24.0


def envelope(A: sp.spmatrix) -> int:
    """Entries of the lower envelope of the symmetric pattern ``A`` after reverse Cuthill-McKee.

    The diagonal is counted whether ``A`` holds it or not.
    """
    # scipy.sparse.csgraph (5 ms to import) only for the sparse path's prediction
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    r = A.shape[0]
    A = sp.csr_matrix(A + sp.identity(r, format="csr"))
    perm = reverse_cuthill_mckee(A, symmetric_mode=True)
    position = np.empty(r, dtype=np.int64)
    position[perm] = np.arange(r)
    # each row's first column inside the envelope, in the new order (A holds its diagonal, so no
    # row is empty)
    first = np.minimum.reduceat(position[A.indices], A.indptr[:-1])
    return int((position - np.minimum(first, position) + 1).sum())


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:,.2f} MiB"


def refuse_above_limit(need: float, what: str, limit: float | None = None) -> None:
    """Raise a `DataError` naming ``what`` when ``need`` bytes exceed ``limit``.

    ``limit`` defaults to `tiers.design.diagnostics.LIMITS.max_bytes`.
    """
    limit = diagnostics.LIMITS.max_bytes if limit is None else limit
    if need <= limit:
        return
    raise DataError(
        f"the crossed random effects would need about {_size(need)} ({what}), above the limit of "
        f"{_size(limit)}; no fit was started. For two crossed random intercepts, "
        "tiers.fit_moments(formula, data) fits them by moments in time linear in the rows; or "
        "raise the limit (tiers.fit(..., limits=tiers.Limits(max_bytes=...))) to try"
    )


def check_pairs(pairs: int, r: int, limit: float | None = None) -> None:
    """The pair list of `crossed_blocks.Coupling` (``pairs`` entries) and a dense ``S``."""
    refuse_above_limit(
        PAIR_BYTES * pairs,
        f"{pairs:,} pairs of the {r:,} random effects after the first term share a level of it",
        limit,
    )


def check_dense(r: int, limit: float | None = None, matrices: int = 3) -> None:
    """``matrices`` dense ``r x r`` arrays for the Schur complement.

    Three with the pair list (``S``, its copy of ``Z_r'Z_r``, the gradient's inverse in place of
    ``S``'s factor: the third is headroom, where the single-precision copy of a rough gradient
    fits); with the direct coupling ``S``, the product being formed, that copy (counted whole)
    and the products `crossed_direct.DirectCoupling` keeps.
    """
    refuse_above_limit(
        matrices * 8.0 * r * r,
        f"{matrices} dense {r:,} x {r:,} matrices for the Schur complement",
        limit,
    )


def check_sparse(pattern: sp.spmatrix, limit: float | None = None) -> int:
    """The predicted fill of a sparse Schur complement with symmetric ``pattern``; returns it."""
    r = pattern.shape[0]
    fill = envelope(pattern)
    refuse_above_limit(
        FILL_BYTES * fill,
        f"a sparse factor of the {r:,} x {r:,} Schur complement, predicted at up to {fill:,} "
        "nonzeros from its envelope after a reverse Cuthill-McKee ordering",
        limit,
    )
    return fill
