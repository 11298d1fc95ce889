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

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tiers.data.columns import BLOCK_ROWS as _BLOCK
from tiers.data.columns import ColumnMatrix
from tiers.data.crossprod import gram
from tiers.design.grouping import Codes, Tree

FloatArray = NDArray[np.float64]

#: Cells of the working copy of ``[X y]`` per chunk of rows (512 KB of float64): it stays in the
#: core's cache from its copy to its bincounts, and one reused block, unlike an 8 MB one, does not
#: take fresh pages from the system on every fit (the seed fit at 80,000 rows: 768 -> 360 page
#: faults, its statistics 3.9 -> 3.1 ms of CPU).
_CHUNK_CELLS = 1 << 16


def intercept_column(X: FloatArray | ColumnMatrix) -> int | None:
    """The first all-ones column of X, if any."""
    X = X if isinstance(X, ColumnMatrix) else ColumnMatrix.of_array(X)
    if X.shape[0] == 0:
        return None
    for j in range(X.shape[1]):
        if X.columns[j] is None:
            return j  # the intercept's own ones
        col = X.column(j)
        if col[0] == 1 and np.all(col == 1):
            return j
    return None


def _non_decreasing(codes: Codes, step: int) -> bool:
    """Whether the codes never decrease, checked a chunk at a time (no n-row temporary)."""
    for a in range(0, codes.size, step):
        c = codes[a : a + step + 1]  # one past the chunk: the boundary is checked too
        if not np.all(c[1:] >= c[:-1]):
            return False
    return True


def _chunks(n: int, step: int, leaf: Codes | None = None) -> Iterator[tuple[int, int]]:
    """Row ranges of about ``step`` rows; with ``leaf`` (sorted), each ends where a leaf does."""
    a = 0
    while a < n:
        b = min(n, a + step)
        if leaf is not None and b < n:
            b = int(np.searchsorted(leaf, leaf[b - 1], side="right"))
        yield a, b
        a = b


class _Rows:
    """The rows of ``[X y]`` (weighted), centred about ``shift``, a chunk at a time."""

    __slots__ = ("y", "X", "w", "shift", "buffer")

    def __init__(
        self, y: FloatArray, X: ColumnMatrix, w: FloatArray | None, shift: FloatArray
    ) -> None:
        self.y, self.X, self.w, self.shift = y, X, w, shift
        self.buffer = np.empty((0, X.shape[1] + 1), order="F")

    def centred(self, a: int, b: int) -> tuple[FloatArray, FloatArray]:
        """Rows ``a:b`` of ``D = [X y] - shift`` and of ``W D`` (the same array unweighted).

        Written into one working matrix reused across chunks, column-major (`_CHUNK_CELLS`,
        not the n x (p + 1) copy: 192 MB at 8 million rows with p = 2).
        """
        p = self.X.shape[1]
        if self.buffer.shape[0] < b - a:
            self.buffer = np.empty((b - a, p + 1), order="F")
        Dc = self.buffer[: b - a]
        self.X.rows(a, b, out=Dc[:, :p])
        Dc[:, p] = self.y[a:b]
        Dc -= self.shift
        return Dc, (Dc if self.w is None else Dc * self.w[a:b, None])


