"""Sufficient statistics of a nested random-intercept model: all the nested engine needs.

The profiled deviance of nested random intercepts depends on the data only through

* the cross-product ``D'D`` of ``D = [X y]``,
* per innermost group g, ``c_g = (n_g, sum_g x, sum_g y)``,
* and the nesting tree

(see `tiers.engine.nested_scalar`). They are kept about a shift ``s`` (the column means, 0 for an
intercept column): centring leaves the deviance unchanged and loses less precision to cancellation.

Statistics of disjoint chunks of rows combine exactly (`NestedStatistics.combine`): about a common
shift ``s``, ``sum (d_i - s)(d_i - s)' = M_a + c_a delta' + delta c_a' + n_a delta delta'`` with
``delta = s_a - s`` and ``c_a = sum (d_i - s_a)`` (the pairwise update of Chan, Golub and LeVeque
1979), and leaf sums move by ``n_g delta``. So the statistics can be built chunk by chunk, in
parallel, from data that never sits in memory at once.

With row weights ``w_i`` (precision or frequency) every sum is weighted (``sum w_i d_i``,
``sum w_i d_i d_i'``) and a leaf's size is ``sum_g w_i``: the statistics of the rows scaled by
``sqrt(w_i)`` (`tiers.engine.gaussian`). The pairwise update then uses the weight total in place
of ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.design.grouping import Codes, Tree

FloatArray = NDArray[np.float64]

#: Cells of the working copy of ``[X y]`` per chunk of rows (8 MB of float64).
_CHUNK_CELLS = 1 << 20


def intercept_column(X: FloatArray) -> int | None:
    """The first all-ones column of X, if any."""
    if X.shape[0] == 0:
        return None
    ones = [j for j in np.flatnonzero(X[0] == 1.0) if np.all(X[:, j] == 1.0)]
    return int(ones[0]) if ones else None


def _non_decreasing(codes: Codes, step: int) -> bool:
    """Whether the codes never decrease, checked a chunk at a time (no n-row temporary)."""
    for a in range(0, codes.size, step):
        c = codes[a : a + step + 1]  # one past the chunk: the boundary is checked too
        if not np.all(c[1:] >= c[:-1]):
            return False
    return True


def _add_runs(leaf: FloatArray, group: Codes, WD: FloatArray, w: FloatArray | None) -> None:
    """Add one chunk of rows sorted by leaf to the leaf sums.

    Its leaves are the range ``group[0]..group[-1]``, at most as many as its rows: bincounts over
    that range cost the chunk, not every leaf (and are faster than ``reduceat`` over the runs).
    """
    lo = int(group[0])
    m = int(group[-1]) + 1 - lo
    local = np.subtract(group, lo, dtype=np.intp)
    leaf[lo : lo + m, 0] += np.bincount(local, weights=w, minlength=m)
    for j in range(WD.shape[1]):
        leaf[lo : lo + m, j + 1] += np.bincount(local, weights=WD[:, j], minlength=m)


def _leaf_sums(
    y: FloatArray, X: FloatArray, shift: FloatArray, tree: Tree, w: FloatArray | None
) -> FloatArray:
    """Per leaf, its size (weight total) and ``sum w_i (d_i - shift)``, by one bincount a column."""
    nleaf, p = tree.sizes[-1], X.shape[1]
    # bincount indexes by intp: cast int32 codes once here, not on every call
    group = np.asarray(tree.leaf, dtype=np.intp)
    leaf = np.empty((nleaf, p + 2))
    leaf[:, 0] = np.bincount(group, weights=w, minlength=nleaf)
    # one centred column at a time (bincount copies a strided column anyway): n values, not
    # the n x (p + 1) matrix
    for j in range(p + 1):
        col = X[:, j] if j < p else y
        if shift[j]:
            col = col - shift[j]
        leaf[:, j + 1] = np.bincount(group, weights=col if w is None else col * w, minlength=nleaf)
    return leaf


@dataclass(frozen=True)
class NestedStatistics:
    """Sufficient statistics of a nested random-intercept LMM, about a shift.

    Attributes
    ----------
    n, p : int
        Rows and fixed-effect columns.
    intercept : int or None
        The all-ones column of X (its shift is 0).
    shift : array (p + 1,)
        The point the columns of ``[X y]`` are centred about.
    colsum : array (p + 1,)
        ``sum_i (d_i - shift)``.
    dtd : array (p + 1, p + 1)
        ``sum_i (d_i - shift)(d_i - shift)'``.
    leaf : array (leaves, p + 2)
        Per innermost group: its size (weight total), then ``sum_g w_i (d_i - shift)``.
    tree : Tree
    wsum : float
        ``sum w_i`` (``n`` unweighted): what the pairwise update scales by.
    ldw : float
        ``sum log w_i`` of precision weights (0 otherwise): see `tiers.engine.gaussian`.
    """

    n: int
    p: int
    intercept: int | None
    shift: FloatArray
    colsum: FloatArray
    dtd: FloatArray
    leaf: FloatArray
    tree: Tree
    wsum: float = -1.0
    ldw: float = 0.0

    def __post_init__(self) -> None:
        if self.wsum < 0:
            object.__setattr__(self, "wsum", float(self.n))

    @classmethod
    def from_arrays(
        cls,
        y: FloatArray,
        X: FloatArray,
        tree: Tree,
        *,
        intercept: int | None = -1,
        weights: FloatArray | None = None,
        frequency: bool = False,
    ) -> NestedStatistics:
        """The statistics of one block of rows, centred about its own column means.

        ``intercept=-1`` finds the all-ones column; pass the column (or None) to use the same
        one for every chunk. ``weights`` are precision weights, or frequency weights with
        ``frequency`` (then ``n`` is their sum).
        """
        y = np.asarray(y, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        wsum = float(n) if w is None else float(w.sum())
        icpt = intercept_column(X) if intercept == -1 else intercept
        shift = np.zeros(p + 1)
        if icpt is not None and n:
            # column by column: no n-row vector of ones and no n x (p + 1) copy of [X y]
            for j in range(p):
                shift[j] = (X[:, j].sum() if w is None else w @ X[:, j]) / wsum
            shift[p] = (y.sum() if w is None else w @ y) / wsum
            shift[icpt] = 0.0
        nleaf = tree.sizes[-1]
        step = max(1, _CHUNK_CELLS // (p + 1))
        # rows sorted by leaf (as data usually is, by id): the leaf sums are runs of each chunk,
        # with no n-row temporaries; otherwise one bincount per column
        ordered = _non_decreasing(tree.leaf, step)
        leaf = np.zeros((nleaf, p + 2)) if ordered else _leaf_sums(y, X, shift, tree, w)
        # the cross-product of the centred [X y], accumulated over row chunks: one chunk-sized
        # working matrix rather than n x (p + 1) (192 MB at 8 million rows with p = 2)
        dtd = np.zeros((p + 1, p + 1))
        D = np.empty((min(step, n), p + 1), order="F")
        for a in range(0, n, step):
            b = min(n, a + step)
            Dc = D[: b - a]
            Dc[:, :p] = X[a:b]
            Dc[:, p] = y[a:b]
            Dc -= shift
            WDc = Dc if w is None else Dc * w[a:b, None]
            dtd += Dc.T @ WDc
            if ordered:
                _add_runs(leaf, tree.leaf[a:b], WDc, None if w is None else w[a:b])
        colsum = leaf[:, 1:].sum(axis=0)
        nobs = n if w is None or not frequency else int(round(wsum))
        ldw = 0.0 if w is None or frequency else float(np.log(w).sum())
        return cls(nobs, p, icpt, shift, colsum, dtd, leaf, tree, wsum, ldw)

    def recentred(self, shift: FloatArray) -> NestedStatistics:
        """The same statistics about another shift (themselves, when it is theirs)."""
        delta = self.shift - shift
        if not np.any(delta):
            # moving by zero changes no bit; no copy of the leaf table (1.6 GB at 10^8 rows of
            # the seed design) for statistics already about the shift `centred` asks for
            return self
        dtd = (
            self.dtd
            + np.outer(self.colsum, delta)
            + np.outer(delta, self.colsum)
            + self.wsum * np.outer(delta, delta)
        )
        leaf = self.leaf.copy()
        leaf[:, 1:] += leaf[:, :1] * delta
        colsum = self.colsum + self.wsum * delta
        return NestedStatistics(
            self.n, self.p, self.intercept, shift, colsum, dtd, leaf, self.tree, self.wsum, self.ldw
        )

    def combine(self, other: NestedStatistics) -> NestedStatistics:
        """Statistics of the union of two disjoint sets of rows of the same tree."""
        if other.p != self.p or other.leaf.shape != self.leaf.shape:
            raise ValueError("statistics of different models or trees cannot be combined")
        n = self.n + other.n
        wsum = self.wsum + other.wsum
        shift = (self.shift * self.wsum + other.shift * other.wsum) / (wsum if wsum > 0 else 1.0)
        a, b = self.recentred(shift), other.recentred(shift)
        return NestedStatistics(
            n,
            self.p,
            self.intercept,
            shift,
            a.colsum + b.colsum,
            a.dtd + b.dtd,
            a.leaf + b.leaf,
            self.tree,
            wsum,
            self.ldw + other.ldw,
        )

    def centred(self) -> NestedStatistics:
        """About the column means (the intercept column about 0): the engine's working scale."""
        if self.intercept is None or self.n == 0:
            return self if not np.any(self.shift) else self.recentred(np.zeros(self.p + 1))
        mean = self.shift + self.colsum / self.wsum
        mean[self.intercept] = 0.0
        return self.recentred(mean)
