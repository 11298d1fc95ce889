"""What each partition computes, on the workers: pure pandas and numpy, no Dask.

Two passes, each reading every partition once:

1. `survey`: the column kinds, the missing values per used column, the levels of categorical
   predictors and the distinct id tuples of the complete rows (small: groups, not rows);
2. `reduce_partition`: the rows' contribution to the engine's sufficient statistics
   (`tiers.engine.statistics.NestedStatistics`), with the levels learned in pass 1 so that every
   partition builds the same fixed-effects columns as the in-memory fit, and the rows' leaves
   found in the id tuples of pass 1. Pieces combine exactly (`combine`).

Each step is the in-memory frame's own (`tiers.data.frame`): the same checks, missing-value
rule, response and model matrix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.frame import (
    _check_columns,
    _check_finite,
    _complete_rows,
    _response,
    model_matrix,
    plain_text,
)
from tiers.data.variables import evaluate_response
from tiers.design.grouping import Tree
from tiers.engine.gram_statistics import LeafGrams
from tiers.engine.statistics import NestedStatistics
from tiers.errors import DataError
from tiers.formula.types import Formula
from tiers.scale.files import kind_of
from tiers.scale.transforms import Summary, learned_matrix, summarise

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Columns:
    """The columns a formula reads: each with its role, the ids, and the categorical predictors."""

    formula: Formula
    roles: dict[str, str]
    groups: tuple[str, ...]
    categorical: tuple[str, ...]
    #: The stateful calls whose state is learned over all partitions (`tiers.scale.transforms`).
    calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Survey:
    """Pass 1 of one partition."""

    source: int
    rows: int
    n_dropped: int
    dropped_by_column: dict[str, int]
    kinds: dict[str, str]
    levels: dict[str, NDArray[Any]]
    ids: pd.DataFrame
    transforms: dict[str, Summary] = field(default_factory=dict)


def _complete(df: pd.DataFrame, cols: Columns) -> tuple[pd.DataFrame, int, dict[str, int]]:
    df = _check_columns(df, cols.roles)
    used, n_dropped, by_column = _complete_rows(df, list(cols.roles))
    used = plain_text(used)
    ids = {
        c: used[c].astype(object)
        for c in cols.groups
        if isinstance(used[c].dtype, pd.CategoricalDtype)
    }
    return (used.assign(**ids) if ids else used), n_dropped, by_column


def survey(df: pd.DataFrame, cols: Columns, source: int) -> Survey:
    """Pass 1: kinds, missing values, levels and id tuples of one partition."""
    missing = [c for c in cols.roles if c not in df.columns]
    if missing:
        return Survey(source, len(df), 0, {}, {c: "absent" for c in missing}, {}, pd.DataFrame())
    kinds = {c: kind_of(df[c]) for c in cols.roles}
    used, n_dropped, by_column = _complete(df, cols)
    levels = {c: pd.unique(used[c].astype(object).to_numpy()) for c in cols.categorical}
    # first-appearance order: the order `local_groups` numbers them in pass 2
    ids = _compact(used[list(cols.groups)].drop_duplicates())
    summaries = summarise(cols.calls, used)
    return Survey(source, len(df), n_dropped, by_column, kinds, levels, ids, summaries)


def _compact(ids: pd.DataFrame) -> pd.DataFrame:
    """Integer ids as int32 when they fit: the client holds one row per innermost group.

    At 10^8 rows of the seed design that is 50 million tuples of four ids: 0.8 GB instead of 1.6.
    """
    small = {}
    for c in ids.columns:
        v = ids[c]
        if pd.api.types.is_integer_dtype(v.dtype) and v.dtype.itemsize > 4 and len(v):
            lo, hi = v.min(), v.max()
            if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
                small[c] = v.to_numpy().astype(np.int32)
    return ids.assign(**small).reset_index(drop=True) if small else ids.reset_index(drop=True)


@dataclass(frozen=True)
class Plan:
    """What pass 2 of one partition needs from pass 1.

    The levels of each categorical predictor, and the leaf (innermost group of the whole tree) of
    each of the partition's id tuples, in the order `survey` found them.
    """

    columns: Columns
    levels: dict[str, list[Any]]
    leaves: NDArray[np.int64] = field(repr=False)
    #: With random slopes: the formula's random terms in the engine's order (outermost level
    #: first), whose effects lead each row of the per-leaf cross-products; None for intercepts.
    term_order: tuple[int, ...] | None = None
    #: formulaic's ``transform_state`` of the stateful calls, learned from every partition.
    state: dict[str, Any] = field(default_factory=dict)


def local_groups(used: pd.DataFrame, groups: list[str]) -> NDArray[np.int64]:
    """Each row's id tuple, numbered in order of first appearance (as `survey` lists them)."""
    return used.groupby(groups, sort=False).ngroup().to_numpy().astype(np.int64)


