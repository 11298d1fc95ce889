"""Building blocks of the crossed engine: the theta-free structure and the factor of the second block.

The random effects are split into the *first* term (the one with most columns, ``q1 * nlevels1``),
whose diagonal block of ``Lambda' Z' Z Lambda + I`` is block diagonal, and the *rest* (all other
terms, ``r`` columns). Eliminating the first term leaves the Schur complement

    S = I + Lambda_r' (Z_r'Z_r - N P N') Lambda_r,     N = Z_r'Z_1 (r x q1 nlevels1),

with ``P`` block diagonal (one ``q1 x q1`` block ``P_j = T1 (T1' C_j T1 + I)^-1 T1'`` per level
``j``). ``N P N'`` only touches the pairs of rest columns ``(a, b)`` that share a level ``j`` of the
first term; its lower triangle is a fixed linear map of the entries of ``P``, stored once as a
sparse matrix ``K`` of theta-free products ``N[a, j s] N[b, j t]`` (`Coupling`), so forming it is one
sparse matrix-vector product ``K vec(P)`` per evaluation. (InstEval: 1.83 million pairs on 145,400
entries.)

``S`` is factored densely (LAPACK ``potrf`` in place) when ``r`` is moderate and by SuperLU
(symmetric mode, minimum-degree ordering on ``S + S'``, no pivoting: ``S`` is SPD) above
`DENSE_MAX`. The sparse path keeps memory proportional to the factor's fill, which depends on the
design: two clustered crossed factors of 50,000 levels each (500,000 rows) factor in ~19 s and 2
GB here, while a dense factor would need 20 GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
#: 32- or 64-bit indices (`coupling` uses 32 bits where they fit).
AnyIntArray = NDArray[np.signedinteger[Any]]

#: Largest rest dimension factored densely (r^2 doubles: 512 MB at 8,000).
DENSE_MAX = 8000
#: From this size on, a Schur complement whose lower triangle is sparser than `SPARSE_DENSITY`
#: goes to SuperLU even below `DENSE_MAX` (a design nested in part fills in little).
SPARSE_FROM = 2000
SPARSE_DENSITY = 0.02
#: Pairs per chunk where `coupling` gathers (a temporary of this size, reused, not one per pair).
CHUNK = 1 << 16


def use_dense(r: int, nnz_lower: int) -> bool:
    """Whether to factor the ``r x r`` Schur complement densely.

    ``nnz_lower`` is the number of nonzeros of its lower triangle (before fill).
    """
    if r > DENSE_MAX:
        return False
    return r < SPARSE_FROM or nnz_lower > SPARSE_DENSITY * r * (r + 1) / 2


@dataclass(frozen=True, slots=True)
class Block:
    """One rest term's columns: ``offset + level * q + effect``."""

    offset: int
    nlevels: int
    q: int

    @property
    def stop(self) -> int:
        """One past the term's last column."""
        return self.offset + self.nlevels * self.q


def lam_t(T: list[FloatArray], blocks: list[Block], V: FloatArray) -> FloatArray:
    """``Lambda_r' V`` for ``V`` (r x c): ``T_k' v_l`` for every level block."""
    out = np.empty_like(V)
    for Tk, blk in zip(T, blocks, strict=True):
        sl = slice(blk.offset, blk.stop)
        if blk.q == 1:
            out[sl] = Tk[0, 0] * V[sl]
        else:
            Vb = V[sl].reshape(blk.nlevels, blk.q, -1)
            out[sl] = np.einsum("st,nsc->ntc", Tk, Vb).reshape(blk.nlevels * blk.q, -1)
    return out


def lam(T: list[FloatArray], blocks: list[Block], V: FloatArray) -> FloatArray:
    """``Lambda_r V`` for ``V`` (r x c): ``T_k v_l`` for every level block."""
    return lam_t([Tk.T for Tk in T], blocks, V)


def lam_sparse(T: list[FloatArray], blocks: list[Block]) -> sp.csc_matrix:
    """``Lambda_r`` as a sparse block-diagonal matrix."""
    return sp.block_diag(
        [
            sp.kron(sp.identity(b.nlevels, format="csr"), sp.csr_matrix(Tk))
            for Tk, b in zip(T, blocks, strict=True)
        ],
        format="csc",
    )


