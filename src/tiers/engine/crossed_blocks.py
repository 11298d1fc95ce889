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

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg import lapack
from scipy.sparse.linalg import SuperLU, splu

from tiers._threads import limit_blas
from tiers.engine.crossed_direct import DirectCoupling

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
#: BLAS threads for the dense factorization and inversion of S (``r >= THREADED_FROM`` only). One
#: by default, like the rest of the fit: on an idle 2-core machine two threads made InstEval's
#: potrf 1.2x and potri 1.8x faster, but with another busy process they made a fit 2-6x slower;
#: at load 5 on the shared 2-core machine, r = 3,706 (the ratings design): potrf 0.24 s on one
#: thread against 0.72 s on two, potri 0.44 s against 1.42 s.
#: Raise it (e.g. to `blas_threads()`) on a machine with idle cores.
BLAS_THREADS = 1
THREADED_FROM = 512
#: Columns of S^-1 per solve when the sparse factor is inverted on a pattern.
_CHUNK = 256
#: Most work (about ``2 r nnz(LU)`` flops, r solves) spent on conditional variances from a sparse
#: factor; above it they are reported as NaN (a minute or two here).
COND_VAR_MAX_FLOPS = 2e11


def use_dense(r: int, nnz_lower: int) -> bool:
    """Whether to factor the ``r x r`` Schur complement densely.

    ``nnz_lower`` is the number of nonzeros of its lower triangle (before fill).
    """
    if r > DENSE_MAX:
        return False
    return r < SPARSE_FROM or nnz_lower > SPARSE_DENSITY * r * (r + 1) / 2


def blas_threads() -> int:
    """The cores this process may use, at most 4 (a value for `BLAS_THREADS`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


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
    # repeat (sequential), only the f side a gather
    second: AnyIntArray = np.arange(int(reps.sum()), dtype=it)
    base: AnyIntArray = np.cumsum(reps, dtype=it) - reps - colptr[level].astype(it)
    second -= np.repeat(base, reps)
    rw = row.astype(it)
    target = rw[second]
    target *= it(r)
    target += np.repeat(rw, reps)
    uniq, entry = unique_inverse(target, r * r)
    if q1 == 1:
        K = vals[:, 0][second]
        K *= np.repeat(vals[:, 0], reps)
    else:
        K = (np.repeat(vals, reps, axis=0)[:, :, None] * vals[second][:, None, :]).reshape(-1)
    rows, cols = (uniq % r).astype(np.int64), (uniq // r).astype(np.int64)
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


def _scales(T: list[FloatArray], blocks: list[Block]) -> FloatArray:
    """Per rest column, its term's theta (intercept-only terms: ``Lambda_r`` is diagonal)."""
    return np.concatenate([np.full(b.nlevels, Tk[0, 0]) for Tk, b in zip(T, blocks, strict=True)])


