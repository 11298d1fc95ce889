"""Likelihood engine for nested grouping with any random-effects terms per level (slopes too).

Levels ``k = 0..K-1`` are nested outermost first; level k's groups carry ``q_k`` effects with
relative factor ``T_k`` and model matrix ``Z_k`` (n x q_k). Every observation has the row
``w_i = (z_i0, ..., z_iK-1, x_i, y_i)``. Eliminating the random effects innermost first
(Bates et al. 2015, eqs. 10-34, organised as the tree the nesting makes), a node j of level k holds
``C_j``, the cross-product of its subtree over the coordinates of levels ``0..k`` and ``[x y]``,
with the deeper levels already absorbed. Its own effects are removed by a block Schur complement:

    P_j = T_k' C_oo T_k + I,    ldL2 += log det P_j,
    M_j = C_rr - (C_ro T_k) P_j^-1 (C_ro T_k)',

and the parent sums its children's ``M_j``. At the root only ``[x y]`` is left: the downdated
cross-product the profiled deviance is read from. Nothing n x n or q x q (q the total number of
random effects) is ever formed; work is O(nodes * d^2 * q_k) with d = sum_{l<=k} q_l + p + 1.

When the innermost term is a scalar intercept, ``P_g = 1 + t n_g`` depends on the group size only:
leaves are then summed once per (parent, group size), as in `tiers.engine.nested_scalar`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from tiers.design.grouping import renumber_levels
from tiers.design.terms import TermSpec
from tiers.engine.block_schur import eliminate, eliminate_grad
from tiers.engine.contract import Evaluation, TermModes
from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.tree_modes import block_diag, split_levels, tree_modes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _pair_sums(values: FloatArray, key: IntArray, nkeys: int) -> FloatArray:
    """Sum rows of a (m, d, d) array by key, via one bincount per entry of the lower triangle."""
    d = values.shape[1]
    out = np.zeros((nkeys, d, d))
    rows, cols = np.tril_indices(d)
    for i, j in zip(rows, cols, strict=True):
        s = np.bincount(key, weights=values[:, i, j], minlength=nkeys)
        out[:, i, j] = s
        out[:, j, i] = s
    return out


def outer_sums(W: FloatArray, key: IntArray, nkeys: int) -> FloatArray:
    """``sum_{i: key_i = g} w_i w_i'`` for every g, as (nkeys, d, d), without forming n x d x d."""
    d = W.shape[1]
    out = np.zeros((nkeys, d, d))
    for i in range(d):
        for j in range(i + 1):
            s = np.bincount(key, weights=W[:, i] * W[:, j], minlength=nkeys)
            out[:, i, j] = s
            out[:, j, i] = s
    return out


