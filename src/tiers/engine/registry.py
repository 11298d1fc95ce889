"""One way to build an engine: from a `Design`, by the name the design chose.

`build_engine` is the only constructor the rest of tiers calls; a new engine (a GLMM by Laplace,
residual correlation, weights) registers a builder here under a new name, and the design picks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tiers._pages import small_pages
from tiers.data.columns import ColumnMatrix
from tiers.design import diagnostics
from tiers.design.design import Design
from tiers.design.summary import SummaryFrame, rows_needed
from tiers.engine.contract import Engine
from tiers.engine.nested_scalar import NestedProblem
from tiers.engine.statistics import NestedStatistics

# The other engines are imported by their builders, when a design needs them: together with
# their modules they cost a fresh process about 0.1 s, paid by a command that fits one nested
# model (the crossed engine alone brings scipy.sparse's factorizations).

if TYPE_CHECKING:
    from tiers.engine.gram_statistics import LeafGrams

FloatArray = NDArray[np.float64]
Builder = Callable[[Design, FloatArray, ColumnMatrix, bool], Engine]


def _row_weights(design: Design) -> tuple[FloatArray | None, bool]:
    """Precision or frequency weights of the rows (None unweighted), and whether frequency."""
    rw = design.weights
    if rw is None:
        return None, False
    return np.asarray(rw.rows), rw.frequency


def _nested(design: Design, y: FloatArray, X: ColumnMatrix, reml: bool) -> Engine:
    if design.nesting is None:  # pragma: no cover - the design only picks it for nested factors
        raise ValueError("the nested engine needs nested grouping factors")
    w, freq = _row_weights(design)
    # X as its columns: the statistics read it a block of rows at a time, never whole
    return NestedProblem(y, X, design.nesting.tree, reml=reml, weights=w, frequency=freq)


def _tree(design: Design, y: FloatArray, X: ColumnMatrix, reml: bool) -> Engine:
    if design.nesting is None:  # pragma: no cover - the design only picks it for nested factors
        raise ValueError("the tree engine needs nested grouping factors")
    from tiers.engine.nested_block import TreeProblem

    w, freq = _row_weights(design)
    parents = list(design.nesting.tree.parents)
    return TreeProblem(y, X.dense(), design.levels, parents, reml=reml, weights=w, frequency=freq)


def _crossed(design: Design, y: FloatArray, X: ColumnMatrix, reml: bool) -> Engine:
    from tiers.engine.crossed import CrossedProblem

    w, freq = _row_weights(design)
    limits = design.limits or diagnostics.LIMITS
    with small_pages():  # the set-up's index arrays are used once (`tiers._pages`)
        return CrossedProblem(
            y,
            X.dense(),
            design.terms,
            reml=reml,
            weights=w,
            frequency=freq,
            max_bytes=limits.max_bytes,
        )


def _rside(design: Design, y: FloatArray, X: ColumnMatrix, reml: bool) -> Engine:
    if design.nesting is None or design.residuals is None:  # pragma: no cover - design's choice
        raise ValueError("the rside engine needs nested grouping and a residual structure")
    from tiers.engine.rside import ResidualProblem

    parents = list(design.nesting.tree.parents)
    return ResidualProblem(y, X.dense(), design.levels, parents, design.residuals, reml=reml)


def _pseudo(design: Design, y: FloatArray, X: ColumnMatrix, reml: bool) -> Engine:
    rw = design.weights
    if design.nesting is None or rw is None or not rw.sampling:  # pragma: no cover
        raise ValueError("the pseudo-likelihood engine needs nested factors and sampling weights")
    if reml:
        raise ValueError("a pseudo-likelihood (sampling weights) is fitted by ML, not REML")
    from tiers.engine.pseudo import PseudoTreeProblem

    parents = list(design.nesting.tree.parents)
    return PseudoTreeProblem(y, X.dense(), design.levels, parents, rw.rows, list(rw.groups))


ENGINES: dict[str, Builder] = {
    "nested": _nested,
    "tree": _tree,
    "crossed": _crossed,
    "rside": _rside,
    "pseudo": _pseudo,
}


def _from_statistics(
    design: Design, y: FloatArray | None, X: FloatArray | None, reml: bool
) -> Engine:
    """The engine of a design known through its sufficient statistics (`tiers.scale`)."""
    from tiers.engine.gram_statistics import LeafGrams

    frame = design.frame
    stats = frame.statistics if isinstance(frame, SummaryFrame) else None
    if y is not None or X is not None:
        raise rows_needed("a replicate (another response on the same rows)")
    if design.engine == "tree" and isinstance(stats, LeafGrams) and design.nesting is not None:
        return _tree_from_grams(design, stats, reml)
    if design.engine == "crossed" and isinstance(stats, LeafGrams):
        return _crossed_from_grams(design, stats, reml)
    if design.engine != "nested" or not isinstance(stats, NestedStatistics):
        raise ValueError(f"statistics of the {design.engine} engine are not supported")
    return NestedProblem.from_statistics(stats, reml=reml)


def _crossed_from_grams(design: Design, stats: LeafGrams, reml: bool) -> Engine:
    """The crossed engine from per-cell cross-products (a cell: one level of every factor)."""
    from tiers.engine.crossed import CrossedProblem

    rows, cell = stats.rows()  # cells are the rows of frame.data (the distinct id tuples)
    terms, at = [], 0
    for t in design.terms:
        factor = dataclasses.replace(t.factor, row_codes=t.factor.codes[cell], leaf_path=None)
        terms.append(dataclasses.replace(t, factor=factor, Z=rows[:, at : at + t.q]))
        at += t.q
    return CrossedProblem.from_leaf_rows(
        np.ascontiguousarray(rows[:, at:]),
        terms,
        n=stats.n,
        shift=stats.shift[at:],
        intercept=stats.intercept,
        reml=reml,
    )


def _tree_from_grams(design: Design, stats: LeafGrams, reml: bool) -> Engine:
    """The block engine from per-leaf cross-products: rows that reproduce them, per leaf."""
    from tiers.engine.nested_block import TreeProblem

    assert design.nesting is not None
    rows, leaf = stats.rows()
    tree = design.nesting.tree  # tree.leaf: the leaf of each id tuple (a row of frame.data)
    levels, at = [], 0
    for terms in design.levels:
        group = np.empty(tree.sizes[-1], dtype=np.int64)
        group[tree.leaf] = terms[0].factor.codes  # each leaf's group at this level
        own = []
        for t in terms:
            factor = dataclasses.replace(t.factor, row_codes=group[leaf], leaf_path=None)
            own.append(dataclasses.replace(t, factor=factor, Z=rows[:, at : at + t.q]))
            at += t.q
        levels.append(own)
    return TreeProblem.from_leaf_rows(
        np.ascontiguousarray(rows[:, at:]),
        levels,
        list(tree.parents),
        n=stats.n,
        shift=stats.shift[at:],
        intercept=stats.intercept,
        reml=reml,
    )


def build_engine(
    design: Design,
    *,
    reml: bool = True,
    y: FloatArray | None = None,
    X: FloatArray | None = None,
) -> Engine:
    """The engine of ``design`` (its criterion as a function of theta).

    Parameters
    ----------
    design : Design
    reml : bool
        REML criterion (True, lme4's default) or ML deviance.
    y, X : arrays, optional
        Another response or fixed-effects matrix on the same rows and structure (a bootstrap or
        simulation replicate); default the design's.
    """
    if isinstance(design.frame, SummaryFrame):
        return _from_statistics(design, y, X, bool(reml))
    builder = ENGINES.get(design.engine)
    if builder is None:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {design.engine!r}")
    y_ = design.frame.y if y is None else np.ascontiguousarray(y, dtype=np.float64)
    X_ = (
        design.frame.x_columns
        if X is None
        else ColumnMatrix.of_array(np.ascontiguousarray(X, dtype=np.float64))
    )
    return builder(design, y_, X_, bool(reml))
