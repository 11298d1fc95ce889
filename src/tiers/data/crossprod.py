"""Cross-products of tall, narrow matrices, and the collinearity check's triangular solves.

``A' B`` is one dot product per pair of columns where that is faster than gemm.

OpenBLAS's gemm spends a ``3 x 80,000 x 3`` product packing its operands: 350 us against 40 us
for the six dot products of the columns (measured, one thread), and it is no faster for a strided
view. Past a few columns gemm's blocking wins, and it is used there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Columns up to which the products are dot products of columns.
DOT_COLUMNS = 8


def gram(A: FloatArray, B: FloatArray | None = None) -> FloatArray:
    """``A' B`` for a symmetric product (``B`` is ``A`` or ``diag(w) A``; default ``A``).

    Only the upper triangle is computed and mirrored, so the result is exactly symmetric.
    """
    B = A if B is None else B
    m = A.shape[1]
    if m > DOT_COLUMNS:
        return A.T @ B
    out = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            out[i, j] = out[j, i] = A[:, i] @ B[:, j]
    return out


#: Up to this many columns the collinearity check solves by plain forward substitution: the
#: common model needs no scipy.linalg (0.08 s of a fresh process, a `tiers fit` command's sixth).
FEW_COLUMNS = 32


def forward_substitution(L: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """``L^-1 b`` for lower-triangular ``L`` by forward substitution (a few columns)."""
    w = np.empty(b.size)
    for i in range(b.size):
        w[i] = (b[i] - L[i, :i] @ w[:i]) / L[i, i]
    return w


def lower_solver(p: int) -> Callable[[FloatArray, FloatArray], FloatArray]:
    """``(L, b) -> L^-1 b`` for lower-triangular ``L`` of up to ``p`` columns.

    Forward substitution for a few, scipy's triangular solve (imported on use) for many.
    """
    if p <= FEW_COLUMNS:
        return forward_substitution
    from functools import partial

    from scipy.linalg import solve_triangular

    return partial(solve_triangular, lower=True)