@dataclass(frozen=True)
class Piece:
    """Pass 2 of some partitions: the statistics and what the checks on y need.

    ``statistics.leaf`` holds only the leaves these partitions touch, ``leaves`` their global
    indices: a partition of a few districts carries its own groups, not all of them, so
    pieces stay small and partitions aligned with the top level combine without overlap.
    """

    sources: tuple[int, ...]
    names: tuple[str, ...]
    statistics: NestedStatistics | LeafGrams
    leaves: NDArray[np.int64]
    y_min: float
    y_max: float
    y_absmax: float
    binary: bool
    x_range: FloatArray


def reduce_partition(df: pd.DataFrame, plan: Plan, source: int) -> Piece | None:
    """Pass 2: one partition's sufficient statistics (None when no complete row)."""
    cols = plan.columns
    f = cols.formula
    used, _, _ = _complete(df, cols)
    if len(used) == 0:
        return None
    local = local_groups(used, list(cols.groups))
    if int(local.max()) + 1 != plan.leaves.size:
        raise DataError(
            "the data changed between the two passes (a different number of groups); read it again"
        )
    for c, cats in plan.levels.items():
        used[c] = pd.Categorical(used[c].astype(object), categories=cats)
    y = _response(_response_values(f, used, plan.state), f.response)
    X, names = _matrix(f.fixed, used, plan.state, what=f"fixed part of {f.text!r}")
    _check_finite(X, names)
    icpt = names.index("(Intercept)") if "(Intercept)" in names else None
    stats: NestedStatistics | LeafGrams
    if plan.term_order is None:
        stats = NestedStatistics.from_arrays(
            y, X, Tree(local, (), (plan.leaves.size,)), intercept=icpt
        )
        # the rows' leaves stay here: only the sums travel to the client
        stats = dataclasses.replace(stats, tree=Tree(local[:0].copy(), (), (plan.leaves.size,)))
    else:
        Zs, znames = _effects(used, f, plan.term_order, plan.state)
        names = [*znames, *names]
        W = np.column_stack([*Zs, X, y])
        stats = LeafGrams.from_rows(W, local, plan.leaves, qz=len(znames), intercept=icpt)
        X = W[:, len(znames) : -1]
    binary = bool(np.all((y == 0.0) | (y == 1.0)))
    return Piece(
        (source,),
        tuple(names),
        stats,
        plan.leaves,
        float(y.min()),
        float(y.max()),
        float(np.abs(y).max()),
        binary,
        np.vstack([X.min(axis=0), X.max(axis=0)]),
    )


def _matrix(
    rhs: str, used: pd.DataFrame, state: dict[str, Any], *, what: str
) -> tuple[FloatArray, list[str]]:
    """The in-memory model matrix, with the stateful transforms' learned state when there is any."""
    return (
        learned_matrix(rhs, used, state, what=what) if state else model_matrix(rhs, used, what=what)
    )