@dataclass(frozen=True, slots=True)
class Coupling:
    """The lower-triangle entries ``(a, b)``, ``a >= b``, of ``N P N'`` as a linear map of ``P``.

    Attributes
    ----------
    rows, cols : IntArray
        The entries: rest columns that share a level of the first term (column-major order).
    K : csr or csc matrix (nentries, nlevels1 * q1 * q1)
        ``K[u, j q1^2 + s q1 + t] = N[a, j q1 + s] N[b, j q1 + t]``, so ``(N P N')_u = (K P)_u``.
    KT : csr or csc matrix
        ``K'``, for sums over the entries per level.
    q1 : int
        Effects per level of the first term.
    off : bool array
        Entries off the diagonal (they stand for ``(a, b)`` and ``(b, a)``).
    """

    rows: IntArray
    cols: IntArray
    K: sp.csr_matrix | sp.csc_matrix
    KT: sp.csr_matrix | sp.csc_matrix
    q1: int
    off: NDArray[np.bool_]
    #: the level of each column of ``K`` when ``q1 = 1`` and the levels are in another order
    #: (`coupling` lists them by their number of nonzeros); None: level order
    levels: IntArray | None = None

    def npn(self, P: FloatArray) -> FloatArray:
        """``(N P N')`` at the entries, for block-diagonal ``P`` (nlevels1, q1, q1)."""
        p = P.reshape(-1)
        return self.K @ (p if self.levels is None else p[self.levels])

    def npn2(self, P: FloatArray, P2: FloatArray) -> tuple[FloatArray, FloatArray]:
        """`npn` of ``P`` and ``P2`` in one pass over ``K`` (about 1.2 times one `npn`)."""
        both = np.column_stack([P.reshape(-1), P2.reshape(-1)])
        out = self.K @ (both if self.levels is None else both[self.levels])
        return out[:, 0], out[:, 1]

    def quadratic(self, X_at: FloatArray, nlevels: int) -> FloatArray:
        """``Q_j = N_j' X N_j`` (nlevels, q1, q1) for symmetric ``X`` read at the entries."""
        q1 = self.q1
        off = self.off
        R = self.KT @ np.where(off, X_at, 0.0)
        diag = self.KT @ np.where(off, 0.0, X_at)
        if self.levels is not None:
            R[self.levels], diag[self.levels] = R.copy(), diag.copy()
        R, diag = R.reshape(nlevels, q1, q1), diag.reshape(nlevels, q1, q1)
        return R + R.transpose(0, 2, 1) + diag


def unique_inverse(keys: AnyIntArray, bound: int) -> tuple[AnyIntArray, AnyIntArray]:
    """``np.unique(keys, return_inverse=True)`` for keys in ``[0, bound)``.

    By a presence table (no sort) when ``bound`` is small next to the number of keys.
    """
    if bound > 4 * keys.size + (1 << 22):
        return np.unique(keys, return_inverse=True)
    present = np.zeros(bound, dtype=bool)
    present[keys] = True
    uniq = np.flatnonzero(present)
    # only the present slots are read: no cumulative sum over the whole table (35 ms at 3.4 M)
    # 32-bit positions where they fit: half the table's pages touched
    it: type[np.signedinteger[Any]] = np.int32 if uniq.size < 2**31 else np.int64
    index = np.empty(bound, dtype=it)
    index[uniq] = np.arange(uniq.size, dtype=it)
    return uniq, index[keys]


def level_pattern(
    obs: IntArray,
    coord: IntArray,
    zval: FloatArray,
    codes1: IntArray,
    Z1: FloatArray,
    r: int,
    n1: int,
) -> tuple[IntArray, IntArray, FloatArray]:
    """The nonzeros of ``N = Z_r' Z_1`` grouped by the first term's level.

    ``(obs, coord, zval)`` lists the entries of ``Z_r`` (one per observation and rest column of its
    levels, zeros included, so the pattern is closed over each level's effects). Returns the level
    ``j`` and rest column ``a`` of each pattern entry, sorted by ``(j, a)``, and the values
    ``N[a, j q1 + s]`` (nnz, q1).
    """
    if Z1.shape[1] == 1:
        # scipy's conversion to compressed rows sums the duplicates and sorts each row in
        # compiled code, keeping entries that sum to zero (InstEval: 4 ms against 14 ms by keys)
        grouped = sp.csr_matrix((zval * Z1[obs, 0], (codes1[obs], coord)), shape=(n1, r))
        grouped.sum_duplicates()
        level = np.repeat(np.arange(n1, dtype=np.int64), np.diff(grouped.indptr))
        return level, grouped.indices.astype(np.int64), grouped.data[:, None]
    keys = codes1[obs].astype(np.int64) * r + coord
    ukeys, inv = unique_inverse(keys, n1 * r)
    vals = np.empty((ukeys.size, Z1.shape[1]))
    for s in range(Z1.shape[1]):
        vals[:, s] = np.bincount(inv, weights=zval * Z1[obs, s], minlength=ukeys.size)
    return ukeys // r, ukeys % r, vals


