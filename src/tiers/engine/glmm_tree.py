"""The random-effects system of a GLMM with nested random intercepts: one pass over the groups.

With scalar intercepts on K nested levels, ``A = Lambda' Z' W Z Lambda + I`` couples a group only
with its ancestors. Eliminating the innermost level first creates no fill (``../shared/STYLE.md``
section 2), and the elimination keeps a simple form: the rows under a group ``j`` of level ``k``
add ``theta theta' V_j`` to the block of its chain of groups (``theta`` the relative SDs along the
chain), where ``V_j`` is the group's *effective weight*: the sum of its rows' weights for an
innermost group, and ``V_j = sum_c V_c / (1 + theta_{k+1}^2 V_c)`` over its children ``c``
otherwise (the Schur complement of eliminating a child ``c`` with pivot ``l_c^2 = 1 +
theta_{k+1}^2 V_c`` scales its rank-one contribution by ``1 / l_c^2``). So the Cholesky factor is
``l_j = sqrt(1 + theta_k^2 V_j)`` on the diagonal and ``theta_k theta_m V_j / l_j`` towards the
level-``m`` ancestor; factor, solves, the log-determinant and the covariances of a group with its
ancestors (Takahashi's recursion, outermost level first) are each one pass per level over that
level's groups and their parents, O(n + groups), with no per-ancestor pass.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import NDArray

from tiers.design.grouping import Tree
from tiers.design.terms import TermSpec
from tiers.engine.glmm_sparse import term_bounds

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _sum_by(index: IntArray, values: FloatArray, minlength: int) -> FloatArray:
    """``values`` summed by ``index`` (numpy's ``bincount`` with weights, typed as floats)."""
    return cast(FloatArray, np.bincount(index, values, minlength=minlength))


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
        self.leaf = leaf
        self.nleaf = self.sizes[-1]
        self.theta = np.ones(self.K)
        self.parents = parents
        self.piv: list[FloatArray] = []
        self.V: list[FloatArray] = []
        # per level, each group's sum of the weights at the last factorization (for `carry`)
        self.wsum: list[FloatArray] | None = None

    def restrict(self, rows: IntArray) -> TreeSystem:
        """The system of the rows ``rows`` alone: their groups, renumbered level by level."""
        used, leaf = np.unique(self.leaf[rows], return_inverse=True)
        parents: list[IntArray] = [np.empty(0, dtype=np.int64)] * (self.K - 1)
        sizes = [0] * self.K
        sizes[-1] = used.size
        for k in range(self.K - 1, 0, -1):
            used, parents[k - 1] = np.unique(self.parents[k - 1][used], return_inverse=True)
            sizes[k - 1] = used.size
        return TreeSystem(self.terms, Tree(leaf, tuple(parents), tuple(sizes)))

    def set_theta(self, theta: FloatArray) -> None:
        """Fix the relative SDs of the levels."""
        self.theta = np.asarray(theta, dtype=np.float64).copy()

    def carry(self, u: FloatArray, theta_old: FloatArray) -> FloatArray:
        """A start for the modes at the current theta from the modes ``u`` at ``theta_old``.

        A group with weight sum ``W`` alone has the linearised mode ``u = theta s / (1 +
        theta^2 W)`` for its score ``s``, so its mode moves by the factor
        ``(theta / theta_old) (1 + theta_old^2 W) / (1 + theta^2 W)``: ``b = theta u`` is kept
        where the group has much data, ``u`` scales with theta where it has little.
        """
        if self.wsum is None:
            return u
        out = np.empty_like(u)
        for k in range(self.K):
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            t, t0 = self.theta[k], theta_old[k]
            W = self.wsum[k]
            out[lo:hi] = u[lo:hi] * (t * (1.0 + t0 * t0 * W) / (1.0 + t * t * W))
            if t0 == 0.0:
                out[lo:hi] = 0.0
            else:
                out[lo:hi] /= t0
        return out

    def lambda_blocks(self) -> list[FloatArray]:
        """Per level, the relative SD as a 1 x 1 factor."""
        return [np.array([[t]]) for t in self.theta]

    def _up(self, at_leaf: FloatArray) -> list[FloatArray]:
        """Sums of per-innermost-group values over each level's groups (children into parents)."""
        out = [at_leaf]
        for k in range(self.K - 1, 0, -1):
            out.append(_sum_by(self.parents[k - 1], out[-1], minlength=self.sizes[k - 1]))
        return out[::-1]

    def _path(self, u: FloatArray) -> FloatArray:
        """Per innermost group, ``sum_k theta_k u_k`` over its chain of groups."""
        acc = self.theta[0] * u[: self.offsets[1]]
        for k in range(1, self.K):
            own = self.theta[k] * u[self.offsets[k] : self.offsets[k + 1]]
            acc = own + acc[self.parents[k - 1]]
        return acc

    def zl(self, u: FloatArray) -> FloatArray:
        """``Z Lambda u``: each row's sum of its groups' ``theta_k u``."""
        return self._path(u)[self.leaf]

    def sums(self, v: FloatArray) -> list[FloatArray]:
        """Per level, the sums of ``v`` over each group's rows."""
        return self._up(_sum_by(self.leaf, v, minlength=self.nleaf))

    def zlt(self, v: FloatArray) -> FloatArray:
        """``Lambda' Z' v``: per group, ``theta_k`` times the sum of ``v`` over its rows."""
        sums = self.sums(v)
        return np.concatenate([self.theta[k] * sums[k] for k in range(self.K)])

    def factor(self, w: FloatArray) -> None:
        """The effective weights and pivots, innermost level first."""
        th = self.theta
        V: list[FloatArray] = [np.empty(0)] * self.K
        piv: list[FloatArray] = [np.empty(0)] * self.K
        v = _sum_by(self.leaf, w, minlength=self.nleaf)
        self.wsum = self._up(v)
        for k in range(self.K - 1, -1, -1):
            p2 = 1.0 + th[k] * th[k] * v
            V[k], piv[k] = v, np.sqrt(p2)
            if k > 0:
                v = _sum_by(self.parents[k - 1], v / p2, minlength=self.sizes[k - 1])
        self.V, self.piv = V, piv

    @property
    def lnk(self) -> list[FloatArray]:
        """Per level, the factor's entries towards each ancestor: (groups, k) for level k."""
        th = self.theta
        return [(th[k] * self.V[k] / self.piv[k])[:, None] * th[None, :k] for k in range(self.K)]

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``A^{-1} rhs``: forward innermost first, backward outermost first.

        Forward, a group's right-hand side loses ``theta_k`` times the sum of ``theta_c V_c y_c /
        l_c`` over all its descendants ``c`` (accumulated child to parent); backward, a group's
        solution loses ``theta_k V_j / l_j`` times the sum of ``theta_m x_m`` over its ancestors.
        """
        K, th, off = self.K, self.theta, self.offsets
        y: list[FloatArray] = [np.empty(0)] * K
        acc: FloatArray | None = None
        for k in range(K - 1, -1, -1):
            b = rhs[off[k] : off[k + 1]]
            if acc is not None:
                b = b - th[k] * acc
            y[k] = b / self.piv[k]
            if k > 0:
                t = (th[k] / self.piv[k]) * self.V[k] * y[k]
                if acc is not None:
                    t += acc
                acc = _sum_by(self.parents[k - 1], t, minlength=self.sizes[k - 1])
        out = np.empty(int(off[-1]))
        path: FloatArray | None = None
        for k in range(K):
            x = y[k]
            if path is not None:
                x = x - (th[k] * self.V[k] / self.piv[k]) * path
            x = x / self.piv[k]
            out[off[k] : off[k + 1]] = x
            if k < K - 1:
                nxt = th[k] * x
                path = nxt if path is None else path + nxt
                path = path[self.parents[k]]
        return out

    def logdet(self) -> float:
        """``log det A``: twice the sum of the log pivots."""
        return float(sum(np.sum(np.log1p(self.theta[k] ** 2 * self.V[k])) for k in range(self.K)))

    def _takahashi(self, chains: bool) -> tuple[list[FloatArray], FloatArray, FloatArray]:
        """Diagonal of ``A^{-1}`` per level, and per innermost group its chain's parts.

        With ``chains``, also ``A^{-1} theta`` over each innermost group's chain (groups, K) and
        ``theta' A^{-1} theta`` over it.

        Takahashi's recursion from the outermost level in, on the factor's form: with
        ``g = theta_k V_j / l_j^2`` and ``R_p = (A^{-1} theta)`` over the parent ``p``'s chain,
        ``H_p = theta' R_p``, a group's covariance with its level-``m`` ancestor is ``-g R_p[m]``
        and its variance ``1 / l_j^2 + g^2 H_p``; then ``R_j = (R_p / l_j^2, -g H_p + theta_k
        var_j)`` and ``H_j = H_p / l_j^2 + theta_k R_j[k]``.
        """
        K, th = self.K, self.theta
        dvar: list[FloatArray] = [np.empty(0)] * K
        R = np.empty((0, 0))
        H = np.empty(0)
        for k in range(K):
            p2 = self.piv[k] ** 2
            if k == 0:
                var = 1.0 / p2
                Hp = np.zeros(self.sizes[0])
                Rp = np.empty((self.sizes[0], 0))
            else:
                par = self.parents[k - 1]
                Hp = H[par]
                g = th[k] * self.V[k] / p2
                var = 1.0 / p2 + g * g * Hp
                if chains:
                    Rp = R[par] / p2[:, None]
            dvar[k] = var
            if chains or k < K - 1:
                own = th[k] * var if k == 0 else -g * Hp + th[k] * var
                H = Hp / p2 + th[k] * own
                if chains:
                    R = np.concatenate([Rp, own[:, None]], axis=1)
        return dvar, R, H

    def cond_var(self) -> list[FloatArray]:
        """Per level, the diagonal of ``A^{-1}`` as (groups, 1, 1)."""
        return [d[:, None, None] for d in self._takahashi(False)[0]]

    def chain_theta(self) -> tuple[FloatArray, FloatArray]:
        """Per innermost group, ``A^{-1} theta`` and ``theta' A^{-1} theta`` over its chain.

        The first is (groups, K), column ``m`` the level-``m`` ancestor; the second is the
        leverage of the group's rows on the spherical scale.
        """
        _, R, H = self._takahashi(True)
        return R, H

    def b(self, u: FloatArray) -> list[FloatArray]:
        """Per level, ``theta_k u`` as (groups, 1)."""
        return [
            (self.theta[k] * u[self.offsets[k] : self.offsets[k + 1]])[:, None]
            for k in range(self.K)
        ]
