"""One way to build an engine: from a `Design`, by the name the design chose.

`build_engine` is the only constructor the rest of tiers calls; a new engine (a GLMM by Laplace,
residual correlation, weights) registers a builder here under a new name, and the design picks it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from tiers.design import diagnostics
from tiers.design.design import Design
from tiers.engine.contract import Engine
from tiers.engine.crossed import CrossedProblem
from tiers.engine.nested_block import TreeProblem
from tiers.engine.nested_scalar import NestedProblem
from tiers.engine.pseudo import PseudoTreeProblem
from tiers.engine.rside import ResidualProblem

FloatArray = NDArray[np.float64]
Builder = Callable[[Design, FloatArray, FloatArray, bool], Engine]


def _row_weights(design: Design) -> tuple[FloatArray | None, bool]:
    """Precision or frequency weights of the rows (None unweighted), and whether frequency."""
    rw = design.weights
    if rw is None:
        return None, False
    return np.asarray(rw.rows), rw.frequency


def _nested(design: Design, y: FloatArray, X: FloatArray, reml: bool) -> Engine:
    if design.nesting is None:  # pragma: no cover - the design only picks it for nested factors
        raise ValueError("the nested engine needs nested grouping factors")
    w, freq = _row_weights(design)
    return NestedProblem(y, X, design.nesting.tree, reml=reml, weights=w, frequency=freq)


def _tree(design: Design, y: FloatArray, X: FloatArray, reml: bool) -> Engine:
    if design.nesting is None:  # pragma: no cover - the design only picks it for nested factors
        raise ValueError("the tree engine needs nested grouping factors")
    w, freq = _row_weights(design)
    parents = list(design.nesting.tree.parents)
    return TreeProblem(y, X, design.levels, parents, reml=reml, weights=w, frequency=freq)


def _crossed(design: Design, y: FloatArray, X: FloatArray, reml: bool) -> Engine:
    w, freq = _row_weights(design)
    limits = design.limits or diagnostics.LIMITS
    return CrossedProblem(
        y, X, design.terms, reml=reml, weights=w, frequency=freq, max_bytes=limits.max_bytes
    )


def _rside(design: Design, y: FloatArray, X: FloatArray, reml: bool) -> Engine:
    if design.nesting is None or design.residuals is None:  # pragma: no cover - design's choice
        raise ValueError("the rside engine needs nested grouping and a residual structure")
    parents = list(design.nesting.tree.parents)
    return ResidualProblem(y, X, design.levels, parents, design.residuals, reml=reml)


def _pseudo(design: Design, y: FloatArray, X: FloatArray, reml: bool) -> Engine:
    rw = design.weights
    if design.nesting is None or rw is None or not rw.sampling:  # pragma: no cover
        raise ValueError("the pseudo-likelihood engine needs nested factors and sampling weights")
    if reml:
        raise ValueError("a pseudo-likelihood (sampling weights) is fitted by ML, not REML")
    parents = list(design.nesting.tree.parents)
    return PseudoTreeProblem(y, X, design.levels, parents, rw.rows, list(rw.groups))


ENGINES: dict[str, Builder] = {
    "nested": _nested,
    "tree": _tree,
    "crossed": _crossed,
    "rside": _rside,
    "pseudo": _pseudo,
}


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
    builder = ENGINES.get(design.engine)
    if builder is None:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {design.engine!r}")
    y_ = design.frame.y if y is None else np.ascontiguousarray(y, dtype=np.float64)
    X_ = design.frame.X if X is None else np.ascontiguousarray(X, dtype=np.float64)
    return builder(design, y_, X_, bool(reml))
