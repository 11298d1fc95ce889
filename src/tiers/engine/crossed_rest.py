"""The factor of the crossed engine's second block, ``S`` (`tiers.engine.crossed_blocks`).

`DenseRest` factors ``S`` densely (LAPACK ``potrf`` in place) while ``r`` is at most
`tiers.engine.crossed_blocks.DENSE_MAX`; `SparseRest` by SuperLU above it. Both form ``S`` from
the theta-free structure of `tiers.engine.crossed_blocks` at each theta.
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg import lapack
from scipy.sparse.linalg import SuperLU, splu

from tiers._threads import limit_blas
from tiers.engine.crossed_blocks import (
    Block,
    Coupling,
    FloatArray,
    IntArray,
    lam,
    lam_sparse,
    lam_t,
    lower_dot,
)
from tiers.engine.crossed_direct import DirectCoupling
from tiers.engine.spd_inverse import RealArray, invert_from_cholesky

#: BLAS threads for the dense factorization and inversion of S (``r >= THREADED_FROM`` only). One
#: by default, like the rest of the fit: on an idle 2-core machine two threads made InstEval's
#: potrf 1.2x and potri 1.8x faster, but with another busy process they made a fit 2-6x slower;
#: at load 5 on the shared 2-core machine, r = 3,706 (the ratings design): potrf 0.24 s on one
#: thread against 0.72 s on two, potri 0.44 s against 1.42 s.
#: Raise it (e.g. to `blas_threads()`) on a machine with idle cores.
BLAS_THREADS = 1
THREADED_FROM = 512
#: Columns of S^-1 per solve when the sparse factor is inverted on a pattern.
CHUNK = 256
#: Most work (about ``2 r nnz(LU)`` flops, r solves) spent on conditional variances from a sparse
#: factor; above it they are reported as NaN (a minute or two here).
COND_VAR_MAX_FLOPS = 2e11


def blas_threads() -> int:
    """The cores this process may use, at most 4 (a value for `BLAS_THREADS`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _scales(T: list[FloatArray], blocks: list[Block]) -> FloatArray:
    """Per rest column, its term's theta (intercept-only terms: ``Lambda_r`` is diagonal)."""
    return np.concatenate([np.full(b.nlevels, Tk[0, 0]) for Tk, b in zip(T, blocks, strict=True)])


class DenseRest:
    """``S`` as a dense Fortran-ordered matrix, factored by LAPACK in place.

    With a `DirectCoupling` and intercept-only terms ``S`` is formed from the dense ``N P N'``
    in place (``Z_r'Z_r`` kept sparse: diagonal for one rest term), without reading the lower
    triangle entry by entry (``r^2 / 2`` gathers and scatters: ~0.5 s an evaluation at r = 3,706).
    With listed pairs and intercept-only terms it is scattered onto zeros from the pairs and
    ``Z_r'Z_r``'s nonzeros. ``Z_r'Z_r`` is made dense only for slopes (`zrzr`).
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
        if self.intercepts:
            z = self.zrzr_coo if sp.issparse(zrzr) else sp.coo_matrix(zrzr)
            low = z.row >= z.col
            zrow, zcol = z.row[low].astype(np.int64), z.col[low].astype(np.int64)
            self.zval = z.data[low]
        if self.direct:
            # S is held in the coupling's order (popular columns first), its lower triangle
            assert isinstance(coupling, DirectCoupling)
            self.perm = coupling.perm
            self.zpos = coupling.permuted_lower(zrow, zcol)
        elif self.intercepts:
            # S's lower triangle is scattered from Z_r'Z_r's nonzeros and the coupling's entries
            # onto zeros: no pass over a dense Z_r'Z_r
            self.zpos = zrow + zcol * r
            term = np.repeat(np.arange(len(blocks)), [b.nlevels for b in blocks])
            self.zcombo = term[zrow] * len(blocks) + term[zcol]
        self.work = np.empty((r, r), order="F")
        #: a single-precision copy of the factor, inverted (`invert` with ``single``)
        self._single: NDArray[np.float32] | None = None
        #: where ``S^-1`` is, once inverted at this factor's theta
        self._inverse: RealArray | None = None
        #: ``(P2, N P2 N')`` formed by `factor` for `coupled_trace`
        self._npn2: tuple[FloatArray, FloatArray] | None = None
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

    def factor(self, P: FloatArray, T: list[FloatArray], P2: FloatArray | None = None) -> float:
        """Form ``S`` for the first term's ``P`` (nlevels1, q1, q1), factor it; ``log det S``.

        ``P2``, like ``P``: the one `coupled_trace` will be given, whose ``N P2 N'`` is formed in
        the same pass over the coupling's products (one effect per level, listed pairs).
        """
        S = self.work
        self._inverse = None
        self._npn2 = None
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
            if P2 is None or not isinstance(self.coupling, Coupling):
                g = self.coupling.npn(P)
            else:
                g, h = self.coupling.npn2(P, P2)
                self._npn2 = (P2, h)
            th = np.array([Tk[0, 0] for Tk in T])
            S.fill(0.0)
            flat[self.zpos] = self.zval * np.outer(th, th).reshape(-1)[self.zcombo]
            flat[self.target] -= g * self.scale_at(th)
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
        assert self._inverse is not None and self.intercepts
        theta = _scales(T, self.blocks)
        if self.direct:
            assert isinstance(self.coupling, DirectCoupling)
            return lower_dot(self._inverse, self.coupling.dense_kept(P2), theta[self.perm])
        Sinv = self._inverse.reshape(-1, order="F")
        X_at = Sinv[self.target] * self.scale_at(np.array([Tk[0, 0] for Tk in T]))
        kept = self._npn2
        h = kept[1] if kept is not None and np.array_equal(kept[0], P2) else self.coupling.npn(P2)
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

    def inverse_diagonal(self, single: bool = False) -> FloatArray:
        """The diagonal of ``S^-1`` (original order), by `invert` (``single`` as there)."""
        d = np.diagonal(self.invert(single)).astype(np.float64)
        if not self.direct:
            return d
        out = np.empty(self.r)
        out[self.perm] = d
        return out

    def invert(self, single: bool = False) -> RealArray:
        """``S^-1`` (lower triangle valid), in place: the factor is lost.

        With ``single``, from a single-precision copy of the factor, which is kept: twice as
        fast, the entries within about ``1e-7`` relative times ``S``'s condition number (for
        Newton steps far from the optimum, `tiers.optimize.scoring`).
        """
        assert self.state == "factor"
        with limit_blas(self.threads):
            if single:
                if self._single is None:
                    self._single = np.empty((self.r, self.r), dtype=np.float32, order="F")
                np.copyto(self._single, self.work, casting="same_kind")
                self._inverse = invert_from_cholesky(self._single)
            else:
                self._inverse = invert_from_cholesky(self.work)
                self.state = "inverse"
        return self._inverse

    def inverse_at(self, rows: IntArray, cols: IntArray, T: list[FloatArray]) -> FloatArray:
        """``X = Lambda_r S^-1 Lambda_r'`` at the entries ``(rows, cols)``, ``rows >= cols``."""
        Si = np.asarray(self.invert(), dtype=np.float64)
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
        for c0 in range(0, self.r, CHUNK):
            c1 = min(self.r, c0 + CHUNK)
            lo, hi = np.searchsorted(sorted_cols, [c0, c1])
            if lo == hi:
                continue
            Xc = self.lam @ self.solve(lam_t_csc[:, c0:c1].toarray())
            sel = order[lo:hi]
            out[sel] = Xc[rows[sel], cols[sel] - c0]
        return out
