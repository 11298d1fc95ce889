"""Building blocks of the crossed engine: the theta-free structure and the factor of the second block.

The random effects are split into the *first* term (the one with most columns, ``q1 * nlevels1``),
whose diagonal block of ``Lambda' Z' Z Lambda + I`` is block diagonal, and the *rest* (all other
terms, ``r`` columns). Eliminating the first term leaves the Schur complement

    S = I + Lambda_r' (Z_r'Z_r - N P N') Lambda_r,     N = Z_r'Z_1 (r x q1 nlevels1),

with ``P`` block diagonal (one ``q1 x q1`` block ``P_j = T1 (T1' C_j T1 + I)^-1 T1'`` per level
``j``). ``N P N'`` only touches the pairs of rest columns ``(a, b)`` that share a level ``j`` of the
first term; its lower triangle is a fixed linear map of the entries of ``P``, stored once as a
sparse matrix ``K`` of theta-free products ``N[a, j s] N[b, j t]`` (`Coupling`), so forming it is one
sparse matrix-vector product ``K vec(P)`` per evaluation. (InstEval: 1.4 million pairs on 0.3 million
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

    def npn(self, P: FloatArray) -> FloatArray:
        """``(N P N')`` at the entries, for block-diagonal ``P`` (nlevels1, q1, q1)."""
        return self.K @ P.reshape(-1)

    def quadratic(self, X_at: FloatArray, nlevels: int) -> FloatArray:
        """``Q_j = N_j' X N_j`` (nlevels, q1, q1) for symmetric ``X`` read at the entries."""
        q1 = self.q1
        off = self.off
        R = (self.KT @ np.where(off, X_at, 0.0)).reshape(nlevels, q1, q1)
        diag = (self.KT @ np.where(off, 0.0, X_at)).reshape(nlevels, q1, q1)
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
    # 32-bit positions where they fit: half the table's pages touched (InstEval's 3.4 million)
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
    keys = codes1[obs].astype(np.int64) * r + coord
    ukeys, inv = unique_inverse(keys, n1 * r)
    vals = np.empty((ukeys.size, Z1.shape[1]))
    for s in range(Z1.shape[1]):
        vals[:, s] = np.bincount(inv, weights=zval * Z1[obs, s], minlength=ukeys.size)
    return ukeys // r, ukeys % r, vals


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


def coupling(level: IntArray, row: IntArray, vals: FloatArray, n1: int, r: int) -> Coupling:
    """All pairs ``(a, b)``, ``a >= b``, within each level's column of the pattern of ``N``."""
    q1 = vals.shape[1]
    nnz = level.size
    colptr = np.searchsorted(level, np.arange(n1 + 1))
    reps = np.arange(nnz) - colptr[level] + 1
    # 32-bit indices where they fit: the pair arrays (1.8 million on InstEval) are gathered
    # and scattered several times, and half the bytes halves the set-up (70 -> 40 ms)
    small = r * r < 2**31 and int(reps.sum()) < 2**31
    it: type[np.signedinteger[Any]] = np.int32 if small else np.int64
    reps = reps.astype(it)
    # pair (e, f) for each nonzero e and f from its level's first nonzero to e: the e side is a
    # repeat (sequential), only the f side a gather. f counts up by one within e's run and jumps
    # to the level's first nonzero where the run begins: a running sum, in place
    total = int(reps.sum())
    first = colptr[level].astype(it)
    second: AnyIntArray = np.ones(total, dtype=it)
    second[(np.cumsum(reps, dtype=it) - reps)[1:]] = first[1:] - np.arange(nnz - 1, dtype=it)
    second[0] = first[0]
    np.cumsum(second, out=second)
    rw = row.astype(it)
    target = np.repeat(rw, reps)
    rw *= it(r)
    # the f side's gathers by chunks: four arrays as long as the pair list, no temporaries as
    # long (InstEval's 1.83 million pairs: peak 52 -> 31 MB, fewer fresh pages to fault in)
    chunks = [slice(c, c + CHUNK) for c in range(0, total, CHUNK)]
    for c in chunks:
        target[c] += rw[second[c]]
    uniq, entry = unique_inverse(target, r * r)
    del target
    if q1 == 1:
        v = vals[:, 0]
        K = np.repeat(v, reps)
        for c in chunks:
            K[c] *= v[second[c]]
    else:
        K = (np.repeat(vals, reps, axis=0)[:, :, None] * vals[second][:, None, :]).reshape(-1)
    del second
    cols, rows = np.divmod(uniq.astype(np.int64), r)
    if q1 == 1:
        # the pairs come level by level: K is already in compressed-column form (no sort)
        indptr = np.zeros(n1 + 1, dtype=it)
        np.cumsum(np.bincount(level, weights=reps, minlength=n1).astype(it), out=indptr[1:])
        Kcsc = sp.csc_matrix((K, entry, indptr), shape=(uniq.size, n1))
        return Coupling(rows, cols, Kcsc, Kcsc.T, q1, rows != cols)
    st = np.arange(q1 * q1)
    col = (np.repeat(level, reps) * (q1 * q1))[:, None] + st[None, :]
    Kmat = sp.csr_matrix(
        (K, (np.repeat(entry, q1 * q1), col.reshape(-1))), shape=(uniq.size, n1 * q1 * q1)
    )
    return Coupling(rows, cols, Kmat, Kmat.T.tocsr(), q1, rows != cols)


def lower_dot(A: FloatArray, B: FloatArray, theta: FloatArray, chunk: int = 512) -> float:
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