def _response_values(f: Formula, used: pd.DataFrame, state: dict[str, Any]) -> pd.Series:
    if f.response_column:
        return used[f.response_column]
    if not state:
        return evaluate_response(f.response, used)
    with np.errstate(all="ignore"):  # log of a non-positive number: reported by `_response`
        col, _ = learned_matrix(f"0 + I({f.response})", used, state, what="response")
    return pd.Series(col[:, 0], index=used.index, name=f.response)


def _effects(
    used: pd.DataFrame, f: Formula, order: tuple[int, ...], state: dict[str, Any]
) -> tuple[list[FloatArray], list[str]]:
    """Each random term's effects (``Z``), in the engine's order, and their names."""
    Zs, names = [], []
    for i in order:
        term = f.random[i]
        if term.is_intercept_only:
            Z, zn = np.ones((len(used), 1)), ["(Intercept)"]
        else:
            what = f"random-effects term ({term.expr} | {term.name})"
            Z, zn = _matrix(term.expr, used, state, what=what)
            _check_finite(Z, zn)
        Zs.append(Z)
        names += [f"{i}|{n}" for n in zn]  # the term's index: two terms can share a factor
    return Zs, names


def combine(a: Piece | None, b: Piece | None) -> Piece | None:
    """Two partitions' pieces as one (exact: the pairwise co-moment update)."""
    if a is None or b is None:
        return a if b is None else b
    if a.names != b.names:
        raise DataError(
            f"partitions {a.sources[0]} and {b.sources[0]} give different fixed-effects columns "
            f"({', '.join(a.names)} vs {', '.join(b.names)})"
        )
    if isinstance(a.statistics, LeafGrams) and isinstance(b.statistics, LeafGrams):
        grams = a.statistics.combine(b.statistics)
        stats: NestedStatistics | LeafGrams = grams
        leaves = grams.leaves
    else:
        stats, leaves = _combine_sparse(a, b)
    return Piece(
        a.sources + b.sources,
        a.names,
        stats,
        leaves,
        min(a.y_min, b.y_min),
        max(a.y_max, b.y_max),
        max(a.y_absmax, b.y_absmax),
        a.binary and b.binary,
        np.vstack([np.minimum(a.x_range[0], b.x_range[0]), np.maximum(a.x_range[1], b.x_range[1])]),
    )


def _combine_sparse(a: Piece, b: Piece) -> tuple[NestedStatistics, NDArray[np.int64]]:
    """`NestedStatistics.combine` for statistics over different sets of leaves.

    Both are moved to the pooled shift (the co-moment update), then leaves present in both are
    summed.
    """
    sa, sb = a.statistics, b.statistics
    assert isinstance(sa, NestedStatistics) and isinstance(sb, NestedStatistics)
    n = sa.n + sb.n
    shift = (sa.shift * sa.n + sb.shift * sb.n) / max(n, 1)
    ra, rb = sa.recentred(shift), sb.recentred(shift)
    both = np.concatenate([a.leaves, b.leaves])
    order = np.argsort(both, kind="stable")
    both = both[order]
    starts = np.flatnonzero(np.concatenate(([True], both[1:] != both[:-1])))[: both.size]
    stacked = np.concatenate([ra.leaf, rb.leaf])
    leaf = np.add.reduceat(stacked[order], starts, axis=0) if both.size else stacked
    leaves = both[starts]
    tree = Tree(np.zeros(0, dtype=np.int64), (), (leaves.size,))
    stats = NestedStatistics(
        n, sa.p, sa.intercept, shift, ra.colsum + rb.colsum, ra.dtd + rb.dtd, leaf, tree
    )
    return stats, leaves


def spread(piece: Piece, nleaf: int) -> NestedStatistics:
    """The statistics over every leaf of the tree (leaves no partition touched are empty)."""
    stats = piece.statistics
    assert isinstance(stats, NestedStatistics)
    leaf = np.zeros((nleaf, stats.leaf.shape[1]))
    leaf[piece.leaves] = stats.leaf
    return dataclasses.replace(stats, leaf=leaf)
