"""``N P N'`` formed per evaluation, for crossed designs where listing the coupled pairs would not fit.

`crossed_blocks.Coupling` lists, once, every pair of rest columns that share a level of the first
term, and forms ``N P N'`` as one sparse product ``K vec(P)``. The list has ``sum_j k_j (k_j + 1) / 2``
entries (``k_j`` rest columns in level ``j``): 1.4 million on InstEval, but 221 million on a
MovieLens-1M-sized design (6,040 users, each rating up to 2,400 of 3,706 items), where ``K`` and
its construction took 14.7 GB. There the Schur complement is dense anyway (``r`` = 3,706), so this
module forms ``G = N diag(p) N'`` directly at each evaluation, for a first term with one effect
(``P`` is then a scalar ``p_j`` per level), as MixedModels.jl's rank update does, in two parts:

* levels with many columns ("heavy", ``k_j > HEAVY_SHARE * r``) as one dense ``r x h`` block, by
  BLAS ``syrk`` (``r^2 h`` flops at ~30 GFlop/s);
* the other levels by a sparse product ``N_l diag(p_l) N_l'`` (``sum k_j^2`` multiply-adds, ~5 ns
  each here), added into the dense result.

The split point balances the two costs (``r^2`` dense flops against ``k_j^2`` sparse products,
constants measured on a 2-core machine); memory is ``8 r (r + h)`` bytes plus ``N``, independent
of the number of pairs. The entries are the whole lower triangle (column-major), the format
`crossed_blocks.DenseRest` reads.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg import blas

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Above this many coupled pairs, a first term with one effect uses `DirectCoupling` (the pair
#: list would take ``~40`` bytes a pair to build: 800 MB at 20 million).
PAIRS_MAX = 20_000_000
#: Seconds per ``r^2`` x heavy level of ``syrk``, and per ``k_j^2`` term of the sparse product
#: (measured: r = 3,706, 749 dense columns in 0.38 s; 84 million terms in 0.47 s).
_DENSE_S = 3.6e-11
_SPARSE_S = 5.0e-9
#: Results of `DirectCoupling.npn` kept (``P`` and the gradient's ``D^-2``: ``4 r^2`` bytes each).
_KEEP = 2


def lower_entries(r: int) -> tuple[IntArray, IntArray]:
    """Rows and columns of the lower triangle of an ``r x r`` matrix, column-major."""
    cols, rows = np.triu_indices(r)
    return rows.astype(np.int64), cols.astype(np.int64)


def heavy_levels(k: IntArray, r: int) -> NDArray[np.bool_]:
    """Levels whose columns go to the dense block: ``k_j^2`` sparse work above ``r^2`` dense."""
    return np.asarray(k, dtype=np.float64) > r * np.sqrt(_DENSE_S / _SPARSE_S)


class DirectCoupling:
    """``N P N'`` (``P`` a scalar per level) at the lower triangle, formed at each call.

    Parameters
    ----------
    N : csr_matrix (r, nlevels1)
        ``Z_r' Z_1``, one column per level of the first term.

    Attributes
    ----------
    rows, cols : IntArray
        The lower triangle's entries, column-major (as `crossed_blocks.Coupling`).
    off : bool array
        Entries off the diagonal.
    q1 : int
        1: this form needs a first term with one effect.
    heavy : bool array (nlevels1,)
        Levels in the dense block.
    """

    q1 = 1

    def __init__(self, N: sp.csr_matrix) -> None:
        r, n1 = N.shape
        self.r = r
        N = sp.csc_matrix(N)
        k = np.diff(N.indptr)
        self.heavy = heavy_levels(k, r)
        self.heavy_idx = np.flatnonzero(self.heavy)
        self.light_idx = np.flatnonzero(~self.heavy)
        self.Nh = np.asfortranarray(N[:, self.heavy_idx].toarray())
        self.Nl = sp.csr_matrix(N[:, self.light_idx])
        self.NlT = sp.csr_matrix(self.Nl.T)
        self._recent: list[tuple[bytes, FloatArray]] = []

    # the lower triangle's entries (the format of `crossed_blocks.Coupling`) are ~r^2 / 2 each
    # (110 MB per array at r = 3,706): made when a caller reads entries, not by the dense path
    @cached_property
    def _entries(self) -> tuple[IntArray, IntArray]:
        return lower_entries(self.r)

    @property
    def rows(self) -> IntArray:
        """Rows of the lower triangle's entries, column-major."""
        return self._entries[0]

    @property
    def cols(self) -> IntArray:
        """Columns of the lower triangle's entries, column-major."""
        return self._entries[1]

    @cached_property
    def target(self) -> IntArray:
        """The entries' positions in a column-major ``r x r`` array."""
        return self.rows + self.cols * self.r

    @cached_property
    def off(self) -> NDArray[np.bool_]:
        """Entries off the diagonal."""
        return self.rows != self.cols

    def dense(self, p: FloatArray) -> FloatArray:
        """``N diag(p) N'`` as a dense Fortran-ordered matrix (lower triangle valid), ``p >= 0``."""
        if self.light_idx.size:
            light = (self.Nl @ sp.diags(p[self.light_idx])) @ self.NlT
            # symmetric: the transpose of the C-ordered array (no conversion of the csr product)
            # is the same matrix, F-ordered as syrk updates it in place
            G = light.toarray().T
        else:
            G = np.zeros((self.r, self.r), order="F")
        if self.heavy_idx.size:
            W = self.Nh * np.sqrt(p[self.heavy_idx])[None, :]
            G = blas.dsyrk(1.0, W, beta=1.0, c=G, lower=1, overwrite_c=1)
        return G

    def dense_kept(self, P: FloatArray) -> FloatArray:
        """`dense` of ``P`` (nlevels1, 1, 1), read-only; the last `_KEEP` results are kept.

        ``P`` depends on the first term's theta only, which the optimiser's difference Hessian
        (a step along another term) and the gradient's second product repeat.
        """
        p = np.asarray(P, dtype=np.float64).reshape(-1)
        key = p.tobytes()
        for k, G in self._recent:
            if k == key:
                return G
        G = self.dense(p)
        G.flags.writeable = False  # shared by the callers that hit the cache
        self._recent = [(key, G), *self._recent[: _KEEP - 1]]
        return G

    def npn(self, P: FloatArray) -> FloatArray:
        """``(N P N')`` at the lower triangle, for ``P`` (nlevels1, 1, 1), ``P >= 0``."""
        return self.dense_kept(P).reshape(-1, order="F")[self.target]

    def quadratic(self, X_at: FloatArray, nlevels: int) -> FloatArray:
        """``Q_j = N_j' X N_j`` (nlevels, 1, 1) for symmetric ``X`` read at the lower triangle."""
        r = self.r
        X = np.zeros((r, r), order="F")
        X.reshape(-1, order="F")[self.target] = X_at  # a view: X is F-ordered
        X = X + X.T - np.diag(np.diagonal(X))
        Q = np.empty(nlevels)
        Q[self.heavy_idx] = np.einsum("aj,aj->j", self.Nh, X @ self.Nh)
        XN = self.NlT @ X  # (light levels, r): row j is N_j' X
        Q[self.light_idx] = np.asarray(sp.csr_matrix(self.NlT).multiply(XN).sum(axis=1)).ravel()
        return Q.reshape(nlevels, 1, 1)