def uniform_runs(codes: Codes, ngroups: int, lo: int = 0) -> int:
    """The rows in every group when each group is one run of as many rows, else 0.

    The codes are then ``lo`` r times, ``lo + 1`` r times, ...: a balanced design stored by id.
    Checked a million rows at a time (no n-row temporary).
    """
    n = codes.size
    if ngroups < 1 or n % ngroups or int(codes[0]) != lo or int(codes[-1]) != lo + ngroups - 1:
        return 0
    r = n // ngroups
    groups = max(1, (1 << 20) // r)
    for g in range(0, ngroups, groups):
        block = codes[g * r : (g + groups) * r].reshape(-1, r)
        expected = np.arange(lo + g, lo + g + block.shape[0], dtype=codes.dtype)[:, None]
        if not np.array_equal(block, np.broadcast_to(expected, block.shape)):
            return 0
    return r


def run_sums(values: FloatArray, r: int) -> FloatArray:
    """Sums of consecutive runs of ``r`` rows: ``r - 1`` strided additions, no index.

    Each run is added in row order from its first row, as ``np.bincount`` adds a group's rows
    (bit for bit the same sums); ~10x faster than bincounts for short runs.
    """
    out = np.array(values[0::r])
    for k in range(1, r):
        out += values[k::r]
    return out


def _run_sums(group: Codes, WD: FloatArray, w: FloatArray | None) -> tuple[int, FloatArray]:
    """The leaf sums of one chunk of rows sorted by leaf: its first leaf, and a row per leaf.

    Its leaves are the range ``group[0]..group[-1]``, at most as many as its rows: bincounts over
    that range cost the chunk, not every leaf (and are faster than ``reduceat`` over the runs);
    a chunk of whole leaves of r rows each (a balanced design) is summed by strides
    (`run_sums`, the same sums).
    """
    lo = int(group[0])
    m = int(group[-1]) + 1 - lo
    block = np.empty((m, WD.shape[1] + 1))
    r = uniform_runs(group, m, lo)
    if r:
        block[:, 0] = float(r) if w is None else run_sums(w, r)
        block[:, 1:] = run_sums(WD, r)
        return lo, block
    local = np.subtract(group, lo, dtype=np.intp)
    block[:, 0] = np.bincount(local, weights=w, minlength=m)
    for j in range(WD.shape[1]):
        block[:, j + 1] = np.bincount(local, weights=WD[:, j], minlength=m)
    return lo, block


def _leaf_sums(
    y: FloatArray, X: ColumnMatrix, shift: FloatArray, tree: Tree, w: FloatArray | None
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
        col = X.column(j).astype(np.float64) if j < p else y
        if shift[j]:
            col = col - shift[j]
        leaf[:, j + 1] = np.bincount(group, weights=col if w is None else col * w, minlength=nleaf)
    return leaf


def _first_pass(
    y: FloatArray,
    X: FloatArray | ColumnMatrix,
    intercept: int | None,
    weights: FloatArray | None,
) -> tuple[ColumnMatrix, int | None, FloatArray | None, float, FloatArray]:
    """X as columns, the intercept column (``-1``: found), the weights, their total, the shift.

    The shift is the column means (weighted), 0 for the intercept; none without an intercept.
    """
    Xc = X if isinstance(X, ColumnMatrix) else ColumnMatrix.of_array(X)
    n, p = Xc.shape
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    wsum = float(n) if w is None else float(w.sum())
    icpt = intercept_column(Xc) if intercept == -1 else intercept
    shift = np.zeros(p + 1)
    if icpt is not None and n:
        # column by column (weighted: in blocks of rows): no n-row vector of ones and no float
        # copy of an integer column
        for j in range(p):
            col = Xc.column(j)
            if w is None:
                shift[j] = float(col.sum(dtype=np.float64)) / wsum
            else:
                blocks = range(0, n, _BLOCK)
                shift[j] = (
                    sum(float(w[a : a + _BLOCK] @ col[a : a + _BLOCK]) for a in blocks) / wsum
                )
        shift[p] = (y.sum() if w is None else w @ y) / wsum
        shift[icpt] = 0.0
    return Xc, icpt, w, wsum, shift


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
        X: FloatArray | ColumnMatrix,
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
        Xc, icpt, w, wsum, shift = _first_pass(y, X, intercept, weights)
        n, p = Xc.shape
        nleaf = tree.sizes[-1]
        step = max(1, _CHUNK_CELLS // (p + 1))
        # rows sorted by leaf (as data usually is, by id): the leaf sums are runs of each chunk,
        # with no n-row temporaries; otherwise one bincount per column
        ordered = _non_decreasing(tree.leaf, step)
        leaf = np.zeros((nleaf, p + 2)) if ordered else _leaf_sums(y, Xc, shift, tree, w)
        # the cross-product of the centred [X y], accumulated over row chunks
        dtd = np.zeros((p + 1, p + 1))
        rows = _Rows(y, Xc, w, shift)
        # sorted rows: chunks of whole leaves, so that balanced leaves are summed by strides
        for a, b in _chunks(n, step, tree.leaf if ordered else None):
            Dc, WDc = rows.centred(a, b)
            dtd += gram(Dc, WDc)
            if ordered:
                lo, block = _run_sums(tree.leaf[a:b], WDc, None if w is None else w[a:b])
                leaf[lo : lo + block.shape[0]] += block
        # column by column: numpy's axis-0 sum of a narrow table is ~10x slower (480 us for
        # 40,000 x 3)
        colsum = np.array([leaf[:, j].sum() for j in range(1, p + 2)])
        nobs = n if w is None or not frequency else int(round(wsum))
        ldw = 0.0 if w is None or frequency else float(np.log(w).sum())
        return cls(nobs, p, icpt, shift, colsum, dtd, leaf, tree, wsum, ldw)

    def leaf_sizes(self) -> FloatArray:
        """Each leaf's size (weight total)."""
        return self.leaf[:, 0]

    def leaf_size_range(self) -> tuple[float, float]:
        """The smallest and largest leaf size (weight total)."""
        sizes = self.leaf[:, 0]
        return float(sizes.min()), float(sizes.max())

    def leaf_blocks(self) -> Iterator[tuple[int, FloatArray]]:
        """The leaf table in blocks of consecutive leaves: (first leaf, its rows of the table)."""
        step = max(1, _CHUNK_CELLS // (self.p + 2))
        for i in range(0, self.leaf.shape[0], step):
            yield i, self.leaf[i : i + step]

    def leaf_table(self) -> FloatArray:
        """Per leaf, its size and ``sum_g w_i (d_i - shift)``."""
        return self.leaf

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


@dataclass(frozen=True)
class RowSums:
    """`NestedStatistics` of rows held in memory and sorted by leaf, without the leaf table.

    The leaf sums are read again from the rows, a block of whole leaves at a time, whenever they
    are needed (building the engine, the conditional modes): a leaf table is as large as the
    rows' ``[X y]`` when leaves hold a few rows (122 MB for the 4 million pupils of the
    8-million-row seed design), and nothing but the rows themselves is kept for it.

    Attributes
    ----------
    n, p, intercept, shift, dtd, tree, wsum, ldw
        As `NestedStatistics`.
    y, X, weights
        The rows: the response, the fixed-effects columns, the row weights (or None).
    """

    n: int
    p: int
    intercept: int | None
    shift: FloatArray
    dtd: FloatArray
    tree: Tree
    y: FloatArray = field(repr=False)
    X: ColumnMatrix = field(repr=False)
    weights: FloatArray | None = field(repr=False)
    wsum: float
    ldw: float

    @classmethod
    def from_rows(
        cls,
        y: FloatArray,
        X: FloatArray | ColumnMatrix,
        tree: Tree,
        *,
        weights: FloatArray | None = None,
        frequency: bool = False,
    ) -> RowSums | None:
        """The statistics of rows sorted by leaf (None when they are not).

        Centred as `NestedStatistics.from_arrays` centres them.
        """
        step = max(1, _CHUNK_CELLS // (X.shape[1] + 1))
        if not _non_decreasing(tree.leaf, step):
            return None
        y = np.asarray(y, dtype=np.float64)
        Xc, icpt, w, wsum, shift = _first_pass(y, X, -1, weights)
        n, p = Xc.shape
        dtd = np.zeros((p + 1, p + 1))
        rows = _Rows(y, Xc, w, shift)
        for a, b in _chunks(n, step):
            Dc, WDc = rows.centred(a, b)
            dtd += gram(Dc, WDc)
        nobs = n if w is None or not frequency else int(round(wsum))
        ldw = 0.0 if w is None or frequency else float(np.log(w).sum())
        return cls(nobs, p, icpt, shift, dtd, tree, y, Xc, w, wsum, ldw)

    def _size_runs(self) -> Iterator[tuple[int, FloatArray]]:
        """The leaf sizes (weight totals) of a block of rows at a time: (first leaf, sizes)."""
        leaf, w = self.tree.leaf, self.weights
        for a, b in _chunks(leaf.size, _BLOCK, leaf):
            lo = int(leaf[a])
            local = np.subtract(leaf[a:b], lo, dtype=np.intp)
            yield lo, np.bincount(local, weights=None if w is None else w[a:b]).astype(np.float64)

    def leaf_sizes(self) -> FloatArray:
        """Each leaf's size (weight total)."""
        sizes = np.empty(self.tree.sizes[-1])
        for lo, part in self._size_runs():
            sizes[lo : lo + part.size] = part
        return sizes

    def leaf_size_range(self) -> tuple[float, float]:
        """The smallest and largest leaf size (weight total), with no leaf-long vector."""
        lo, hi = np.inf, -np.inf
        for _, part in self._size_runs():
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        return lo, hi

    def leaf_blocks(self) -> Iterator[tuple[int, FloatArray]]:
        """The leaf table in blocks of whole leaves, from the rows: (first leaf, its sums)."""
        leaf, w = self.tree.leaf, self.weights
        rows = _Rows(self.y, self.X, w, self.shift)
        for a, b in _chunks(leaf.size, max(1, _CHUNK_CELLS // (self.p + 1)), leaf):
            _, WDc = rows.centred(a, b)
            yield _run_sums(leaf[a:b], WDc, None if w is None else w[a:b])

    def leaf_table(self) -> FloatArray:
        """Per leaf, its size and ``sum_g w_i (d_i - shift)`` (built now, not kept)."""
        table = np.empty((self.tree.sizes[-1], self.p + 2))
        for lo, block in self.leaf_blocks():
            table[lo : lo + block.shape[0]] = block
        return table


def row_statistics(
    y: FloatArray,
    X: FloatArray | ColumnMatrix,
    tree: Tree,
    *,
    weights: FloatArray | None = None,
    frequency: bool = False,
) -> NestedStatistics | RowSums:
    """The statistics the nested engine is built from.

    `RowSums` for rows sorted by leaf (no leaf table kept), else `NestedStatistics` (its leaf
    table, summed by bincounts).
    """
    sums = RowSums.from_rows(y, X, tree, weights=weights, frequency=frequency)
    if sums is not None:
        return sums
    return NestedStatistics.from_arrays(y, X, tree, weights=weights, frequency=frequency)
