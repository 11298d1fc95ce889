"""The random-effects system of a GLMM for any structure: ``Lambda' Z' W Z Lambda + I`` in general.

One PIRLS step (`tiers.engine.pirls`) needs, for the current weights ``W``, the Cholesky factor of
``A = Lambda(theta)' Z' W Z Lambda(theta) + I`` (Bates et al. 2015, eq. 18, with the GLM weights of
lme4's ``glmer``), solves with it and its log-determinant. Nested, crossed and slope terms are all
columns of one sparse ``Z``; the factor is dense below `DENSE_MAX` random effects (cbpp, grouseticks
and most crossed designs) and a sparse LU (SuperLU, fill-reducing ordering) above it.
`tiers.engine.glmm_tree` does the same in one pass over the groups for nested random intercepts.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg import cho_solve, cholesky

from tiers.design.terms import TermSpec
from tiers.engine.spd_inverse import invert_from_cholesky

FloatArray = NDArray[np.float64]

#: Random effects up to which A is factored densely (a 4,000 x 4,000 Cholesky is ~0.3 s).
DENSE_MAX = 4000
#: Above this many random effects, a scalar term holding at least half of them is eliminated
#: first: its block of A is diagonal (each row is in one of its groups), and only the Schur
#: complement of the other terms is factored densely (as MixedModels.jl does for crossed factors).
SCHUR_MIN = 1500


class RandomSystem(Protocol):
    """What PIRLS needs of the random-effects part, for any structure.

    ``set_theta`` fixes ``Lambda``; ``factor(w)`` factors ``A`` for row weights ``w``; then
    ``solve``, ``logdet`` and ``cond_var`` read the factor.
    """

    terms: list[TermSpec]
    n_theta: int
    r: int
    theta_start: FloatArray
    theta_lower: FloatArray
    theta_upper: FloatArray
    scalar_single: bool

    def set_theta(self, theta: FloatArray) -> None:
        """Fix ``Lambda(theta)``."""
        ...

    def zl(self, u: FloatArray) -> FloatArray:
        """``Z Lambda u`` (n,)."""
        ...

    def carry(self, u: FloatArray, theta_old: FloatArray) -> FloatArray:
        """A start for the modes at the current theta from the modes ``u`` at ``theta_old``."""
        ...

    def zlt(self, v: FloatArray) -> FloatArray:
        """``Lambda' Z' v`` (r,)."""
        ...

    def factor(self, w: FloatArray) -> None:
        """Factor ``A = Lambda' Z' diag(w) Z Lambda + I``."""
        ...

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``A^{-1} rhs``."""
        ...

    def logdet(self) -> float:
        """``log det A``."""
        ...

    def cond_var(self) -> list[FloatArray]:
        """Per term, the (nlevels, q, q) blocks of ``A^{-1}`` (spherical scale)."""
        ...

    def b(self, u: FloatArray) -> list[FloatArray]:
        """Per term, the random effects ``Lambda u`` as (nlevels, q)."""
        ...

    def lambda_blocks(self) -> list[FloatArray]:
        """Per term, the relative factor ``T`` (q, q)."""
        ...