def count_crossprods(
    codes: list[AnyIntArray], blocks: list[Block], D: FloatArray
) -> tuple[FloatArray, sp.csc_matrix]:
    """``Z_r'D`` and ``Z_r'Z_r`` for rest terms that are intercepts of ones, from their codes.

    ``Z_r'D`` is each level's column sums and ``Z_r'Z_r`` the counts of the levels (its diagonal)
    and of the cells of two terms: bincounts, with no ``Z_r`` built and multiplied (InstEval: 1.7
    against 7.3 ms).
    """
    r = blocks[-1].stop
    ZrD = np.empty((r, D.shape[1]))
    rows, cols, vals = [], [], []
    for i, (ci, bi) in enumerate(zip(codes, blocks, strict=True)):
        for a in range(D.shape[1]):
            ZrD[bi.offset : bi.stop, a] = np.bincount(ci, weights=D[:, a], minlength=bi.nlevels)
        level = np.arange(bi.nlevels)
        rows.append(bi.offset + level)
        cols.append(bi.offset + level)
        vals.append(np.bincount(ci, minlength=bi.nlevels).astype(np.float64))
        for cj, bj in zip(codes[:i], blocks[:i], strict=False):
            cells = ci.astype(np.int64) * bj.nlevels + cj
            if bi.nlevels * bj.nlevels <= 4 * cells.size:
                counts = np.bincount(cells, minlength=bi.nlevels * bj.nlevels)
                cells = np.flatnonzero(counts)
                counts = counts[cells]
            else:
                cells, counts = np.unique(cells, return_counts=True)
            li, lj = np.divmod(cells, bj.nlevels)
            rows += [bi.offset + li, bj.offset + lj]
            cols += [bj.offset + lj, bi.offset + li]
            vals += [counts.astype(np.float64)] * 2
    zrzr = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, r)
    )
    return ZrD, zrzr


def cell_pairs(
    row: IntArray, counts: FloatArray, zrzr: sp.spmatrix, blocks: list[Block]
) -> FloatArray:
    """``C_kl = sum_cells N_cell^2`` for every two terms, first term first, zero diagonal.

    For intercepts of ones the entries of ``N`` (``counts`` at rest columns ``row``) and of
    ``Z_r'Z_r`` count the rows in the cells of two factors; `tiers.engine.moment_start` needs
    the sums of their squares (exact in floating point: integers), which it would otherwise get
    by sorting the rows' pairs of codes (InstEval: three sorts of 73,421 keys, ~6 ms).
    """
    nb = len(blocks)
    block = np.repeat(np.arange(nb), [b.nlevels for b in blocks])  # of each rest column
    C = np.zeros((nb + 1, nb + 1))
    C[0, 1:] = C[1:, 0] = np.bincount(block[row], weights=counts**2, minlength=nb)
    z = sp.coo_matrix(zrzr)
    C[1:, 1:] = np.bincount(
        block[z.row] * nb + block[z.col], weights=z.data**2, minlength=nb * nb
    ).reshape(nb, nb)
    np.fill_diagonal(C, 0.0)  # S_k: the moment start counts them itself
    return C


def _index_type(r: int, total: int) -> type[np.signedinteger[Any]]:
    # 32-bit indices where they fit: the pair arrays (1.8 million on InstEval) are gathered
    # and scattered several times, and half the bytes halves the set-up (70 -> 40 ms)
    return np.int32 if r * r < 2**31 and total < 2**31 else np.int64


