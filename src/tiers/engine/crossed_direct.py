"""``N P N'`` formed per evaluation, for crossed designs where listing the coupled pairs would not fit.

`crossed_blocks.Coupling` lists, once, every pair of rest columns that share a level of the first
term, and forms ``N P N'`` as one sparse product ``K vec(P)``. The list has ``sum_j k_j (k_j + 1) / 2``
entries (``k_j`` rest columns in level ``j``): 1.83 million on InstEval, but 221 million on a
MovieLens-1M-sized design (6,040 users, each rating up to 2,400 of 3,706 items), where ``K`` and
its construction took 14.7 GB. There the Schur complement is dense anyway (``r`` = 3,706), so this
module forms ``G = N diag(p) N'`` directly at each evaluation, for a first term with one effect
(``P`` is then a scalar ``p_j`` per level), as MixedModels.jl's rank update does.

``G`` is built in a fixed order of the rest columns, the *popular* ones (most nonzeros in ``N``)
first, split in blocks that each go to the cheaper kernel:

* popular x popular (``T x T``): one dense BLAS ``syrk`` over every level (``T^2 n1``);
* rare x rare: levels with many rare columns ("heavy") by a dense ``syrk``, the others by a sparse
  product ``N_l diag(p_l) N_l'`` (``sum k_j^2`` terms);
* rare x popular: heavy levels by ``gemm``, the others by a sparse-dense product.

Ratings concentrate on few items, so most multiply-adds land in the popular block, where BLAS does
them at ~1e-11 s each against ~5e-9 s for a term of scipy's sparse product. ``T`` and the heavy
levels minimise a cost model with these constants (measured on a 2-core machine); ``T = 0``
is the pure user split (heavy users dense, the rest sparse), ``T = r`` one dense ``syrk``. Memory
is ``8 T n1 + 8 R h`` bytes for the dense parts plus ``N``, independent of the number of pairs.
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
#: Seconds per multiply-add of BLAS ``syrk``/``gemm``, per term of scipy's sparse product and per
#: multiply-add of a csr by C-ordered dense product, single-threaded (measured together on the
#: ratings design, 2-core machine at load 11: 4.5e-11, 1.6e-8 and 1.1e-9; their ratios decide).
_DENSE_S = 1.1e-11
_SPARSE_S = 4.0e-9
_SPMM_S = 2.8e-10
#: Candidate sizes of the popular block, as shares of ``r`` (the cost model picks one).
_POPULAR_SHARES = tuple(np.linspace(0.0, 1.0, 17))
#: Tests force the popular block's share here (None: the cost model).
_POPULAR_FORCE: float | None = None
#: Results of `DirectCoupling.dense_kept` kept: ``P`` and the gradient's ``D^-2`` at two values of the
#: first theta (the start and the difference Hessian's step in it: a step in another theta reuses
#: the start's), 110 MB each at r = 3,706.
KEEP = 4


def lower_entries(r: int) -> tuple[IntArray, IntArray]:
    """Rows and columns of the lower triangle of an ``r x r`` matrix, column-major."""
    cols, rows = np.triu_indices(r)
    return rows.astype(np.int64), cols.astype(np.int64)


def _plan(pos: IntArray, level: IntArray, n1: int, r: int) -> tuple[int, NDArray[np.bool_]]:
    """The popular block's size ``T`` and the heavy levels, by the cost model.

    ``pos`` is each nonzero's rest column in popular-first order, ``level`` its first-term level.
    """
    best: tuple[float, int, NDArray[np.bool_]] | None = None
    shares = _POPULAR_SHARES if _POPULAR_FORCE is None else (_POPULAR_FORCE,)
    for share in shares:
        T = int(round(share * r))
        R = r - T
        k_rare = np.bincount(level[pos >= T], minlength=n1).astype(np.float64)
        light_cost = _SPARSE_S * k_rare**2 + _SPMM_S * k_rare * T
        heavy = _DENSE_S * (R * R + R * T) < light_cost
        cost = (
            _DENSE_S * (float(T) * T * n1 + (R * R + R * T) * heavy.sum())
            + light_cost[~heavy].sum()
        )
        if best is None or cost < best[0]:
            best = (cost, T, heavy)
    assert best is not None
    return best[1], best[2]


class DirectCoupling:
    """``N P N'`` (``P`` a scalar per level) formed densely at each call, popular columns first.

    Parameters
    ----------
    N : csr_matrix (r, nlevels1)
        ``Z_r' Z_1``, one column per level of the first term.

    Attributes
    ----------
    perm : IntArray (r,)
        The rest columns in the order of `dense` (``perm[i]`` is the column at position ``i``);
        ``iperm`` its inverse.
    popular : int
        ``T``, the size of the popular block.
    heavy : bool array (nlevels1,)
        Levels whose rare columns are handled densely.
    rows, cols : IntArray
        The lower triangle's entries in the original order, column-major (as
        `crossed_blocks.Coupling`), for `npn`.
    off : bool array
        Entries off the diagonal.
    q1 : int
        1: this form needs a first term with one effect.
    """

    q1 = 1

    def __init__(self, N: sp.csr_matrix) -> None:
        r, n1 = N.shape
        self.r, self.n1 = r, n1
        N = sp.csc_matrix(N)
        N.sum_duplicates()
        self.N = N
        nnz_col = np.bincount(N.indices, minlength=r)
        self.perm = np.argsort(-nnz_col, kind="stable").astype(np.int64)
        self.iperm = np.empty(r, dtype=np.int64)
        self.iperm[self.perm] = np.arange(r)
        level = np.repeat(np.arange(n1), np.diff(N.indptr))
        pos = self.iperm[N.indices]
        T, self.heavy = _plan(pos, level, n1, r)
        self.popular = T
        Np = sp.csr_matrix((N.data, (pos, level)), shape=(r, n1))  # rows in popular-first order
        self.Np = Np[:T].toarray(order="F")  # T x n1, written in place (no copy)
        rare = sp.csc_matrix(Np[T:])
        self.heavy_idx = np.flatnonzero(self.heavy)
        self.light_idx = np.flatnonzero(~self.heavy)
        self.Nh = rare[:, self.heavy_idx].toarray(order="F")  # R x h
        self.Nl = sp.csr_matrix(rare[:, self.light_idx])  # R x l
        self.NlT = sp.csr_matrix(self.Nl.T)
        self._recent: list[tuple[bytes, FloatArray]] = []

    # the lower triangle's entries are ~r^2 / 2 each (55 MB per array at r = 3,706): made when a
    # caller reads entries (slopes, conditional variances), not by the dense path
    @cached_property
    def _entries(self) -> tuple[IntArray, IntArray]:
        return lower_entries(self.r)

    @property
    def rows(self) -> IntArray:
        """Rows of the lower triangle's entries (original order), column-major."""
        return self._entries[0]

    @property
    def cols(self) -> IntArray:
        """Columns of the lower triangle's entries (original order), column-major."""
        return self._entries[1]

    @cached_property
    def target(self) -> IntArray:
        """The entries' positions in a column-major ``r x r`` array (original order)."""
        return self.rows + self.cols * self.r

    @cached_property
    def off(self) -> NDArray[np.bool_]:
        """Entries off the diagonal."""
        return self.rows != self.cols

    def permuted_lower(self, rows: IntArray, cols: IntArray) -> IntArray:
        """Where the entries ``(rows, cols)`` (original order) sit in the column-major ``S``.

        ``S`` is in `perm` order; each entry is swapped into its lower triangle.
        """
        a, b = self.iperm[rows], self.iperm[cols]
        return np.maximum(a, b) + np.minimum(a, b) * self.r

    def dense(self, p: FloatArray) -> FloatArray:
        """``N diag(p) N'`` in `perm` order, Fortran-ordered, lower triangle valid; ``p >= 0``."""
        r, T = self.r, self.popular
        G = np.empty((r, r), order="F")
        G[:T, T:] = 0.0  # strict upper: never read as data, but kept finite for products
        sp_ = np.sqrt(p)
        if T:
            W = self.Np * sp_[None, :]
            G[:T, :T] = blas.dsyrk(1.0, W, lower=1)
        if T < r:
            ph, pl = p[self.heavy_idx], p[self.light_idx]
            if self.light_idx.size:
                # symmetric: the transpose of the C-ordered array is the same block, F-ordered
                G[T:, T:] = ((self.Nl @ sp.diags(pl)) @ self.NlT).toarray().T
                if T:
                    # a C-ordered right-hand side: scipy's csr-dense product runs along its rows
                    right = np.ascontiguousarray((self.Np[:, self.light_idx] * pl[None, :]).T)
                    G[T:, :T] = self.Nl @ right
            else:
                G[T:, T:] = 0.0
                G[T:, :T] = 0.0
            if self.heavy_idx.size:
                Wh = self.Nh * np.sqrt(ph)[None, :]
                G[T:, T:] += blas.dsyrk(1.0, Wh, lower=1)  # upper of this block: not read
                if T:
                    G[T:, :T] += (self.Nh * ph[None, :]) @ self.Np[:, self.heavy_idx].T
        return G

    def dense_kept(self, P: FloatArray) -> FloatArray:
        """`dense` of ``P`` (nlevels1, 1, 1), read-only; the last `KEEP` results are kept.

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
        self._recent = [(key, G), *self._recent[: KEEP - 1]]
        return G

    def npn(self, P: FloatArray) -> FloatArray:
        """``(N P N')`` at the lower triangle (original order), for ``P`` (nlevels1, 1, 1)."""
        G = self.dense_kept(P).reshape(-1, order="F")
        return G[self.permuted_lower(self.rows, self.cols)]

    def quadratic(self, X_at: FloatArray, nlevels: int) -> FloatArray:
        """``Q_j = N_j' X N_j`` (nlevels, 1, 1) for symmetric ``X`` read at the lower triangle."""
        r = self.r
        X = np.zeros((r, r), order="F")
        X.reshape(-1, order="F")[self.target] = X_at  # a view: X is F-ordered
        X = X + X.T - np.diag(np.diagonal(X))
        N = sp.csc_matrix(self.N)
        Q = np.empty(nlevels)
        dense_cols = np.diff(N.indptr) * r > r * r // 8
        idx = np.flatnonzero(dense_cols)
        if idx.size:
            Nd = N[:, idx].toarray()
            Q[idx] = np.einsum("aj,aj->j", Nd, X @ Nd)
        idx = np.flatnonzero(~dense_cols)
        if idx.size:
            NT = sp.csr_matrix(N[:, idx].T)
            Q[idx] = np.asarray(NT.multiply(NT @ X).sum(axis=1)).ravel()
        return Q.reshape(nlevels, 1, 1)
