"""Likelihood engine for nested random effects with structured residuals within the innermost group.

The model is ``y = X beta + Z b + e``, ``b ~ N(0, sigma^2 Lambda Lambda')`` over nested levels and
``e ~ N(0, sigma^2 R)`` with ``R`` block-diagonal over the residual groups (``R_g`` small and
dense: AR(1), exchangeable, ...; see `tiers.design.residual_params`). With ``R = L L'``, the
whitened data ``L^-1 [Z X y]`` follow the independent-residual model, and since
``det V = det R det(Lambda' Z' R^-1 Z Lambda + I)`` the profiled criterion is the nested one
(Bates et al. 2015, eqs. 34 and 41) on whitened cross-products with ``log det R`` added to
``ldL2`` (Pinheiro and Bates 2000, section 5.1). Every evaluation still makes one pass over the
groups:

* the blocks ``R_g`` are factorised once per *pattern* (groups of one size with the same times,
  strata and occasions; a balanced panel has one);
* nested random intercepts (the fast path): the whitened intercept column of a residual group is
  ``v = R_g^-1 1`` for every level at once, so a group enters only through ``1' R_g^-1 1`` and
  ``v' [X y]``, which replace the group size and sums of `tiers.engine.nested_scalar`; the Gram
  ``[X y]' R^-1 [X y]`` is ``sum_{a,b} (R_p^-1)_ab S_p[a, b]`` with the lagged cross-products
  ``S_p`` of each pattern summed once. An evaluation costs O(rows x (p + 1)) for ``v' [X y]``;
* otherwise (slopes) each group's whitened cross-product over ``[Z X y]`` is formed and the
  levels are eliminated as in `tiers.engine.nested_block`.

The parameters are ``(theta, rho)``: the random effects' relative factors, then the residual
structure's unconstrained parameters. For nested random intercepts the gradient is analytic in
theta (`tiers.engine.rside_scalar`) and by central differences in rho; with slopes the optimizer
differentiates the criterion numerically (``has_gradient`` False).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from tiers.design.residuals import ResidualLayout, SizeClass
from tiers.design.terms import TermSpec
from tiers.engine.contract import Evaluation, TermModes
from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.nested_block import TreeProblem
from tiers.engine.rside_scalar import eliminate, sum_matrix
from tiers.engine.tree_modes import block_diag, split_levels, tree_modes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Patterns of one size above which the lagged cross-products are not kept (memory: T^2 (p+1)^2
#: numbers each); the Gram is then whitened directly at each evaluation.
MAX_STORED_PATTERNS = 256


class ResidualProblem(ProfiledProblem):
    """The profiled criterion of a nested LMM with structured residuals, a function of (theta, rho).

    Parameters
    ----------
    y, X : arrays
    levels : list of list of TermSpec
        The terms of each nested level, outermost first.
    parents : list of IntArray
        ``parents[k]`` maps the groups of level k + 1 to their group at level k.
    layout : ResidualLayout
        The residual groups (inside the innermost level's groups) and the structure's parameters.
    reml : bool
    """

    label = "rside"

    def __init__(
        self,
        y: FloatArray,
        X: FloatArray,
        levels: list[list[TermSpec]],
        parents: list[IntArray],
        layout: ResidualLayout,
        *,
        reml: bool = True,
    ) -> None:
        self.reml = reml
        self.y, self.X = np.asarray(y, dtype=np.float64), np.asarray(X, dtype=np.float64)
        D = self._centred(self.y, self.X)
        self.levels, self.parents, self.layout = levels, parents, layout
        self.params = layout.params
        self.K = len(levels)
        self.q = [sum(t.q for t in terms) for terms in levels]
        self.offsets = np.concatenate(([0], np.cumsum(self.q))).astype(int)
        self.sizes = [terms[0].nlevels for terms in levels]
        flat = [t for terms in levels for t in terms]
        self.n_re = sum(t.cov.n_theta for t in flat)
        n_rho = self.params.n_rho
        self.n_theta = self.n_re + n_rho
        self.theta_start = np.concatenate([*(t.cov.start() for t in flat), self.params.start()])
        self.theta_lower = np.concatenate([*(t.cov.lower() for t in flat), np.full(n_rho, -np.inf)])
        self.theta_upper = np.concatenate([*(t.cov.upper() for t in flat), np.full(n_rho, np.inf)])
        self.scalar = all(len(lv) == 1 and lv[0].intercept_only for lv in levels)
        Q = int(self.offsets[-1])
        self.has_gradient = self.scalar
        if self.scalar:
            # per size class: [X y] of each group as (G, p + 1, T), for v' [X y] as one matmul
            self.data = [np.ascontiguousarray(D[c.rows].transpose(0, 2, 1)) for c in layout.classes]
            self.lagged = [
                self._lagged(D[c.rows], c) if c.times.shape[0] <= MAX_STORED_PATTERNS else None
                for c in layout.classes
            ]
            nleaf = self.sizes[-1]
            self.leaf_direct = layout.ngroups == nleaf  # residual groups are the leaves
            self.to_leaf = [sum_matrix(c.leaf, nleaf) for c in layout.classes]
            self.up = [sum_matrix(parents[k - 1], self.sizes[k - 1]) for k in range(1, self.K)]
        else:
            W = np.empty((self.n, Q + self.p + 1))
            for k, terms in enumerate(levels):
                W[:, self.offsets[k] : self.offsets[k + 1]] = np.hstack([t.Z for t in terms])
            W[:, Q:] = D
            self.data = [W[c.rows] for c in layout.classes]

    @staticmethod
    def _lagged(Dc: FloatArray, c: SizeClass) -> FloatArray:
        """Per pattern, ``S_p[a, b] = sum_g d_ga d_gb'`` over its groups: (P, T, T, m, m)."""
        P = c.times.shape[0]
        out = np.empty((P,) + (Dc.shape[1],) * 2 + (Dc.shape[2],) * 2)
        for j in range(P):
            Dj = Dc[c.pattern == j]
            out[j] = np.einsum("gai,gbj->abij", Dj, Dj, optimize=True)
        return out

    @property
    def theta_null(self) -> FloatArray:
        """No random effects and independent residuals of one variance: the linear model."""
        return np.concatenate([np.zeros(self.n_re), self.params.null()])

    def split(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(theta of the random effects, rho)``."""
        theta = np.asarray(theta, dtype=np.float64)
        return theta[: self.n_re], theta[self.n_re :]

    def _factors(self, rho: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
        """Per size class: Cholesky factors of the patterns' blocks and their log-determinants."""
        out: list[tuple[FloatArray, FloatArray]] = []
        for c in self.layout.classes:
            R = self.params.blocks(rho, c.times, c.strata, c.occasion)
            L = np.asarray(np.linalg.cholesky(R), dtype=np.float64)
            logdet: FloatArray = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
            out.append((L, logdet))
        return out

    # ------------------------------------------------------------------------------ evaluation --

    def evaluate(self, theta: FloatArray, *, gradient: bool = False) -> Evaluation:
        """The criterion's parts at ``(theta, rho)``.

        With ``gradient`` (nested random intercepts only): analytic in theta, central differences
        in rho.
        """
        full = np.asarray(theta, dtype=np.float64)
        th, rho = self.split(full)
        factors = self._factors(rho)
        logdet = 0.0
        for c, (_, ldr) in zip(self.layout.classes, factors, strict=True):
            logdet += float(np.bincount(c.pattern, minlength=ldr.size) @ ldr)
        if not self.scalar:
            A, ld = self._general(th, factors)
            return self.finish(full, A, ld + logdet)
        leaf, dtd = self._whitened_sums(factors)
        A, ld, dA, dld = eliminate(leaf, dtd, th**2, self.up, gradient=gradient)
        ev = self.finish(full, A, ld + logdet)
        if not gradient or dA is None or dld is None:
            return ev
        dt, _ = self.gradient_parts(ev, dA, dld)
        grad = np.empty(self.n_theta)
        grad[: self.n_re] = dt * 2.0 * th
        for j in range(self.n_re, self.n_theta):
            h = 1e-6 * max(1.0, abs(full[j]))
            up, dn = full.copy(), full.copy()
            up[j] += h
            dn[j] -= h
            grad[j] = (self.evaluate(up).deviance - self.evaluate(dn).deviance) / (2.0 * h)
        return dataclasses.replace(ev, gradient=grad)

    def _whitened_sums(
        self, factors: list[tuple[FloatArray, FloatArray]]
    ) -> tuple[FloatArray, FloatArray]:
        """Per innermost group ``(1' R^-1 1, 1' R^-1 [X y])``, and ``[X y]' R^-1 [X y]``."""
        m = self.p + 1
        nleaf = self.sizes[-1]
        dtd = np.zeros((m, m))
        leaf = np.zeros((nleaf, m + 1))
        for Dt, lag, c, to_leaf, (L, _) in zip(
            self.data, self.lagged, self.layout.classes, self.to_leaf, factors, strict=True
        ):
            Linv = np.linalg.inv(L)
            Rinv = Linv.transpose(0, 2, 1) @ Linv  # (P, T, T)
            v = Rinv.sum(axis=2)  # R^-1 1 per pattern
            if lag is not None:
                dtd += np.einsum("pab,pabij->ij", Rinv, lag, optimize=True)
            else:
                U = Linv[c.pattern] @ Dt.transpose(0, 2, 1)
                dtd += np.einsum("gti,gtj->ij", U, U, optimize=True)
            block = np.empty((c.pattern.size, m + 1))
            block[:, 0] = v.sum(axis=1)[c.pattern]
            if v.shape[0] == 1:
                block[:, 1:] = Dt @ v[0]
            else:
                block[:, 1:] = np.einsum("gmt,gt->gm", Dt, v[c.pattern], optimize=True)
            if self.leaf_direct:
                leaf[c.leaf] = block
            else:
                leaf += to_leaf @ block
        return leaf, dtd

    def _leaf_cross_products(self, factors: list[tuple[FloatArray, FloatArray]]) -> FloatArray:
        """Per innermost group, the whitened cross-product of ``[Z X y]``."""
        d = self.data[0].shape[2]
        C = np.zeros((self.sizes[-1], d, d))
        for Wc, c, (L, _) in zip(self.data, self.layout.classes, factors, strict=True):
            U = np.linalg.inv(L)[c.pattern] @ Wc
            np.add.at(C, c.leaf, np.einsum("gti,gtj->gij", U, U, optimize=True))
        return C

    def _general(
        self, theta: FloatArray, factors: list[tuple[FloatArray, FloatArray]]
    ) -> tuple[FloatArray, float]:
        """Any nested terms: whitened per-group cross-products, then level-by-level elimination."""
        Ts = self._relative_factors(theta)
        C = self._leaf_cross_products(factors)
        ld = 0.0
        for k in range(self.K - 1, -1, -1):
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            keep = np.r_[0:lo, hi : C.shape[1]]
            M, ld_k = TreeProblem._eliminate(C, slice(lo, hi), keep, Ts[k])
            ld += ld_k
            if k == 0:
                return M.sum(axis=0), ld
            C = np.zeros((self.sizes[k - 1],) + M.shape[1:])
            np.add.at(C, self.parents[k - 1], M)
        raise AssertionError("unreachable: at least one level")  # pragma: no cover

    def _relative_factors(self, theta: FloatArray) -> list[FloatArray]:
        out, at = [], 0
        for terms in self.levels:
            blocks = []
            for term in terms:
                blocks.append(term.cov.factor(theta[at : at + term.cov.n_theta]))
                at += term.cov.n_theta
            out.append(block_diag(blocks))
        return out

    # ------------------------------------------------------------------------------- read-off --

    def conditional_modes(
        self, theta: FloatArray, beta: FloatArray, sigma: float, *, cond_var: bool = True
    ) -> list[TermModes]:
        """Conditional modes given (theta, rho): the tree recursion on whitened cross-products."""
        th, rho = self.split(theta)
        Ts = self._relative_factors(th)
        r = self.y - self.X @ np.asarray(beta, dtype=np.float64)
        Q = int(self.offsets[-1])
        W = np.empty((self.n, Q + 1))
        for k, terms in enumerate(self.levels):
            W[:, self.offsets[k] : self.offsets[k + 1]] = np.hstack([t.Z for t in terms]) @ Ts[k]
        W[:, -1] = r
        d = Q + 1
        C = np.zeros((self.sizes[-1], d, d))
        for c, (L, _) in zip(self.layout.classes, self._factors(rho), strict=True):
            U = np.linalg.inv(L)[c.pattern] @ W[c.rows]
            np.add.at(C, c.leaf, np.einsum("gti,gtj->gij", U, U, optimize=True))
        per_level = tree_modes(C, Ts, list(self.parents), self.sizes, sigma, cond_var)
        return split_levels(self.levels, per_level)