class DenseRest:
    """``S`` as a dense Fortran-ordered matrix, factored by LAPACK in place.

    With a `DirectCoupling` and intercept-only terms ``S`` is formed from the dense ``N P N'``
    in place (``Z_r'Z_r`` kept sparse: diagonal for one rest term), without reading the lower
    triangle entry by entry (``r^2 / 2`` gathers and scatters: ~0.5 s an evaluation at r = 3,706).
    """

    def __init__(
        self,
        zrzr: FloatArray | sp.spmatrix,
        coupling: Coupling | DirectCoupling,
        blocks: list[Block],
    ) -> None:
        r = zrzr.shape[0]
        self.r = r
        self.blocks = blocks
        self.coupling = coupling
        self.intercepts = all(b.q == 1 for b in blocks)
        self.direct = isinstance(coupling, DirectCoupling) and self.intercepts
        if sp.issparse(zrzr):
            self.zrzr_coo = sp.coo_matrix(zrzr)
            self._zrzr_dense: FloatArray | None = None
        else:
            self._zrzr_dense = np.asfortranarray(zrzr)
        if self.direct:
            # S is held in the coupling's order (popular columns first), its lower triangle
            assert isinstance(coupling, DirectCoupling)
            self.perm = coupling.perm
            z = sp.coo_matrix(zrzr)
            low = z.row >= z.col
            self.zpos = coupling.permuted_lower(
                z.row[low].astype(np.int64), z.col[low].astype(np.int64)
            )
            self.zval = z.data[low]
        self.work = np.empty((r, r), order="F")
        self.threads = BLAS_THREADS if r >= THREADED_FROM else 1
        self.state = "empty"

    @property
    def zrzr(self) -> FloatArray:
        """``Z_r'Z_r`` dense (made on first use when it was given sparse)."""
        if self._zrzr_dense is None:
            self._zrzr_dense = np.asfortranarray(self.zrzr_coo.toarray())
        return self._zrzr_dense

    @cached_property
    def target(self) -> IntArray:
        """The coupling's entries' positions in the column-major ``S``."""
        return self.coupling.rows + self.coupling.cols * self.r

    @cached_property
    def combo(self) -> IntArray:
        """Each entry's pair of terms (intercept-only terms), into ``outer(theta, theta)``."""
        term = np.repeat(np.arange(len(self.blocks)), [b.nlevels for b in self.blocks])
        return term[self.coupling.rows] * len(self.blocks) + term[self.coupling.cols]

    def scale_at(self, theta: FloatArray) -> FloatArray:
        """``theta_a theta_b`` at the coupling's entries (intercept-only terms)."""
        return np.outer(theta, theta).reshape(-1)[self.combo]

    def factor(self, P: FloatArray, T: list[FloatArray]) -> float:
        """Form ``S`` for the first term's ``P`` (nlevels1, q1, q1), factor it; ``log det S``."""
        S = self.work
        flat = S.reshape(-1, order="F")
        if self.direct:
            assert isinstance(self.coupling, DirectCoupling)
            G = self.coupling.dense_kept(P)
            if len(T) == 1:  # one pass over the r x r array: S = t^2 (Z_r'Z_r - G) + I
                t2 = float(T[0][0, 0]) ** 2
                np.multiply(G, -t2, out=S)
                np.add.at(flat, self.zpos, t2 * self.zval)
            else:
                theta = _scales(T, self.blocks)[self.perm]
                np.negative(G, out=S)
                np.add.at(flat, self.zpos, self.zval)
                S *= theta[:, None]
                S *= theta[None, :]
        elif self.intercepts:
            g = self.coupling.npn(P)
            theta = _scales(T, self.blocks)
            np.multiply(self.zrzr, theta[:, None], out=S)
            S *= theta[None, :]
            flat[self.target] -= g * self.scale_at(np.array([Tk[0, 0] for Tk in T]))
        else:  # lower triangle -> full, then Lambda' G Lambda
            g = self.coupling.npn(P)
            S[...] = self.zrzr
            flat[self.target] -= g
            low = np.tril(S)
            S[...] = low + low.T
            S[np.diag_indices(self.r)] *= 0.5
            S[...] = lam_t(T, self.blocks, np.ascontiguousarray(lam_t(T, self.blocks, S).T))
        S[np.diag_indices(self.r)] += 1.0
        with limit_blas(self.threads):
            _, info = lapack.dpotrf(S, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            self.state = "empty"
            raise np.linalg.LinAlgError(f"the Schur complement is not positive definite ({info})")
        self.state = "factor"
        return 2.0 * float(np.log(np.diagonal(S)).sum())

    def coupled_trace(self, P2: FloatArray, T: list[FloatArray]) -> float:
        """``tr(Lambda_r S^-1 Lambda_r N P2 N')`` for intercept-only terms; needs `invert` first.

        ``P2`` (nlevels1, 1, 1) is diagonal, so ``N P2 N'`` is read on the coupling's entries or,
        with a `DirectCoupling`, formed densely and summed with ``S^-1`` over the lower triangle.
        """
        assert self.state == "inverse" and self.intercepts
        theta = _scales(T, self.blocks)
        if self.direct:
            assert isinstance(self.coupling, DirectCoupling)
            return lower_dot(self.work, self.coupling.dense_kept(P2), theta[self.perm])
        Sinv = self.work.reshape(-1, order="F")
        X_at = Sinv[self.target] * self.scale_at(np.array([Tk[0, 0] for Tk in T]))
        h = self.coupling.npn(P2)
        return float((np.where(self.coupling.off, 2.0, 1.0) * X_at) @ h)

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``S^-1 rhs``."""
        assert self.state == "factor"
        if not self.direct:
            x, info = lapack.dpotrs(self.work, rhs, lower=1)
            assert info == 0
            return x
        y, info = lapack.dpotrs(self.work, rhs[self.perm], lower=1)
        assert info == 0
        x = np.empty_like(y)
        x[self.perm] = y
        return x

    def inverse_diagonal(self) -> FloatArray:
        """The diagonal of ``S^-1`` (original order), by `invert`."""
        d = np.diagonal(self.invert())
        if not self.direct:
            return d.copy()
        out = np.empty(self.r)
        out[self.perm] = d
        return out

    def invert(self) -> FloatArray:
        """``S^-1`` in place (lower triangle valid); the factor is lost."""
        assert self.state == "factor"
        with limit_blas(self.threads):
            _, info = lapack.dpotri(self.work, lower=1, overwrite_c=1)
        assert info == 0
        self.state = "inverse"
        return self.work

    def inverse_at(self, rows: IntArray, cols: IntArray, T: list[FloatArray]) -> FloatArray:
        """``X = Lambda_r S^-1 Lambda_r'`` at the entries ``(rows, cols)``, ``rows >= cols``."""
        Si = self.invert()
        if self.intercepts:
            theta = _scales(T, self.blocks)
            if self.direct:
                assert isinstance(self.coupling, DirectCoupling)
                at = self.coupling.permuted_lower(rows, cols)
            else:
                at = rows + cols * self.r
            return Si.reshape(-1, order="F")[at] * theta[rows] * theta[cols]
        low = np.tril(Si)
        full = low + low.T - np.diag(np.diagonal(Si))
        X = lam(T, self.blocks, np.ascontiguousarray(lam(T, self.blocks, full).T))
        return X[rows, cols]


class SparseRest:
    """``S`` on its (symmetric) sparsity pattern, factored by SuperLU."""

    def __init__(
        self, zrzr: sp.spmatrix, coupling: Coupling | DirectCoupling, blocks: list[Block]
    ) -> None:
        r = zrzr.shape[0]
        self.r = r
        self.blocks = blocks
        self.coupling = coupling
        off = coupling.off
        low = coupling.rows + coupling.cols * r
        up = (coupling.cols + coupling.rows * r)[off]
        zz = sp.coo_matrix(zrzr)
        ztarget = zz.row.astype(np.int64) + zz.col.astype(np.int64) * r
        diag = np.arange(r, dtype=np.int64) * (r + 1)
        pattern = np.unique(np.concatenate([ztarget, low, up, diag]))
        self.indices = (pattern % r).astype(np.int32)
        colidx = pattern // r
        self.indptr = np.searchsorted(colidx, np.arange(r + 1)).astype(np.int32)
        self.base = np.zeros(pattern.size)
        np.add.at(self.base, np.searchsorted(pattern, ztarget), zz.data)
        self.pos_low = np.searchsorted(pattern, low)
        self.pos_up = np.searchsorted(pattern, up)
        self.off = off
        self.diagpos = np.searchsorted(pattern, diag)
        self.rowcol = (self.indices.astype(np.int64), colidx)
        self.intercepts = all(b.q == 1 for b in blocks)
        self.lu: SuperLU | None = None
        self.lam: sp.csc_matrix | None = None

    def factor(self, P: FloatArray, T: list[FloatArray]) -> float:
        """Form ``S`` for the first term's ``P`` blocks and factor it; returns ``log det S``."""
        g = self.coupling.npn(P)
        data = self.base.copy()
        data[self.pos_low] -= g
        data[self.pos_up] -= g[self.off]
        self.lam = lam_sparse(T, self.blocks)
        if self.intercepts:
            theta = _scales(T, self.blocks)
            data *= theta[self.rowcol[0]] * theta[self.rowcol[1]]
            data[self.diagpos] += 1.0
            S = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.r, self.r))
        else:
            G = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.r, self.r))
            S = (self.lam.T @ G @ self.lam + sp.identity(self.r, format="csc")).tocsc()
        self.lu = splu(
            S,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
        d = self.lu.U.diagonal()
        if np.any(d <= 0.0):
            raise np.linalg.LinAlgError("the Schur complement is not positive definite")
        return float(np.log(d).sum())

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``S^-1 rhs``."""
        assert self.lu is not None
        return self.lu.solve(np.asarray(rhs, dtype=np.float64))

    def inverse_at(self, rows: IntArray, cols: IntArray, T: list[FloatArray]) -> FloatArray:
        """``X = Lambda_r S^-1 Lambda_r'`` at ``(rows, cols)``, a column block of ``X`` at a time.

        NaN when that would cost more than `COND_VAR_MAX_FLOPS`.
        """
        assert self.lam is not None and self.lu is not None
        if 2.0 * self.r * (self.lu.L.nnz + self.lu.U.nnz) > COND_VAR_MAX_FLOPS:
            return np.full(rows.size, np.nan)
        lam_t_csc = self.lam.T.tocsc()
        order = np.argsort(cols, kind="stable")
        sorted_cols = cols[order]
        out = np.empty(rows.size)
        for c0 in range(0, self.r, _CHUNK):
            c1 = min(self.r, c0 + _CHUNK)
            lo, hi = np.searchsorted(sorted_cols, [c0, c1])
            if lo == hi:
                continue
            Xc = self.lam @ self.solve(lam_t_csc[:, c0:c1].toarray())
            sel = order[lo:hi]
            out[sel] = Xc[rows[sel], cols[sel] - c0]
        return out
