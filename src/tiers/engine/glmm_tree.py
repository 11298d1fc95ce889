"""The random-effects system of a GLMM with nested random intercepts: one pass over the groups.

With scalar intercepts on K nested levels, ``A = Lambda' Z' W Z Lambda + I`` couples a group only
with its ancestors, and the entry between a group ``j`` of level ``k`` and its ancestor at level
``m`` is ``theta_k theta_m W_j`` (``W_j`` the sum of the weights of ``j``'s rows). Eliminating the
innermost level first creates no fill (``../shared/STYLE.md`` section 2): each group's column of the
Cholesky factor holds its pivot and one entry per ancestor, and the Schur complement updates land
on the ancestors, summed with ``bincount``. Factor, solves and the conditional variances (the
diagonal of ``A^{-1}`` by the Takahashi recursion, coarsest level first) each cost
O(n + groups x K^2).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.design.grouping import Tree
from tiers.design.terms import TermSpec
from tiers.engine.glmm_sparse import term_bounds

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class TreeSystem:
    """`tiers.engine.glmm_sparse.RandomSystem` for nested scalar random intercepts.

    Parameters
    ----------
    terms : list of TermSpec
        One intercept term per level, outermost first (the design's theta order).
    tree : Tree
        The nesting (`tiers.design.grouping.Tree`).
    """

    def __init__(self, terms: list[TermSpec], tree: Tree) -> None:
        self.terms = terms
        self.K = len(tree.sizes)
        self.sizes = tuple(int(s) for s in tree.sizes)
        self.n_theta = self.K
        self.theta_start, self.theta_lower, self.theta_upper = term_bounds(terms)
        self.scalar_single = self.K == 1
        self.r = int(sum(self.sizes))
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes))).astype(np.int64)
        # anc[k][m]: the level-m ancestor of each group of level k (m < k)
        parents = [np.asarray(p, dtype=np.int64) for p in tree.parents]
        self.anc: list[list[IntArray]] = []
        for k in range(self.K):
            chain: list[IntArray] = [np.empty(0, dtype=np.int64)] * k
            if k > 0:
                chain[k - 1] = parents[k - 1]
                for m in range(k - 2, -1, -1):
                    chain[m] = parents[m][chain[m + 1]]
            self.anc.append(chain)
        leaf = np.asarray(tree.leaf, dtype=np.int64)
        self.rows = [
            (self.anc[self.K - 1][k][leaf] if k < self.K - 1 else leaf) for k in range(self.K)
        ]
        self.leaf = leaf
        self.nleaf = self.sizes[-1]
        self.theta = np.ones(self.K)
        self.piv: list[FloatArray] = []
        self.lnk: list[FloatArray] = []

    def set_theta(self, theta: FloatArray) -> None:
        """Fix the relative SDs of the levels."""
        self.theta = np.asarray(theta, dtype=np.float64).copy()

    def lambda_blocks(self) -> list[FloatArray]:
        """Per level, the relative SD as a 1 x 1 factor."""
        return [np.array([[t]]) for t in self.theta]

    def _up(self, at_leaf: FloatArray) -> list[FloatArray]:
        """Sums of per-innermost-group values over each level's groups (one pass per level)."""
        last = self.K - 1
        out: list[FloatArray] = [
            np.bincount(self.anc[last][k], at_leaf, minlength=self.sizes[k]).astype(np.float64)
            for k in range(last)
        ]
        return [*out, at_leaf]

    def zl(self, u: FloatArray) -> FloatArray:
        """``Z Lambda u``: each row's sum of its groups' ``theta_k u``.

        Summed over the chain of each innermost group first, then read once per row.
        """
        last = self.K - 1
        per_leaf = self.theta[last] * u[self.offsets[last] :]
        for k in range(last):
            uk = u[self.offsets[k] : self.offsets[k + 1]]
            per_leaf = per_leaf + self.theta[k] * uk[self.anc[last][k]]
        return per_leaf[self.leaf]

    def sums(self, v: FloatArray) -> list[FloatArray]:
        """Per level, the sums of ``v`` over each group's rows."""
        return self._up(np.bincount(self.leaf, v, minlength=self.nleaf).astype(np.float64))

    def zlt(self, v: FloatArray) -> FloatArray:
        """``Lambda' Z' v``: per group, ``theta_k`` times the sum of ``v`` over its rows."""
        sums = self._up(np.bincount(self.leaf, v, minlength=self.nleaf).astype(np.float64))
        return np.concatenate([self.theta[k] * sums[k] for k in range(self.K)])

    def factor(self, w: FloatArray) -> None:
        """Eliminate the levels innermost first; keep pivots and ancestor entries."""
        K, th = self.K, self.theta
        W = self._up(np.bincount(self.leaf, w, minlength=self.nleaf).astype(np.float64))
        diag = [th[k] ** 2 * W[k] + 1.0 for k in range(K)]
        # cpl[k][:, m]: entry between a group of level k and its level-m ancestor
        cpl = [th[k] * W[k][:, None] * th[None, :k] for k in range(K)]
        piv: list[FloatArray] = [np.empty(0)] * K
        lnk: list[FloatArray] = [np.empty((0, 0))] * K
        for k in range(K - 1, -1, -1):
            lk = np.sqrt(diag[k])
            ell = cpl[k] / lk[:, None]
            piv[k], lnk[k] = lk, ell
            for m in range(k):
                a = self.anc[k][m]
                diag[m] -= np.bincount(a, ell[:, m] ** 2, minlength=self.sizes[m])
                for mm in range(m):
                    cpl[m][:, mm] -= np.bincount(a, ell[:, m] * ell[:, mm], minlength=self.sizes[m])
        self.piv, self.lnk = piv, lnk

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``A^{-1} rhs`` by the forward (innermost first) and backward passes."""
        K = self.K
        b = [rhs[self.offsets[k] : self.offsets[k + 1]].copy() for k in range(K)]
        y: list[FloatArray] = [np.empty(0)] * K
        for k in range(K - 1, -1, -1):
            y[k] = b[k] / self.piv[k]
            for m in range(k):
                b[m] -= np.bincount(
                    self.anc[k][m], self.lnk[k][:, m] * y[k], minlength=self.sizes[m]
                )
        x: list[FloatArray] = [np.empty(0)] * K
        for k in range(K):
            acc = y[k].copy()
            for m in range(k):
                acc -= self.lnk[k][:, m] * x[m][self.anc[k][m]]
            x[k] = acc / self.piv[k]
        return np.concatenate(x)

    def logdet(self) -> float:
        """``log det A``: twice the sum of the log pivots."""
        return float(2.0 * sum(np.sum(np.log(p)) for p in self.piv))

    def _takahashi(self) -> tuple[list[FloatArray], list[FloatArray]]:
        """Diagonal of ``A^{-1}`` per level and each group's covariances with its ancestors.

        Takahashi's recursion from the outermost level in: a group's covariances with its
        ancestors follow from theirs with each other, then its own variance.
        """
        K = self.K
        dvar: list[FloatArray] = [np.empty(0)] * K
        cov: list[FloatArray] = [np.empty((0, 0))] * K  # cov[k][:, m]: with level-m ancestor
        for k in range(K):
            lk, ell = self.piv[k], self.lnk[k]
            n = self.sizes[k]
            ck = np.zeros((n, k))
            for m in range(k):
                am = self.anc[k][m]
                acc = np.zeros(n)
                for mm in range(k):
                    amm = self.anc[k][mm]
                    if mm == m:
                        s = dvar[m][am]
                    elif mm < m:
                        s = cov[m][am, mm]
                    else:
                        s = cov[mm][amm, m]
                    acc += ell[:, mm] * s
                ck[:, m] = -acc / lk
            cov[k] = ck
            dvar[k] = 1.0 / lk**2 - np.sum(ell * ck, axis=1) / lk
        return dvar, cov

    def cond_var(self) -> list[FloatArray]:
        """Per level, the diagonal of ``A^{-1}`` as (groups, 1, 1)."""
        return [d[:, None, None] for d in self._takahashi()[0]]

    def chain_cov(self) -> FloatArray:
        """For each innermost group, ``A^{-1}`` over its chain of groups (groups, K, K).

        Row ``m`` is the group's ancestor at level ``m`` (the group itself at ``K - 1``).
        """
        dvar, cov = self._takahashi()
        K, last = self.K, self.K - 1
        nodes = [self.anc[last][m] for m in range(last)] + [np.arange(self.sizes[last])]
        S = np.empty((self.sizes[last], K, K))
        for m in range(K):
            S[:, m, m] = dvar[m][nodes[m]]
            for mm in range(m):
                S[:, m, mm] = S[:, mm, m] = cov[m][nodes[m], mm]
        return S

    def b(self, u: FloatArray) -> list[FloatArray]:
        """Per level, ``theta_k u`` as (groups, 1)."""
        return [
            (self.theta[k] * u[self.offsets[k] : self.offsets[k + 1]])[:, None]
            for k in range(self.K)
        ]