def _scalar_coupling(level: IntArray, row: IntArray, v: FloatArray, n1: int, r: int) -> Coupling:
    """`coupling` for one effect per level, the levels taken by their number of nonzeros.

    Levels with ``k`` nonzeros share one pattern of pairs (the ``k (k + 1) / 2`` entries of a
    lower triangle), so each such class writes its keys and products straight from a ``(levels,
    k)`` table of its rows and values; listing the pairs one level after another took a running
    sum to index them and a repeat and a gather per array. The keys number the entries of the
    packed lower triangle (``r (r + 1) / 2``), whose tables of `unique_inverse` stay in cache
    (InstEval: 2,972 levels in 94 classes, 1.83 million pairs on 145,400 entries).
    """
    k = np.bincount(level, minlength=n1)
    start = np.zeros(n1 + 1, dtype=np.int64)
    np.cumsum(k, out=start[1:])
    order = np.argsort(k, kind="stable")
    indptr = np.zeros(n1 + 1, dtype=np.int64)
    np.cumsum((k * (k + 1) // 2)[order], out=indptr[1:])
    total = int(indptr[-1])
    it = _index_type(r, total)
    # packed column-major lower triangle: entry (a, b), a >= b, is a + base[b]
    base = (np.arange(r, dtype=np.int64) * (2 * r - 1 - np.arange(r))) // 2
    rw, rb = row.astype(it), base[row].astype(it)
    target = np.empty(total, dtype=it)
    K = np.empty(total)
    sizes = k[order]
    # pairs (e, f), f <= e, e ascending: the pairs of k nonzeros are the first k (k + 1) / 2 of
    # any larger k's (rows are sorted within a level, so (row_e, row_f) is in the lower triangle)
    e_all, f_all = np.tril_indices(int(sizes[-1]) if n1 else 0)
    edges = np.flatnonzero(np.diff(sizes)) + 1
    for c0, c1 in zip(np.r_[0, edges], np.r_[edges, n1], strict=True):
        size = int(sizes[c0])
        if size == 0:
            continue
        at = start[order[c0:c1], None] + np.arange(size)
        m = size * (size + 1) // 2
        e, f = e_all[:m], f_all[:m]
        span = slice(int(indptr[c0]), int(indptr[c1]))
        keys = target[span].reshape(c1 - c0, m)
        np.take(rb[at], f, axis=1, out=keys)
        keys += rw[at][:, e]
        V = v[at]
        products = K[span].reshape(c1 - c0, m)
        np.take(V, e, axis=1, out=products)
        products *= V[:, f]
    uniq, entry = unique_inverse(target, r * (r + 1) // 2)
    del target
    cols = np.searchsorted(base + np.arange(r), uniq, side="right") - 1
    rows = uniq - base[cols]
    Kcsc = sp.csc_matrix((K, entry, indptr.astype(it)), shape=(uniq.size, n1))
    return Coupling(rows, cols, Kcsc, Kcsc.T, 1, rows != cols, order)


def coupling(level: IntArray, row: IntArray, vals: FloatArray, n1: int, r: int) -> Coupling:
    """All pairs ``(a, b)``, ``a >= b``, within each level's column of the pattern of ``N``."""
    q1 = vals.shape[1]
    if q1 == 1:
        return _scalar_coupling(level, row, vals[:, 0], n1, r)
    nnz = level.size
    colptr = np.searchsorted(level, np.arange(n1 + 1))
    reps = np.arange(nnz) - colptr[level] + 1
    total = int(reps.sum())
    it = _index_type(r, total)
    reps = reps.astype(it)
    # pair (e, f) for each nonzero e and f from its level's first nonzero to e: the e side is a
    # repeat (sequential), only the f side a gather. f counts up by one within e's run and jumps
    # to the level's first nonzero where the run begins: a running sum, in place
    first = colptr[level].astype(it)
    second: AnyIntArray = np.ones(total, dtype=it)
    second[(np.cumsum(reps, dtype=it) - reps)[1:]] = first[1:] - np.arange(nnz - 1, dtype=it)
    second[0] = first[0]
    np.cumsum(second, out=second)
    rw = row.astype(it)
    target = np.repeat(rw, reps)
    rw *= it(r)
    # the f side's gathers by chunks: no temporaries as long as the pair list
    for c in range(0, total, CHUNK):
        target[c : c + CHUNK] += rw[second[c : c + CHUNK]]
    uniq, entry = unique_inverse(target, r * r)
    del target
    K = (np.repeat(vals, reps, axis=0)[:, :, None] * vals[second][:, None, :]).reshape(-1)
    del second
    cols, rows = np.divmod(uniq.astype(np.int64), r)
    st = np.arange(q1 * q1)
    col = (np.repeat(level, reps) * (q1 * q1))[:, None] + st[None, :]
    Kmat = sp.csr_matrix(
        (K, (np.repeat(entry, q1 * q1), col.reshape(-1))), shape=(uniq.size, n1 * q1 * q1)
    )
    return Coupling(rows, cols, Kmat, Kmat.T.tocsr(), q1, rows != cols)


def lower_dot(
    A: NDArray[np.floating[Any]], B: FloatArray, theta: FloatArray, chunk: int = 512
) -> float:
    """``sum_ab theta_a theta_b A_ab B_ab``, symmetric ``A`` and ``B`` held in their lower triangles.

    By blocks of columns (no copy of the ``r x r`` arrays); the strict upper triangle of either
    is never read as data.
    """
    r = A.shape[0]
    total = 0.0
    for j0 in range(0, r, chunk):
        j1 = min(r, j0 + chunk)
        blk = A[j0:, j0:j1] * B[j0:, j0:j1]
        blk *= theta[j0:, None]
        blk *= theta[None, j0:j1]
        top = blk[: j1 - j0]
        lower = float(blk.sum()) - float(np.triu(top, 1).sum())  # diagonal once
        total += 2.0 * lower - float(np.trace(top))
    return total