def term_bounds(terms: list[TermSpec]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """lme4's start and the bounds of theta, term by term."""
    start = np.concatenate([t.cov.start() for t in terms])
    lower = np.concatenate([t.cov.lower() for t in terms])
    upper = np.concatenate([t.cov.upper() for t in terms])
    return start, lower, upper


class SparseSystem:
    """`RandomSystem` over the design's sparse ``Z`` (any nesting, crossing and slopes)."""

    #: A factorization costs many solves: PIRLS reuses one for chord steps near the modes.
    costly_factor = True

    def __init__(self, terms: list[TermSpec], n: int) -> None:
        self.terms = terms
        self.n = n
        self.n_theta = sum(t.cov.n_theta for t in terms)
        self.theta_start, self.theta_lower, self.theta_upper = term_bounds(terms)
        self.scalar_single = len(terms) == 1 and terms[0].q == 1
        rows, cols, vals, self.offsets = [], [], [], [0]
        for t in terms:
            base = self.offsets[-1]
            for a in range(t.q):
                rows.append(np.arange(n))
                cols.append(base + t.codes.astype(np.int64) * t.q + a)
                vals.append(t.Z[:, a])
            self.offsets.append(base + t.nlevels * t.q)
        self.r = int(self.offsets[-1])
        self.Z = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, self.r),
        )
        self.ZL: Any = self.Z
        self._chol: FloatArray | None = None
        self._lu: Any = None
        self._schur: tuple[FloatArray, Any, FloatArray] | None = None
        self._adiag: FloatArray | None = None
        self._inv: tuple[Any, ...] | None = None
        big = max(range(len(terms)), key=lambda k: terms[k].nlevels if terms[k].q == 1 else -1)
        self._first: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None
        if (
            self.r > SCHUR_MIN
            and terms[big].q == 1
            and terms[big].nlevels * 2 >= self.r
            and len(terms) > 1
        ):
            idx1 = np.arange(self.offsets[big], self.offsets[big + 1])
            idx2 = np.setdiff1d(np.arange(self.r), idx1)
            self._first = (idx1, idx2)
        self._theta = self.theta_start.copy()
        self.set_theta(self.theta_start)

    def lambda_blocks(self) -> list[FloatArray]:
        """Per term, the relative factor ``T`` (q, q) at the current theta."""
        out, at = [], 0
        for t in self.terms:
            out.append(t.cov.factor(self._theta[at : at + t.cov.n_theta]))
            at += t.cov.n_theta
        return out

    def set_theta(self, theta: FloatArray) -> None:
        """Fix ``Lambda(theta)`` and form ``Z Lambda``."""
        self._theta = np.asarray(theta, dtype=np.float64).copy()
        blocks = [
            sp.kron(sp.identity(t.nlevels, format="csr"), sp.csr_matrix(T), format="csr")
            for t, T in zip(self.terms, self.lambda_blocks(), strict=True)
        ]
        lam = sp.block_diag(blocks, format="csr")
        self.ZL = (self.Z @ lam).tocsr()
        self.ZLt = self.ZL.T.tocsr()

    def zl(self, u: FloatArray) -> FloatArray:
        """``Z Lambda u``."""
        return np.asarray(self.ZL @ u, dtype=np.float64)

    def zlt(self, v: FloatArray) -> FloatArray:
        """``Lambda' Z' v``."""
        return np.asarray(self.ZLt @ v, dtype=np.float64)

    def carry(self, u: FloatArray, theta_old: FloatArray) -> FloatArray:
        """A start for the modes at the current theta from the modes ``u`` at ``theta_old``.

        For a scalar term a group with weight sum ``W`` alone has the linearised mode
        ``u = theta s / (1 + theta^2 W)`` (``W`` read off the last factor's diagonal), so ``u`` is
        rescaled by ``(theta / theta_old) (1 + theta_old^2 W) / (1 + theta^2 W)``; the modes of
        vector terms are kept.
        """
        if self._adiag is None:
            return u
        out = u.copy()
        at = 0
        for k, t in enumerate(self.terms):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            if t.q == 1:
                t0, t1 = float(theta_old[at]), float(self._theta[at])
                if t0 == 0.0:
                    out[lo:hi] = 0.0
                else:
                    W = (self._adiag[lo:hi] - 1.0) / (t0 * t0)
                    out[lo:hi] *= t1 * (1.0 + t0 * t0 * W) / (t0 * (1.0 + t1 * t1 * W))
            at += t.cov.n_theta
        return out

    def factor(self, w: FloatArray) -> None:
        """Factor ``A`` for row weights ``w``."""
        A = (self.ZLt @ sp.diags(w) @ self.ZL + sp.identity(self.r)).tocsc()
        self._adiag = A.diagonal()
        self._inv = None
        if self._first is not None:
            idx1, idx2 = self._first
            D = A[idx1][:, idx1].diagonal()
            B = A[idx2][:, idx1].tocsr()
            S = A[idx2][:, idx2].toarray() - (B @ sp.diags(1.0 / D) @ B.T).toarray()
            self._schur = (D, B, cholesky(S, lower=True, check_finite=False))
            return
        if self.r <= DENSE_MAX:
            self._chol = cholesky(A.toarray(), lower=True, check_finite=False)
            self._lu = None
        else:
            from scipy.sparse.linalg import splu

            self._lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
            self._chol = None

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``A^{-1} rhs``."""
        if self._schur is not None and self._first is not None:
            D, B, L2 = self._schur
            idx1, idx2 = self._first
            Dc = D if rhs.ndim == 1 else D[:, None]
            b1, b2 = rhs[idx1], rhs[idx2]
            x2 = cho_solve((L2, True), b2 - B @ (b1 / Dc), check_finite=False)
            out = np.empty_like(rhs, dtype=np.float64)
            out[idx1] = (b1 - B.T @ x2) / Dc
            out[idx2] = x2
            return out
        if self._chol is not None:
            return np.asarray(cho_solve((self._chol, True), rhs, check_finite=False))
        return np.asarray(self._lu.solve(rhs))

    def logdet(self) -> float:
        """``log det A`` (A is positive definite: the LU's pivots are positive)."""
        if self._schur is not None:
            D, _, L2 = self._schur
            return float(np.sum(np.log(D)) + 2.0 * np.sum(np.log(np.diag(L2))))
        if self._chol is not None:
            return float(2.0 * np.sum(np.log(np.diag(self._chol))))
        return float(np.sum(np.log(np.abs(self._lu.U.diagonal()))))

    @property
    def schur_first(self) -> bool:
        """``A`` is factored by eliminating one large scalar term first (its block diagonal)."""
        return self._first is not None

    @property
    def theta_values(self) -> FloatArray:
        """The current theta."""
        return self._theta

    def inverse_entries(self, i: NDArray[np.int64], j: NDArray[np.int64]) -> FloatArray:
        """Entries ``(A^{-1})[i, j]`` of the current factor, for pairs that share a row of ``Z``.

        Dense: ``A^{-1}`` from the Cholesky factor (`tiers.engine.spd_inverse`). Schur: with ``A = [D B';
        B C]`` (``D`` diagonal) and ``S`` the Schur complement, ``A^{-1} = [D^-1 + D^-1 B' S^-1 B
        D^-1, -D^-1 B' S^-1; ., S^-1]``; ``M = S^-1 B`` is formed once, and only diagonal entries
        of the first block are asked for (a row is in one group of the eliminated scalar term).
        """
        if self._inv is None:
            self._inv = self._inverse_parts()
        if self._schur is None or self._first is None:
            return self._inv[0][i, j]
        D = self._schur[0]
        Sinv, M, where, pos = self._inv
        in1, jn1 = where[i] == 1, where[j] == 1
        out = np.empty(i.shape)
        both2 = ~in1 & ~jn1
        out[both2] = Sinv[pos[i[both2]], pos[j[both2]]]
        one = in1 & ~jn1
        out[one] = -M[pos[j[one]], pos[i[one]]] / D[pos[i[one]]]
        one = ~in1 & jn1
        out[one] = -M[pos[i[one]], pos[j[one]]] / D[pos[j[one]]]
        both1 = in1 & jn1
        if np.any(i[both1] != j[both1]):
            raise ValueError("off-diagonal entries within the eliminated term are not formed")
        d = pos[i[both1]]
        B = self._schur[1]
        diag = 1.0 / D + np.asarray(B.multiply(M).sum(axis=0)).ravel() / (D * D)
        out[both1] = diag[d]
        return out

    def _inverse_parts(self) -> tuple[Any, ...]:
        if self._schur is None or self._first is None:
            assert self._chol is not None
            inv = invert_from_cholesky(np.array(self._chol, order="F"))
            inv = np.tril(inv) + np.tril(inv, -1).T
            return (inv,)
        _, B, L2 = self._schur
        Sinv = invert_from_cholesky(np.array(L2, order="F"))
        Sinv = np.tril(Sinv) + np.tril(Sinv, -1).T
        M = np.asarray((B.T.tocsr() @ Sinv).T)  # S^-1 B, (r2, r1): sparse rows times dense
        idx1, idx2 = self._first
        where = np.zeros(self.r, dtype=np.int64)
        where[idx1] = 1
        pos = np.empty(self.r, dtype=np.int64)
        pos[idx1] = np.arange(idx1.size)
        pos[idx2] = np.arange(idx2.size)
        return Sinv, M, where, pos

    def cond_var(self) -> list[FloatArray]:
        """Per term, the (nlevels, q, q) diagonal blocks of ``A^{-1}``."""
        out = []
        for k, t in enumerate(self.terms):
            lo = self.offsets[k]
            blocks = np.empty((t.nlevels, t.q, t.q))
            for start in range(0, t.nlevels, 512):
                stop = min(t.nlevels, start + 512)
                cols = np.arange(lo + start * t.q, lo + stop * t.q)
                E = np.zeros((self.r, cols.size))
                E[cols, np.arange(cols.size)] = 1.0
                S = self.solve(E)[cols]
                m = stop - start
                blocks[start:stop] = S.reshape(m, t.q, m, t.q)[np.arange(m), :, np.arange(m), :]
            out.append(blocks)
        return out

    def b(self, u: FloatArray) -> list[FloatArray]:
        """Per term, ``Lambda u`` as (nlevels, q)."""
        out = []
        for k, (t, T) in enumerate(zip(self.terms, self.lambda_blocks(), strict=True)):
            uk = u[self.offsets[k] : self.offsets[k + 1]].reshape(t.nlevels, t.q)
            out.append(uk @ T.T)
        return out
