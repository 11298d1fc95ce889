"""Pseudo-likelihood of a nested LMM with sampling weights at every level, cluster by cluster.

With a weight per observation conditional on its innermost group (``w_i|j``) and one per group of
every level conditional on the group above (``a_j``), the pseudo log-likelihood
(Rabe-Hesketh and Skrondal 2006, JRSS A 169(4); Pfeffermann et al. 1998) raises every
unit's contribution to its weight:

    log PL = sum_top a_c log int [ prod_children (...)^{a_j} ] phi(u_c) du_c,
    innermost: int exp(sum_i w_i|j log f(y_i | u)) phi(u_j) du_j.

For the linear model every integral is Gaussian, so the nested elimination of
`tiers.engine.nested_block` carries over with two changes: the rows enter scaled by
``sqrt(w_i|j)``, and when a node's effects are integrated out, what it hands to its parent (its
downdated cross-product ``M_j``) and its log-determinant are multiplied by its weight ``a_j``
(the weight raises the whole integral to a power). So ``ldL2 = sum_j A_j log det P_j`` with
``A_j`` the product of the weights on the path from the top to ``j``, and the profiled criterion
is the ML deviance with ``n`` replaced by ``nu = sum_i w_i|j A_j(i)``. Pseudo-likelihood is a
maximum-likelihood method: there is no REML version (the REML criterion integrates beta out of
a likelihood, and a pseudo-likelihood is not one).

`PseudoTreeProblem.cluster_loglik` splits the pseudo log-likelihood into the contributions of the
top-level clusters, at any (beta, sigma, theta): what the sandwich estimator of
`tiers.variance.robust` differentiates. With unit weights it is the ordinary ML log-likelihood
split by cluster (Stata's ``vce(robust)`` without weights).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.design.terms import TermSpec
from tiers.engine.contract import Evaluation, TermModes
from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.nested_block import outer_sums
from tiers.engine.tree_modes import block_diag, split_levels, tree_modes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_LOG_2PI = float(np.log(2.0 * np.pi))


class PseudoTreeProblem(ProfiledProblem):
    """The profiled pseudo-ML deviance of a nested LMM with weights at every level.

    Parameters
    ----------
    y, X : arrays
    levels : list of list of TermSpec
        Per level (outermost first), the terms on that level's grouping factor.
    parents : list of IntArray
        ``parents[k]`` maps the groups of level k + 1 to their group at level k.
    row_weights : array (n,)
        Level-1 weights, conditional on the innermost group.
    group_weights : list of arrays
        Per level, one weight per group, conditional on the group above.
    precision : bool
        ``row_weights`` are precision weights (group weights all 1): the ordinary likelihood of
        `tiers.engine.gaussian` (``n`` rows, the Jacobian ``ldW``), split by cluster for the
        sandwich.
    """

    label = "pseudo"
    has_gradient = False

    def __init__(
        self,
        y: FloatArray,
        X: FloatArray,
        levels: list[list[TermSpec]],
        parents: list[IntArray],
        row_weights: FloatArray,
        group_weights: list[FloatArray],
        *,
        precision: bool = False,
    ) -> None:
        self.reml = False
        self.y, self.X = np.asarray(y, dtype=np.float64), np.asarray(X, dtype=np.float64)
        D = self._centred(self.y, self.X)
        self.rows = self.y.size
        self.levels, self.parents = levels, parents
        self.K = len(levels)
        self.sizes = [terms[0].nlevels for terms in levels]
        self.q = [sum(t.q for t in terms) for terms in levels]
        self.offsets = np.concatenate(([0], np.cumsum(self.q))).astype(int)
        Q = int(self.offsets[-1])
        terms_flat = [t for terms in levels for t in terms]
        self.terms = terms_flat
        self.theta_lower = np.concatenate([t.cov.lower() for t in terms_flat])
        self.theta_upper = np.concatenate([t.cov.upper() for t in terms_flat])
        self.theta_start = np.concatenate([t.cov.start() for t in terms_flat])
        self.n_theta = self.theta_start.size
        self.row_w = np.asarray(row_weights, dtype=np.float64)
        self.node_w = [np.asarray(a, dtype=np.float64) for a in group_weights]
        leaf = levels[-1][0].codes
        # top-level cluster of every node of every level, and the path products A_j
        self.top = [np.arange(self.sizes[0])]
        self.path_w = [self.node_w[0]]
        for k in range(1, self.K):
            self.top.append(self.top[k - 1][parents[k - 1]])
            self.path_w.append(self.path_w[k - 1][parents[k - 1]] * self.node_w[k])
        top_row = self.top[-1][leaf]
        per_row = self.row_w * self.path_w[-1][leaf] / self.node_w[0][top_row]
        if precision:  # rows count once; their weights enter through the Jacobian
            per_row = np.ones(self.rows)
        self.nu_c = np.bincount(top_row, weights=per_row, minlength=self.sizes[0])
        log_w = np.log(self.row_w) if precision else np.zeros(self.rows)
        self.ldw_c = np.bincount(top_row, weights=log_w, minlength=self.sizes[0]).astype(float)
        self.ldw = float(self.ldw_c.sum())
        W = np.empty((self.rows, Q + self.p + 1))
        for k, terms in enumerate(levels):
            W[:, self.offsets[k] : self.offsets[k + 1]] = np.hstack([t.Z for t in terms])
        W[:, Q:] = D
        W *= np.sqrt(self.row_w)[:, None]
        self.leaf_C = outer_sums(W, leaf, self.sizes[-1])
        # children sorted by parent: summing them into their parents is one reduceat
        self.child_order = []
        for k in range(self.K - 1):
            order = np.argsort(parents[k], kind="stable")
            starts = np.searchsorted(parents[k][order], np.arange(self.sizes[k]))
            self.child_order.append((order, starts))

    @property
    def nu(self) -> float:  # type: ignore[override]
        """The weighted number of observations, ``sum_i w_i|j A_j(i)``."""
        return float(self.node_w[0] @ self.nu_c)

    def factors(self, theta: FloatArray) -> list[FloatArray]:
        """Relative factor of each level (block-diagonal over the level's terms)."""
        out, at = [], 0
        for terms in self.levels:
            blocks = []
            for term in terms:
                blocks.append(term.cov.factor(theta[at : at + term.cov.n_theta]))
                at += term.cov.n_theta
            out.append(block_diag(blocks))
        return out

    def _eliminate(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per top-level cluster: its downdated ``[X y]`` cross-product and weighted ldL2.

        Both exclude the cluster's own weight ``a_c`` (applied by the caller), include every
        weight below it.
        """
        Ts = self.factors(theta)
        C = self.leaf_C
        ld_c = np.zeros(self.sizes[0])
        for k in range(self.K - 1, -1, -1):
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            keep = np.r_[0:lo, hi : C.shape[1]]
            T = Ts[k]
            P = np.einsum("ab,nbc,cd->nad", T.T, C[:, lo:hi, lo:hi], T)
            P[:, np.arange(T.shape[0]), np.arange(T.shape[0])] += 1.0
            L = np.linalg.cholesky(P)
            B = C[:, keep, lo:hi] @ T
            Y = np.linalg.solve(L, B.transpose(0, 2, 1))
            M = C[:, keep][:, :, keep] - Y.transpose(0, 2, 1) @ Y
            ld = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
            # the node's log det counts with the weights on its path below the top cluster
            below = self.path_w[k] / self.node_w[0][self.top[k]]
            ld_c += np.bincount(self.top[k], weights=below * ld, minlength=self.sizes[0])
            if k == 0:
                return M, ld_c
            M = M * self.node_w[k][:, None, None]
            order, starts = self.child_order[k - 1]
            C = np.add.reduceat(M[order], starts, axis=0)
        raise AssertionError("unreachable")  # pragma: no cover

    def evaluate(self, theta: FloatArray, *, gradient: bool = False) -> Evaluation:
        """The profiled pseudo-ML deviance at ``theta`` (no analytic gradient)."""
        theta = np.asarray(theta, dtype=np.float64)
        M, ld_c = self._eliminate(theta)
        a = self.node_w[0]
        A = np.tensordot(a, M, axes=1)
        return self.finish(theta, A, float(a @ ld_c))

    def cluster_loglik(self, theta: FloatArray, beta_c: FloatArray, sigma: float) -> FloatArray:
        """Each top-level cluster's weighted pseudo log-likelihood ``a_c l_c(beta, sigma, theta)``.

        ``beta_c`` is on the engine's centred scale (`ProfiledProblem.beta` maps it to the data's).
        """
        M, ld_c = self._eliminate(np.asarray(theta, dtype=np.float64))
        r = np.append(np.asarray(beta_c, dtype=np.float64), -1.0)
        quad = np.einsum("a,nab,b->n", r, M, r)
        s2 = sigma * sigma
        dev_c = ld_c + self.nu_c * (_LOG_2PI + np.log(s2)) + quad / s2 - self.ldw_c
        return -0.5 * self.node_w[0] * dev_c

    def conditional_modes(
        self, theta: FloatArray, beta: FloatArray, sigma: float, *, cond_var: bool = True
    ) -> list[TermModes]:
        """Conditional modes given the level-1 weights (the groups' own weights do not enter)."""
        theta = np.asarray(theta, dtype=np.float64)
        r = self.y - self.X @ np.asarray(beta, dtype=np.float64)
        Ts = self.factors(theta)
        W = np.empty((r.size, int(self.offsets[-1]) + 1))
        for k, terms in enumerate(self.levels):
            W[:, self.offsets[k] : self.offsets[k + 1]] = np.hstack([t.Z for t in terms]) @ Ts[k]
        W[:, -1] = r
        W *= np.sqrt(self.row_w)[:, None]
        C = outer_sums(W, self.levels[-1][0].codes, self.sizes[-1])
        per_level = tree_modes(C, Ts, list(self.parents), self.sizes, sigma, cond_var)
        return split_levels(self.levels, per_level)

    def with_reml(self, reml: bool) -> PseudoTreeProblem:
        """Pseudo-likelihood is ML only; asking for REML is refused."""
        if reml:
            raise ValueError(
                "a pseudo-likelihood (sampling weights) has no REML version: it is fitted by ML"
            )
        return self
