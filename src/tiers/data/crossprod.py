"""Cross-products of tall, narrow matrices: ``A' B`` one dot product per pair of columns.

OpenBLAS's gemm spends a ``3 x 80,000 x 3`` product packing its operands: 350 us against 40 us
for the six dot products of the columns (measured, one thread), and it is no faster for a strided
view. Past a few columns gemm's blocking wins, and it is used there.
"""

from __future__ import annotations

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
