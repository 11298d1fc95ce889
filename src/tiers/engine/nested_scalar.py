"""Likelihood engine for nested random-intercept models: the profiled deviance as a function of theta.

The model is ``y = X beta + sum_k Z_k b_k + e`` with ``b_k ~ N(0, sigma^2 theta_k^2 I)`` and levels
``k = 1..K`` nested outermost first. Following Bates et al. (2015, JSS 67(1), eqs. 10-34) the
deviance is profiled over beta and sigma and depends on theta alone through

* ``ldL2 = log det(Lambda' Z' Z Lambda + I)``,
* ``ldRX2 = log det(X' V^-1 X)`` (REML only), with ``V = I + Z Lambda Lambda' Z'``,
* ``pwrss = min_beta (y - X beta)' V^-1 (y - X beta)``, the penalized weighted RSS.

Because the levels nest, the penalized system is a tree. Eliminating the random effects innermost
first, each node ``j`` of level ``k`` sees its subtree only through the first column
``c_j = (c_j0, c_jX, c_jy)`` of its absorbed cross-product matrix (the column of the scalar offset
that its ancestors add), so eliminating ``u_j`` is a rank-one update with pivot
``s_j = 1 + theta_k^2 c_j0`` (a scalar Schur complement):

    ldL2       += log s_j
    [X y]'V^-1[X y] -= (theta_k^2 / s_j) c_j[1:] c_j[1:]'
    c_parent   += c_j / s_j

One evaluation is therefore one pass over the nodes with O((p + 1)^2) work each; no n x n or
q x q matrix is formed. At the innermost level, ``c_g`` depends on the data only and ``s_g`` only
on the group size ``n_g``, so the leaves are summed once per (parent, group size) pair and per size
class; after that an evaluation never touches the leaves again. The gradient is carried along the
same pass by forward differentiation in ``t_k = theta_k^2``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tiers.data.columns import ColumnMatrix
from tiers.data.crossprod import gram
from tiers.design.grouping import Tree, renumber_levels
from tiers.engine.contract import Evaluation, TermModes
from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.group_sums import STEP, size_classes, sum_rows
from tiers.engine.moment_start import THETA_FLOOR, nested_anova_theta
from tiers.engine.statistics import (
    NestedStatistics,
    RowSums,
    row_statistics,
    run_sums,
    uniform_runs,
)
from tiers.engine.tree_modes import tree_modes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class _Accumulator:
    """Running log-determinant and Gram downdate, and their derivatives in t = theta^2."""

    __slots__ = ("G", "ld", "dG", "dld", "gradient")

    def __init__(self, K: int, p: int, gradient: bool) -> None:
        self.gradient = gradient
        self.G = np.zeros((p + 1, p + 1))
        self.ld = 0.0
        self.dG = np.zeros((K, p + 1, p + 1)) if gradient else np.zeros(0)
        self.dld = np.zeros(K) if gradient else np.zeros(0)


class NestedProblem(ProfiledProblem):
    """The profiled deviance of a nested random-intercept LMM, as a function of theta.

    Parameters
    ----------
    y : array (n,)
    X : array (n, p)
        Full column rank (collinear columns are removed upstream).
    tree : Tree
        The nesting; level 0 is the outermost.
    reml : bool
        REML criterion (default in lme4) or ML deviance.
    weights : array (n,), optional
        Precision weights (lme4's ``weights=``), or frequency weights with ``frequency``; a leaf's
        size is then its weight total (`tiers.engine.statistics`).

    Notes
    -----
    The only state is the data's sufficient statistics, built once; `deviance` is a pure function of
    theta. Columns of ``X`` other than an all-ones intercept, and ``y``, are centred when an intercept
    is present: the deviance is invariant (a unit-triangular change of basis of X) and the
    cross-products lose less precision to cancellation.
    """

    label = "nested"
    has_gradient = True
    #: theta_start is near the optimum (`_anova_start`): the optimiser polishes it first.
    start_near = False

    def __init__(
        self,
        y: FloatArray,
        X: FloatArray | ColumnMatrix,
        tree: Tree,
        *,
        reml: bool = True,
        weights: FloatArray | None = None,
        frequency: bool = False,
    ) -> None:
        stats = row_statistics(y, X, tree, weights=weights, frequency=frequency)
        self._from_statistics(stats, reml)

    @classmethod
    def from_statistics(cls, stats: NestedStatistics, *, reml: bool = True) -> NestedProblem:
        """The engine from sufficient statistics; no row is needed.

        The statistics are built in one pass, or chunk by chunk and combined
        (`tiers.engine.statistics.NestedStatistics.combine`).
        """
        obj = cls.__new__(cls)
        obj._from_statistics(stats.centred(), reml)
        return obj

    def _from_statistics(self, stats: NestedStatistics | RowSums, reml: bool) -> None:
        tree = stats.tree
        self.n, self.p = stats.n, stats.p
        self.intercept, self.shift = stats.intercept, stats.shift
        self.K = len(tree.sizes)
        self.reml = reml
        self.tree = tree
        self.n_theta = self.K
        self.theta_start = np.ones(self.K)
        self.theta_lower = np.zeros(self.K)
        self.theta_upper = np.full(self.K, np.inf)
        self.dtd = stats.dtd
        self.ldw = stats.ldw
        # The leaf sums c_g = (n_g, sum x, sum y), for the conditional modes: the table of
        # statistics, or the rows that it is summed from again (`RowSums`), never kept twice.
        self.stats = stats
        renumber = self._renumber(tree) if self.K > 1 else []
        smallest, largest = stats.leaf_size_range()
        # equal leaves need no size classes (two n_leaf-long index arrays, 64 MB at 4 million
        # leaves), nor the leaves' sizes (32 MB)
        self.uniform_from = self._uniform_from(tree) if smallest == largest else self.K
        if self.uniform_from < self.K:
            self._init_uniform(tree, stats, smallest, renumber)
            if self.uniform_from == 0:
                self._anova_start(stats)
        else:
            present, size_class = size_classes(stats.leaf_sizes())
            self._init_leaf_classes(tree, stats, size_class, present, renumber)

    def _anova_start(self, stats: NestedStatistics | RowSums) -> None:
        """Start at the ANOVA estimates of a balanced design (`nested_anova_theta`).

        Read off the cross-products the uniform levels keep, they are at (intercept-only) or
        near (other fixed effects) the REML optimum: with none at its floor, the optimiser goes
        straight to the Newton polish (``start_near``), 11 evaluations where L-BFGS-B from
        lme4's start took 28 on the seed design.
        """
        # the column sums of [X y]: the leaf table's, or the intercept's row of D'D
        if isinstance(stats, NestedStatistics):
            colsum = stats.colsum
        elif stats.intercept is not None:
            colsum = stats.dtd[stats.intercept]
        else:
            return
        levels = [(n_l, N_l, graw) for _, n_l, N_l, graw in reversed(self.tail)]
        start = nested_anova_theta(self.dtd, colsum, stats.wsum, levels)
        if start is not None:
            self.theta_start = start
            self.start_near = bool(np.all(start > THETA_FLOOR))

    def _uniform_from(self, tree: Tree) -> int:
        """The outermost level u such that every level from u inwards is uniform.

        A level is uniform when all its nodes have the same number of children (leaves: the same
        number of observations). Balanced designs are uniform throughout.
        """
        u = self.K - 1
        for level in range(self.K - 2, -1, -1):
            parent = tree.parents[level]
            kids = np.zeros(tree.sizes[level], dtype=np.int64)
            for i in range(0, parent.size, STEP):  # whole: an intp copy of int32 parents
                kids += np.bincount(parent[i : i + STEP], minlength=kids.size)
            if kids.min() != kids.max():
                break
            u = level
        return u

    def _init_uniform(
        self, tree: Tree, stats: NestedStatistics | RowSums, n_leaf: float, renumber: list[IntArray]
    ) -> None:
        """Uniform levels: every node of level l holds n_l observations.

        At any theta, a node's ``c_j`` is one scalar ``alpha_l(theta)`` times its raw subtree sums
        ``S_j``. Each uniform level then enters through ``Graw_l = sum_j S_j[1:] S_j[1:]'`` alone:
        O(1) per evaluation. The leaves are read a block at a time (`RowSums` never holds them).
        """
        K, m = self.K, self.p + 1
        graw = np.zeros((m, m))
        S = np.zeros((tree.sizes[-2] if K > 1 else 0, m + 1))
        for lo, block in stats.leaf_blocks():
            raw = block[:, 1:]
            graw += gram(raw)
            if K > 1:
                parent = tree.parents[-1][lo : lo + block.shape[0]]
                sum_rows(block, parent, S.shape[0], out=S)
        self.tail: list[tuple[int, float, float, FloatArray]] = [
            (K - 1, n_leaf, float(tree.sizes[-1]), graw)
        ]
        for level in range(K - 2, self.uniform_from - 1, -1):
            raw = S[:, 1:]
            self.tail.append((level, float(S[0, 0]), float(S.shape[0]), gram(raw, raw)))
            if level > 0:
                parent, nparent = tree.parents[level - 1], tree.sizes[level - 1]
                r = uniform_runs(parent, nparent)
                S = run_sums(S, r) if r else sum_rows(S, parent, nparent)
        # stacked for the evaluations: one product per evaluation, not one per level
        self.tail_graw = np.array([g.ravel() for *_, g in self.tail])
        self.tail_count = np.array([N for _, _, N, _ in self.tail])
        if self.uniform_from > 0:
            # S now holds the sums of level u - 1, in the original numbering.
            start = np.empty_like(S)
            start[renumber[self.uniform_from - 1]] = S
            self.start_S = start

    def _init_leaf_classes(
        self,
        tree: Tree,
        stats: NestedStatistics | RowSums,
        size_class: NDArray[np.integer[Any]],
        present: FloatArray,
        renumber: list[IntArray],
    ) -> None:
        """Unequal leaf sizes: ``s_g`` depends on ``n_g`` only.

        Leaves are therefore summed once per size class (``Q``) and per (parent, size class) pair
        (``R``), in one pass over the leaf sums a block at a time.
        """
        nclass = present.size
        self.leaf_sizes = present
        count = np.zeros(nclass)
        pair_of_leaf = self._pairs(tree, size_class, nclass, renumber) if self.K > 1 else None
        m = self.p + 1
        # Q[c] = sum over leaves of size class c of c_g[1:] c_g[1:]'  (data only, theta-free),
        # a block of leaves at a time: the leaves sorted by class, whole, would be a copy of the
        # table (1.2 GB at 50 million leaves)
        self.leaf_Q = np.zeros((nclass, m, m))
        R = np.zeros((0 if pair_of_leaf is None else self.pair_class.size, m + 1))
        for lo, csum in stats.leaf_blocks():
            sc = size_class[lo : lo + csum.shape[0]]
            order = np.argsort(sc.astype(np.int16 if nclass < 2**15 else np.int64), kind="stable")
            held = np.bincount(sc, minlength=nclass)
            count += held
            bounds = np.concatenate(([0], np.cumsum(held)))
            cs = csum[order, 1:]
            if nclass <= 64:
                for c in np.flatnonzero(held):
                    block = cs[bounds[c] : bounds[c + 1]]
                    self.leaf_Q[c] += block.T @ block
            else:  # many classes (weight totals): one vectorised pass over the classes present
                there = np.flatnonzero(held)
                outer = cs[:, :, None] * cs[:, None, :]
                self.leaf_Q[there] += np.add.reduceat(outer, bounds[there], axis=0)
            del cs
            if pair_of_leaf is not None:
                sum_rows(csum, pair_of_leaf[lo : lo + csum.shape[0]], R.shape[0], out=R)
        self.leaf_class_count = count
        if pair_of_leaf is not None:
            self.pair_R = R

    def _pairs(
        self,
        tree: Tree,
        size_class: NDArray[np.integer[Any]],
        nclass: int,
        renumber: list[IntArray],
    ) -> NDArray[np.integer[Any]]:
        """Each leaf's (parent, size class) pair.

        Sets the pairs' classes and each parent's first pair (pairs sorted by renumbered parent).
        """
        nleaf = tree.sizes[-1]
        new_parent = renumber[-1]
        nparent = tree.sizes[-2]
        if nparent * nclass <= 4 * nleaf + 1024:
            # keys are small: bincount keeps them sorted by parent without a sort; the key of
            # each leaf formed a million leaves at a time (whole: three int64 arrays per leaf)
            def keys(i: int) -> IntArray:
                return (
                    new_parent[tree.parents[-1][i : i + STEP]] * nclass + size_class[i : i + STEP]
                )

            used = np.zeros(nparent * nclass, dtype=bool)
            for i in range(0, nleaf, STEP):
                used[keys(i)] = True
            uniq = np.flatnonzero(used)
            lookup = np.cumsum(used, dtype=np.int64) - 1
            del used
            pair_of_leaf: NDArray[np.integer[Any]] = np.empty(
                nleaf, dtype=np.int32 if uniq.size < 2**31 else np.int64
            )
            for i in range(0, nleaf, STEP):
                pair_of_leaf[i : i + STEP] = lookup[keys(i)]
            del lookup
        else:
            pair_key = new_parent[tree.parents[-1]] * nclass + size_class
            uniq, pair_of_leaf = np.unique(pair_key, return_inverse=True)
            del pair_key
        self.pair_class = uniq % nclass
        self.pair_starts = np.searchsorted(uniq // nclass, np.arange(nparent))
        return pair_of_leaf

    def _renumber(self, tree: Tree) -> list[IntArray]:
        new, self.level_starts = renumber_levels(list(tree.parents), list(tree.sizes))
        return new

    # ------------------------------------------------------------------------------ evaluation --

    def evaluate(self, theta: FloatArray, *, gradient: bool = False) -> Evaluation:
        """Eliminate the tree at ``theta``; return the deviance and its parts.

        Parameters
        ----------
        theta : array (K,)
            Relative standard deviations sigma_k / sigma, outermost level first.
        gradient : bool
            Also return d deviance / d theta (forward-mode through the elimination).
        """
        theta = np.asarray(theta, dtype=np.float64)
        K, p = self.K, self.p
        t = theta**2
        acc = _Accumulator(K, p, gradient)
        if self.uniform_from < K:
            W = self._uniform_levels(t, acc)
            k_start = self.uniform_from - 1
        else:
            W = self._leaf_classes(t, acc)
            k_start = K - 2
        if W is not None:
            self._node_levels(W, k_start, t, acc)
        return self._finish(
            theta, acc.G, float(acc.ld), acc.dG if gradient else None, acc.dld if gradient else None
        )

    def _uniform_levels(self, t: FloatArray, acc: _Accumulator) -> FloatArray | None:
        """Closed-form elimination of the uniform levels (scalar recursion in alpha, s).

        The recursion runs on Python floats (a few levels: numpy's ~1 us a call on scalars was
        40% of an evaluation); G and its derivatives are then one product each with the stacked
        ``Graw_l``.
        """
        K = self.K
        tt = t.tolist()
        alpha = 1.0
        dalpha = [0.0] * K
        coefs: list[float] = []
        dcoefs: list[list[float]] = []
        svals: list[float] = []
        dld = [0.0] * K
        for level, n_l, N_l, _ in self.tail:
            tl = tt[level]
            c0 = alpha * n_l
            s = 1.0 + tl * c0
            coef = tl * alpha * alpha / s
            svals.append(s)
            coefs.append(coef)
            if acc.gradient:
                ds = [tl * n_l * da for da in dalpha]
                ds[level] += c0
                dcoef = [
                    2.0 * tl * alpha * da / s - coef * d / s
                    for da, d in zip(dalpha, ds, strict=True)
                ]
                dcoef[level] += alpha * alpha / s
                dld = [a + N_l * d / s for a, d in zip(dld, ds, strict=True)]
                dcoefs.append(dcoef)
                dalpha = [da / s - alpha * d / (s * s) for da, d in zip(dalpha, ds, strict=True)]
            alpha = alpha / s
        graw = self.tail_graw
        m = acc.G.shape[0]
        acc.ld += float(self.tail_count @ np.log(svals))
        acc.G += (np.array(coefs) @ graw).reshape(m, m)
        if acc.gradient:
            acc.dld += dld
            acc.dG += (np.array(dcoefs).T @ graw).reshape(K, m, m)
        if self.uniform_from == 0:
            return None
        S = self.start_S
        if not acc.gradient:
            return alpha * S
        blocks = [alpha * S] + [d * S for d in dalpha[self.uniform_from :]]
        return np.concatenate(blocks, axis=1)

    def _leaf_classes(self, t: FloatArray, acc: _Accumulator) -> FloatArray | None:
        """Innermost level with unequal group sizes: per size class, s = 1 + t_K n."""
        K = self.K
        tk = t[K - 1]
        s = 1.0 + tk * self.leaf_sizes
        acc.ld += float(self.leaf_class_count @ np.log(s))
        acc.G += np.tensordot(tk / s, self.leaf_Q, axes=1)
        if acc.gradient:
            acc.dld[K - 1] += float(self.leaf_class_count @ (self.leaf_sizes / s))
            acc.dG[K - 1] += np.tensordot(1.0 / s**2, self.leaf_Q, axes=1)
        if K == 1:
            return None
        R = self.pair_R
        if acc.gradient:
            scale = np.stack([1.0 / s, -self.leaf_sizes / s**2], axis=1)[self.pair_class]
            wide = (R[:, None, :] * scale[:, :, None]).reshape(R.shape[0], 2 * R.shape[1])
            return np.add.reduceat(wide, self.pair_starts)
        return np.add.reduceat(R * (1.0 / s)[self.pair_class, None], self.pair_starts)

    def _node_levels(self, W: FloatArray, k_start: int, t: FloatArray, acc: _Accumulator) -> None:
        """Node-by-node elimination from level ``k_start`` outwards.

        ``W`` holds, per node, ``c`` followed by ``dc/dt_j`` for each deeper level ``j`` (the only
        nonzero derivatives), so moving up a level is one ``reduceat``.
        """
        K, p = self.K, self.p
        q = p + 2
        for k in range(k_start, -1, -1):
            N = W.shape[0]
            c = W[:, :q]
            tk = t[k]
            c0 = c[:, 0]
            inv = 1.0 / (1.0 + tk * c0)
            w = tk * inv
            cx = c[:, 1:]
            acc.ld += float(np.sum(np.log1p(tk * c0)))
            acc.G += (cx * w[:, None]).T @ cx
            if acc.gradient:
                nd = K - 1 - k  # deeper levels k+1..K-1
                dcs = W[:, q:].reshape(N, nd, q)
                inv2 = inv * inv
                acc.dld[k] += float(c0 @ inv)
                acc.dG[k] += (cx * inv2[:, None]).T @ cx
                ds = tk * dcs[:, :, 0]  # (N, nd)
                acc.dld[k + 1 :] += inv @ ds
                dw = -tk * ds * inv2[:, None]
                outer = (cx[:, :, None] * cx[:, None, :]).reshape(N, -1)
                term = (dw.T @ outer).reshape(nd, p + 1, p + 1)
                cross = np.tensordot(dcs[:, :, 1:] * w[:, None, None], cx, axes=([0], [0]))
                acc.dG[k + 1 :] += term + cross + cross.transpose(0, 2, 1)
            if k > 0:
                m = c * inv[:, None]
                if acc.gradient:
                    own = -c * (c0 * inv2)[:, None]
                    deeper = (
                        dcs * inv[:, None, None] - c[:, None, :] * (ds * inv2[:, None])[:, :, None]
                    )
                    m = np.concatenate([m, own, deeper.reshape(N, nd * q)], axis=1)
                W = np.add.reduceat(m, self.level_starts[k], axis=0)

    def _finish(
        self,
        theta: FloatArray,
        G: FloatArray,
        ld: float,
        dG: FloatArray | None,
        dld: FloatArray | None,
    ) -> Evaluation:
        ev = self.finish(theta, self.dtd - G, ld)
        if dG is None or dld is None:
            return ev
        dt, parts = self.gradient_parts(ev, -dG, dld)  # A = dtd - G
        return dataclasses.replace(ev, gradient=dt * 2.0 * theta, gradient_t=dt, parts_t=parts)

    # ------------------------------------------------------------------------------- read-off --

    def conditional_modes(
        self, theta: FloatArray, beta: FloatArray, sigma: float, *, cond_var: bool = True
    ) -> list[TermModes]:
        """Conditional modes (and variances) of every level, from the leaf sums alone.

        A leaf's cross-product over ``w_i = (theta_0, ..., theta_K-1, r_i)`` is
        ``n_g w w'`` on the effects and ``theta sum_g r`` against the residual, with
        ``sum_g r = sum_g y - (sum_g x)' beta`` (raw sums: centred sums plus ``n_g`` times the
        shift); see `tiers.engine.tree_modes`.
        """
        theta = np.asarray(theta, dtype=np.float64)
        K, p = self.K, self.p
        leaf = self.stats.leaf_table()
        n_g = leaf[:, 0]
        raw = leaf[:, 1:] + n_g[:, None] * self.shift
        r_g = raw[:, p] - raw[:, :p] @ np.asarray(beta, dtype=np.float64)
        C = np.zeros((n_g.size, K + 1, K + 1))
        C[:, :K, :K] = n_g[:, None, None] * np.outer(theta, theta)
        C[:, :K, K] = C[:, K, :K] = r_g[:, None] * theta
        Ts = [np.array([[v]]) for v in theta]
        per_level = tree_modes(
            C, Ts, list(self.tree.parents), list(self.tree.sizes), sigma, cond_var
        )
        return [TermModes(b, cov) for b, cov in per_level]
