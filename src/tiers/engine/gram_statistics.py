"""Per-leaf cross-products: the sufficient statistics of nested models with random slopes.

For nested grouping with any terms per level, the block engine (`tiers.engine.nested_block`) reads
the rows only through ``G_g = sum_(i in g) w_i w_i'`` per innermost group g, with
``w = [z_0 .. z_K-1, x, y]`` (every level's effects, then the fixed part and the response). They are
kept about a shift of the ``[x y]`` columns (their means, 0 for the intercept; the effects are not
shifted) and combine exactly over disjoint rows: about a common shift, per leaf,
``G = G_a + S_a delta' + delta S_a' + n_a delta delta'`` with ``S`` the leaf's column sums (the
pairwise update of Chan, Golub and LeVeque 1979). `LeafGrams.rows` turns each ``G_g`` into a few
rows ``R_g`` with ``R_g' R_g = G_g`` (its eigen-decomposition), from which
`tiers.engine.nested_block.TreeProblem.from_leaf_rows` builds the same engine as the data's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.engine.statistics import NestedStatistics

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class LeafGrams:
    """Per-leaf sizes, sums and cross-products of ``w = [z x y]`` about a shift.

    Attributes
    ----------
    n : int
        Rows.
    qz, p : int
        Effect columns (all levels) and fixed-effect columns.
    intercept : int or None
        The fixed part's all-ones column (not shifted).
    shift : array (qz + p + 1,)
        Zero on the effects and the intercept; the other columns' means (or any point).
    leaves : IntArray (L,)
        The leaves held, sorted (global numbering).
    count, sums, gram : arrays (L,), (L, d), (L, d, d)
        Per leaf: rows, ``sum (w - shift)``, ``sum (w - shift)(w - shift)'``.
    """

    n: int
    qz: int
    p: int
    intercept: int | None
    shift: FloatArray
    leaves: IntArray
    count: FloatArray
    sums: FloatArray
    gram: FloatArray

    @classmethod
    def from_rows(
        cls,
        W: FloatArray,
        local: IntArray,
        leaves: IntArray,
        *,
        qz: int,
        intercept: int | None,
    ) -> LeafGrams:
        """One block of rows: ``local`` numbers each row's leaf 0..L-1, ``leaves`` their globals."""
        n, d = W.shape
        shift = np.zeros(d)
        if n:
            shift[qz:] = W[:, qz:].mean(axis=0)
        if intercept is not None:
            shift[qz + intercept] = 0.0
        D = W - shift
        L = leaves.size
        count = np.bincount(local, minlength=L).astype(np.float64)
        sums = np.column_stack(
            [np.bincount(local, weights=D[:, j], minlength=L) for j in range(d)]
        ).astype(np.float64)
        gram = np.empty((L, d, d))
        for i in range(d):
            for j in range(i + 1):
                s = np.bincount(local, weights=D[:, i] * D[:, j], minlength=L)
                gram[:, i, j] = gram[:, j, i] = s
        order = np.argsort(leaves, kind="stable")
        p = d - qz - 1
        return cls(
            n, qz, p, intercept, shift, leaves[order], count[order], sums[order], gram[order]
        )

    def recentred(self, shift: FloatArray) -> LeafGrams:
        """The same statistics about another shift."""
        delta = self.shift - shift
        S = self.sums
        gram = (
            self.gram
            + S[:, :, None] * delta[None, None, :]
            + delta[None, :, None] * S[:, None, :]
            + self.count[:, None, None] * np.outer(delta, delta)[None]
        )
        sums = S + self.count[:, None] * delta
        return LeafGrams(
            self.n, self.qz, self.p, self.intercept, shift, self.leaves, self.count, sums, gram
        )

    def combine(self, other: LeafGrams) -> LeafGrams:
        """Statistics of the union of two disjoint sets of rows (leaves in both are summed)."""
        n = self.n + other.n
        shift = (self.shift * self.n + other.shift * other.n) / max(n, 1)
        a, b = self.recentred(shift), other.recentred(shift)
        both = np.concatenate([a.leaves, b.leaves])
        order = np.argsort(both, kind="stable")
        both = both[order]
        starts = np.flatnonzero(np.concatenate(([True], both[1:] != both[:-1])))

        def merged(x: FloatArray, y: FloatArray) -> FloatArray:
            return np.add.reduceat(np.concatenate([x, y])[order], starts, axis=0)

        return LeafGrams(
            n,
            self.qz,
            self.p,
            self.intercept,
            shift,
            both[starts],
            merged(a.count, b.count),
            merged(a.sums, b.sums),
            merged(a.gram, b.gram),
        )

    def select(self, keep: list[int]) -> LeafGrams:
        """Keep the effects, the fixed-effect columns ``keep`` and y."""
        idx = np.array([*range(self.qz), *(self.qz + j for j in keep), self.qz + self.p])
        icpt = keep.index(self.intercept) if self.intercept in keep else None
        return LeafGrams(
            self.n,
            self.qz,
            len(keep),
            icpt,
            self.shift[idx],
            self.leaves,
            self.count,
            self.sums[:, idx],
            self.gram[:, idx][:, :, idx],
        )

    def fixed_part(self, tree_leaf_count: int) -> NestedStatistics:
        """The ``[x y]`` statistics (cross-product and leaf sums) as `NestedStatistics`."""
        from tiers.design.grouping import Tree

        xy = slice(self.qz, None)
        leaf = np.zeros((tree_leaf_count, self.p + 2))
        leaf[self.leaves, 0] = self.count
        leaf[self.leaves, 1:] = self.sums[:, xy]
        return NestedStatistics(
            self.n,
            self.p,
            self.intercept,
            self.shift[xy],
            self.sums[:, xy].sum(axis=0),
            self.gram[:, xy, xy].sum(axis=0),
            leaf,
            Tree(np.zeros(0, dtype=np.int64), (), (tree_leaf_count,)),
        )

    def rows(self) -> tuple[FloatArray, IntArray]:
        """Rows ``R_g`` with ``R_g' R_g = G_g`` for every leaf, and the leaf of each row.

        From ``G_g = V diag(lambda) V'``: the rows ``sqrt(lambda_k) v_k'`` for the positive
        eigenvalues (rounding below ``1e-14`` of the largest is zero).
        """
        vals, vecs = np.linalg.eigh(self.gram)
        top = np.maximum(vals.max(axis=1, keepdims=True), np.finfo(float).tiny)
        use = vals > 1e-14 * top
        rows = np.sqrt(np.where(use, vals, 0.0))[:, :, None] * np.swapaxes(vecs, 1, 2)
        leaf = np.broadcast_to(self.leaves[:, None], use.shape)
        return rows[use], leaf[use]