class TreeProblem(ProfiledProblem):
    """Profiled deviance of a nested LMM whose levels may carry several effects each.

    Parameters
    ----------
    y, X : arrays
    levels : list of list of TermSpec
        Per level (outermost first), the terms on that level's grouping factor (usually one; two
        when e.g. ``(1 | g) + (0 + x | g)`` share the factor: their effects are stacked).
    parents : list of IntArray
        ``parents[k]`` maps the groups of level k + 1 to their group at level k.
    reml : bool
    weights : array (n,), optional
        Precision weights, or frequency weights with ``frequency``: rows scaled by ``sqrt(w)``
        (`tiers.engine.gaussian`).
    """

    label = "tree"

    def __init__(
        self,
        y: FloatArray,
        X: FloatArray,
        levels: list[list[TermSpec]],
        parents: list[IntArray],
        *,
        reml: bool = True,
        weights: FloatArray | None = None,
        frequency: bool = False,
        general: bool = False,
    ) -> None:
        self.reml = reml
        self.rows_shift: FloatArray | None = None
        self.y, self.X = np.asarray(y, dtype=np.float64), np.asarray(X, dtype=np.float64)
        D = self._centred(self.y, self.X)
        self.sw = self._weigh(weights, frequency=frequency)
        self.levels = levels
        self.K = len(levels)
        self.q = [sum(t.q for t in terms) for terms in levels]
        self.offsets = np.concatenate(([0], np.cumsum(self.q)))
        Q = int(self.offsets[-1])
        self.Q = Q
        slices, start = [], 0
        for terms in levels:
            for term in terms:
                slices.append(slice(start, start + term.cov.n_theta))
                start += term.cov.n_theta
        self.term_slices = slices
        self.n_theta = start
        terms_flat = [t for terms in levels for t in terms]
        self.theta_lower = np.concatenate([t.cov.lower() for t in terms_flat])
        self.theta_upper = np.concatenate([t.cov.upper() for t in terms_flat])
        self.theta_start = np.concatenate([t.cov.start() for t in terms_flat])
        self.has_gradient = True
        W = np.empty((self.y.size, Q + self.p + 1))
        for k, terms in enumerate(levels):
            W[:, self.offsets[k] : self.offsets[k + 1]] = np.hstack([t.Z for t in terms])
        W[:, Q:] = D
        if self.sw is not None:
            W *= self.sw[:, None]
        self.sizes = [terms[0].nlevels for terms in levels]
        self.parents = parents
        self._renumber()
        leaf = levels[-1][0].codes
        last = self.K - 1
        own = slice(int(self.offsets[last]), int(self.offsets[last + 1]))
        keep = np.r_[0 : int(self.offsets[last]), Q : Q + self.p + 1]
        # the group-size shortcuts need Z = 1 and observations for rows: weighted rows, and rows
        # that are not observations (`from_leaf_rows`), take the general elimination
        self.scalar_leaf = (
            not general and self.q[last] == 1 and levels[last][0].intercept_only and self.sw is None
        )
        self.uniform_from = self._uniform_from(leaf) if self.scalar_leaf else self.K
        if self.uniform_from < self.K:
            self._init_uniform(W, leaf)
        elif self.scalar_leaf and self.K > 1:
            # P_g = 1 + t n_g: sum the leaves per (parent, size) once; see the module docstring.
            counts = np.bincount(leaf, minlength=self.sizes[last])
            sizes, size_class, mult = np.unique(counts, return_inverse=True, return_counts=True)
            self.leaf_sizes, self.leaf_mult = sizes.astype(np.float64), mult.astype(np.float64)
            parent = self.new_index[last - 1][parents[last - 1]]
            pair = parent * sizes.size + size_class
            uniq, pair_of_leaf = np.unique(pair, return_inverse=True)
            Wr = W[:, keep]
            self.parent_S = outer_sums(
                Wr, self.new_index[last - 1][parents[last - 1]][leaf], self.sizes[last - 1]
            )
            c = np.empty((self.sizes[last], keep.size))
            for j in range(keep.size):
                c[:, j] = np.bincount(leaf, weights=Wr[:, j], minlength=self.sizes[last])
            self.pair_P = _pair_sums(c[:, :, None] * c[:, None, :], pair_of_leaf, uniq.size)
            self.pair_n = sizes[uniq % sizes.size].astype(np.float64)
            self.pair_starts = np.searchsorted(uniq // sizes.size, np.arange(self.sizes[last - 1]))
        else:
            self.leaf_C = outer_sums(W, leaf, self.sizes[last])
            if self.K > 1:
                order = np.argsort(self.new_index[last - 1][parents[last - 1]], kind="stable")
                self.leaf_C = self.leaf_C[order]
                self.leaf_starts = np.searchsorted(
                    self.new_index[last - 1][parents[last - 1]][order],
                    np.arange(self.sizes[last - 1]),
                )
        self.own_last, self.keep_last = own, keep

    @classmethod
    def from_leaf_rows(
        cls,
        rows: FloatArray,
        levels: list[list[TermSpec]],
        parents: list[IntArray],
        *,
        n: int,
        shift: FloatArray,
        intercept: int | None,
        reml: bool = True,
    ) -> TreeProblem:
        """The engine from rows that reproduce each leaf's cross-product (`tiers.scale`).

        ``rows`` holds ``[x y]`` about ``shift`` (the intercept column unshifted), a few per leaf,
        such that per leaf ``R_g' R_g = sum_(i in g) w_i w_i'`` with ``w = [z x y]`` (the
        terms' ``Z`` and codes are those rows'). The general elimination reads rows only through
        those per-leaf cross-products and the conditional modes through linear maps of them, so
        the engine is the data's; ``n`` is the number of observations and beta is mapped back
        from the shift as for centred data.
        """
        p = rows.shape[1] - 1
        obj = cls(rows[:, p], rows[:, :p], levels, parents, reml=reml, general=True)
        obj.n, obj.shift, obj.intercept = int(n), np.asarray(shift, dtype=np.float64), intercept
        obj.rows_shift = obj.shift if intercept is not None else None
        return obj

    def _is_scalar(self, k: int) -> bool:
        return self.q[k] == 1 and self.levels[k][0].intercept_only

    def _uniform_from(self, leaf: IntArray) -> int:
        """The outermost level u >= 1 from which every level inwards is a scalar intercept.

        Those levels have nodes of one shape (equal group sizes, equal numbers of children). K when
        there is none.
        """
        counts = np.bincount(leaf, minlength=self.sizes[-1])
        if self.K < 2 or counts.min() != counts.max():
            return self.K
        u = self.K - 1
        for k in range(self.K - 2, 0, -1):
            kids = np.bincount(self.parents[k], minlength=self.sizes[k])
            if not self._is_scalar(k) or kids.min() != kids.max():
                break
            u = k
        return u

    def _init_uniform(self, W: FloatArray, leaf: IntArray) -> None:
        """Uniform scalar levels (as in `tiers.engine.nested_scalar`).

        The first column of a node's matrix is ``alpha_l(theta)`` times its raw subtree sums ``a``,
        so a node j of level u - 1 holds

            C_j = S_j - sum_{l >= u} coef_l(theta) R_jl,   R_jl = sum of a_d a_d' over its
                                                            descendants d at level l,

        and an evaluation never visits the uniform levels' nodes.
        """
        u, K = self.uniform_from, self.K
        keep = np.r_[0 : int(self.offsets[u]), self.Q : self.Q + self.p + 1]
        Wk = W[:, keep]
        # ancestors at level u - 1 (new numbering) of the leaves and of every uniform level's nodes
        anc = [np.arange(self.sizes[-1])]
        for level in range(K - 1, u - 1, -1):
            anc.append(self.parents[level - 1][anc[-1]])
        top = self.new_index[u - 1]
        self.uni_S = outer_sums(Wk, top[anc[-1][leaf]], self.sizes[u - 1])
        a = np.empty((self.sizes[-1], keep.size))
        for j in range(keep.size):
            a[:, j] = np.bincount(leaf, weights=Wk[:, j], minlength=self.sizes[-1])
        self.uni_R, self.uni_n, self.uni_N = [], [], []
        for i, level in enumerate(range(K - 1, u - 1, -1)):
            key = top[self._ancestor(level, u - 1)]
            self.uni_R.append(outer_sums(a, key, self.sizes[u - 1]))
            self.uni_N.append(float(self.sizes[level]))
            self.uni_n.append(float(self.n) / self.sizes[level])
            if level > u:
                a = np.stack(
                    [
                        np.bincount(
                            self.parents[level - 1],
                            weights=a[:, j],
                            minlength=self.sizes[level - 1],
                        )
                        for j in range(keep.size)
                    ],
                    axis=1,
                )
            del i
        self.uni_theta = [
            self.term_slices[self._term_index(level)].start for level in range(K - 1, u - 1, -1)
        ]

    def _ancestor(self, level: int, up: int) -> IntArray:
        """Original-numbering ancestor at level ``up`` of each node of ``level``."""
        idx = np.arange(self.sizes[level])
        for k in range(level, up, -1):
            idx = self.parents[k - 1][idx]
        return idx

    def _term_index(self, level: int) -> int:
        return sum(len(terms) for terms in self.levels[:level])

    def _uniform_start(self, theta: FloatArray, gradient: bool):
        """C (and dC along the uniform levels' theta) for the nodes of level u - 1."""
        m = len(self.uni_R)
        alpha, dalpha = 1.0, np.zeros(m)
        C = self.uni_S.copy()
        dC = np.zeros((C.shape[0], m) + C.shape[1:]) if gradient else None
        ld, dld = 0.0, np.zeros(m)
        for i, (R, n_l, N_l, at) in enumerate(
            zip(self.uni_R, self.uni_n, self.uni_N, self.uni_theta, strict=True)
        ):
            t = float(theta[at]) ** 2
            c0 = alpha * n_l
            s = 1.0 + t * c0
            coef = t * alpha * alpha / s
            ld += N_l * np.log(s)
            C -= coef * R
            if dC is not None:
                ds = t * n_l * dalpha
                ds[i] += c0
                dcoef = 2.0 * t * alpha * dalpha / s - coef * ds / s
                dcoef[i] += alpha * alpha / s
                dld += N_l * ds / s
                dC -= dcoef[None, :, None, None] * R[:, None]
                dalpha = dalpha / s - alpha * ds / (s * s)
            alpha = alpha / s
        # derivatives were in t = theta^2; the uniform levels run innermost first, theta order is
        # outermost first
        chain = 2.0 * theta[self.uni_theta]
        if dC is not None:
            dC = (dC * chain[None, :, None, None])[:, ::-1]
            dld = (dld * chain)[::-1]
        return C, dC, ld, dld

    def _renumber(self) -> None:
        """Non-leaf levels renumbered so that siblings are contiguous (one reduceat per level)."""
        self.new_index, self.level_starts = renumber_levels(self.parents, self.sizes)

    def factors(self, theta: FloatArray) -> list[FloatArray]:
        """Relative factor of each level (block-diagonal over the level's terms)."""
        out = []
        i = 0
        for terms in self.levels:
            blocks = []
            for term in terms:
                blocks.append(term.cov.factor(theta[self.term_slices[i]]))
                i += 1
            out.append(block_diag(blocks))
        return out

    _eliminate = staticmethod(eliminate)

    def factor_grads(self, theta: FloatArray) -> list[FloatArray]:
        """Per level, ``dT_k / d theta`` for the level's own parameters, (n_own, q_k, q_k)."""
        out = []
        i = 0
        for terms, q in zip(self.levels, self.q, strict=True):
            blocks, at = [], 0
            for term in terms:
                g = term.cov.factor_grad(theta[self.term_slices[i]])
                full = np.zeros((g.shape[0], q, q))
                full[:, at : at + term.q, at : at + term.q] = g
                blocks.append(full)
                at += term.q
                i += 1
            out.append(np.concatenate(blocks))
        return out

    _eliminate_grad = staticmethod(eliminate_grad)

    def evaluate(self, theta: FloatArray, *, gradient: bool = False) -> Evaluation:
        """Eliminate the tree at ``theta``; with ``gradient``, carry forward derivatives along."""
        if gradient:
            return self._evaluate_grad(np.asarray(theta, dtype=np.float64))
        return self._evaluate(np.asarray(theta, dtype=np.float64))

    def _leaf_class_start(self, t: float) -> tuple[FloatArray, FloatArray, float, float]:
        """Parents of scalar-intercept leaves: C = S - sum (t / (1 + t n)) P.

        Also d/dt of C and of the leaves' ldL2.
        """
        s = 1.0 + t * self.pair_n
        C = self.parent_S - np.add.reduceat(
            self.pair_P * (t / s)[:, None, None], self.pair_starts, axis=0
        )
        dC = -np.add.reduceat(self.pair_P * (1.0 / s**2)[:, None, None], self.pair_starts, axis=0)
        ld = float(self.leaf_mult @ np.log1p(t * self.leaf_sizes))
        dld = float(self.leaf_mult @ (self.leaf_sizes / (1.0 + t * self.leaf_sizes)))
        return C, dC, ld, dld

    def _evaluate_grad(self, theta: FloatArray) -> Evaluation:
        Ts, dTs = self.factors(theta), self.factor_grads(theta)
        last = self.K - 1
        k_start = self.K - 2
        if self.uniform_from < self.K:
            C, dC, ld, dld = self._uniform_start(theta, True)
            k_start = self.uniform_from - 1
        elif self.scalar_leaf and self.K > 1:
            th = float(theta[-1])
            C, dC_t, ld, dld_t = self._leaf_class_start(th * th)
            dC = (2.0 * th * dC_t)[:, None]  # d/dtheta = 2 theta d/dt
            dld = np.array([2.0 * th * dld_t])
        else:
            M, dM, ld, dld = self._eliminate_grad(
                self.leaf_C, None, self.own_last, self.keep_last, Ts[last], dTs[last]
            )
            if self.K == 1:
                return self._finish_grad(theta, M.sum(axis=0), ld, dM.sum(axis=0), dld)
            C = np.add.reduceat(M, self.leaf_starts, axis=0)
            dC = np.add.reduceat(dM, self.leaf_starts, axis=0)
        for k in range(k_start, -1, -1):
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            keep = np.r_[0:lo, hi : C.shape[1]]
            M, dM, ld_k, dld_k = self._eliminate_grad(C, dC, slice(lo, hi), keep, Ts[k], dTs[k])
            ld += ld_k
            dld = np.concatenate([dld_k[: dTs[k].shape[0]], dld + dld_k[dTs[k].shape[0] :]])
            if k == 0:
                C, dC = M.sum(axis=0, keepdims=True), dM.sum(axis=0, keepdims=True)
            else:
                C = np.add.reduceat(M, self.level_starts[k], axis=0)
                dC = np.add.reduceat(dM, self.level_starts[k], axis=0)
        return self._finish_grad(theta, C[0], ld, dC[0], dld)

    def _finish_grad(
        self, theta: FloatArray, A: FloatArray, ld: float, dA: FloatArray, dld: FloatArray
    ) -> Evaluation:
        ev = self.finish(theta, A, ld)
        grad, parts = self.gradient_parts(ev, dA, dld)
        return dataclasses.replace(ev, gradient=grad, parts_t=None)

    def _evaluate(self, theta: FloatArray) -> Evaluation:
        Ts = self.factors(theta)
        last = self.K - 1
        ld = 0.0
        k_start = self.K - 2
        if self.uniform_from < self.K:
            C, _, ld, _ = self._uniform_start(theta, False)
            k_start = self.uniform_from - 1
        elif self.scalar_leaf and self.K > 1:
            t = float(Ts[last][0, 0]) ** 2
            s = 1.0 + t * self.pair_n
            ld += float(self.leaf_mult @ np.log1p(t * self.leaf_sizes))
            down = np.add.reduceat(self.pair_P * (t / s)[:, None, None], self.pair_starts, axis=0)
            C = self.parent_S - down
        else:
            M, ld_leaf = self._eliminate(self.leaf_C, self.own_last, self.keep_last, Ts[last])
            ld += ld_leaf
            if self.K == 1:
                return self.finish(theta, M.sum(axis=0), ld)
            C = np.add.reduceat(M, self.leaf_starts, axis=0)
        for k in range(k_start, -1, -1):
            # C's coordinates are the effects of levels 0..k, then [x y]
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            M, ld_k = self._eliminate(C, slice(lo, hi), np.r_[0:lo, hi : C.shape[1]], Ts[k])
            ld += ld_k
            C = (
                M.sum(axis=0, keepdims=True)
                if k == 0
                else np.add.reduceat(M, self.level_starts[k], axis=0)
            )
        return self.finish(theta, C[0], ld)

    def conditional_modes(
        self, theta: FloatArray, beta: FloatArray, sigma: float, *, cond_var: bool = True
    ) -> list[TermModes]:
        """Conditional modes (and covariance blocks) of every term, in theta order.

        See `tiers.engine.tree_modes`.
        """
        theta = np.asarray(theta, dtype=np.float64)
        beta = np.array(beta, dtype=np.float64)
        if self.rows_shift is not None and self.intercept is not None:
            # rows about the shift: y - X beta = y_c - X_c beta + (s_y - s_x . beta) * 1
            beta[self.intercept] -= self.rows_shift[self.p] - self.rows_shift[: self.p] @ beta
        r = self.y - self.X @ beta
        Ts = self.factors(theta)
        W = np.empty((r.size, self.Q + 1))
        for k, terms in enumerate(self.levels):
            W[:, self.offsets[k] : self.offsets[k + 1]] = np.hstack([t.Z for t in terms]) @ Ts[k]
        W[:, -1] = r
        if self.sw is not None:
            W *= self.sw[:, None]
        C = outer_sums(W, self.levels[-1][0].codes, self.sizes[-1])
        del W
        per_level = tree_modes(C, Ts, list(self.parents), self.sizes, sigma, cond_var)
        return split_levels(self.levels, per_level)
