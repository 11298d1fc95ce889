"""The inverse of a symmetric positive definite matrix from its Cholesky factor, in place.

LAPACK's ``potri`` is ``trtri`` (``L^-1``) followed by ``lauum`` (``L^-T L^-1``). In OpenBLAS its
``trtri`` works through triangular solves, at about 40% of one core's GEMM rate, and takes two
thirds of ``potri``'s time: on the crossed engine's 1,156-column Schur complement (InstEval),
``potri`` took 25.4 ms, ``trtri`` 16.0 ms and ``lauum`` 7.6 ms (one thread). The inverse of a
lower-triangular matrix also follows from the block identity

    [L11   0 ]^-1   [ X11          0  ]
    [L21  L22]    = [-X22 L21 X11  X22],     X11 = L11^-1, X22 = L22^-1,

applied recursively, whose work is two triangular-times-full products (BLAS ``trmm``, which
runs near the GEMM rate) per level: 10.0 ms for the same matrix, the same flops, and the same
rounding as a blocked ``trtri`` (the entries agreed with LAPACK's within 2e-16 relative). Below
`BASE` columns LAPACK's ``trtri`` does the block. Single precision runs the same steps at twice
the rate (10.8 ms with the conversion).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import blas, lapack

FloatArray = NDArray[np.float64]
#: Float64 or float32 (the same routines at either precision).
RealArray = NDArray[np.float64] | NDArray[np.float32]

#: Blocks this small are inverted by LAPACK's ``trtri`` (48 to 192 were within 10% on InstEval).
BASE = 128


def _lower_inverse(a: RealArray, lo: int, hi: int, trtri: Any, trmm: Any) -> None:
    """``a[lo:hi, lo:hi]``'s lower triangle replaced by its inverse (the block identity above).

    ``trtri`` and ``trmm`` are LAPACK's and BLAS's routines for ``a``'s precision.
    """
    if hi - lo <= BASE:
        x, info = trtri(a[lo:hi, lo:hi], lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"the Cholesky factor is singular ({info})")
        a[lo:hi, lo:hi] = x
        return
    mid = lo + (hi - lo) // 2
    _lower_inverse(a, lo, mid, trtri, trmm)
    _lower_inverse(a, mid, hi, trtri, trmm)
    # -X22 (L21 X11), both by trmm: the blocks' upper triangles are not read
    right = trmm(1.0, a[lo:mid, lo:mid], a[mid:hi, lo:mid], side=1, lower=1)
    a[mid:hi, lo:mid] = trmm(-1.0, a[mid:hi, mid:hi], right, side=0, lower=1, overwrite_b=1)


def invert_from_cholesky(factor: RealArray) -> RealArray:
    """``S^-1`` from ``S``'s lower Cholesky factor, in place; the lower triangle is valid.

    Parameters
    ----------
    factor : array (r, r), Fortran-ordered, float64 or float32
        ``L`` in its lower triangle (the strict upper triangle is ignored and left as it is).

    Returns
    -------
    array (r, r)
        ``factor`` itself, now holding ``S^-1`` in its lower triangle.
    """
    if factor.dtype not in (np.float64, np.float32) or not factor.flags.f_contiguous:
        # LAPACK's wrappers would work on a copy and the result of the last step be lost
        raise ValueError(f"need a Fortran-ordered float64 or float32 array, not {factor.dtype}")
    r = factor.shape[0]
    potri, lauum, trtri = lapack.get_lapack_funcs(("potri", "lauum", "trtri"), (factor,))
    if r <= BASE:
        out, info = potri(factor, lower=1, overwrite_c=1)
    else:
        _lower_inverse(factor, 0, r, trtri, blas.get_blas_funcs("trmm", (factor,)))
        out, info = lauum(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Cholesky factor is singular ({info})")
    if out is not factor:  # pragma: no cover - in place for a Fortran-ordered array
        factor[...] = out
    return factor
