"""The `Design` of a model known through statistics: built on one row per distinct id tuple.

The grouping factors, the nesting checks and the labels of the random effects depend on the data
only through its distinct id tuples, so they are built by the in-memory code
(`tiers.design.grouping`, `tiers.design.diagnostics`) on a frame with one row per tuple; the group
sizes are then the rows each tuple holds (counted in pass 2), so every report reads the same
numbers as in memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.columns import ColumnMatrix
from tiers.data.frame import _QR_ROWS, COLLINEARITY_TOL
from tiers.design.covariance import CovStructure
from tiers.design.design import Design, _check_sizes, identical_partition_error, linear_probability
from tiers.design.diagnostics import (
    Limits,
    check_child_nesting,
    check_estimable,
    check_resources,
)
from tiers.design.grouping import (
    GroupingFactor,
    IntArray,
    Nesting,
    Tree,
    build_factors,
    nested_chain,
)
from tiers.design.summary import SummaryFrame
from tiers.design.terms import TermSpec
from tiers.engine.gram_statistics import LeafGrams
from tiers.engine.group_sums import sum_rows
from tiers.engine.statistics import NestedStatistics
from tiers.errors import DataError, NestingError
from tiers.formula.types import Formula

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Sources:
    """The file names, and for each id tuple the index of the file it was first seen in."""

    files: tuple[str, ...]
    first: NDArray[np.integer[Any]]


@dataclass(frozen=True)
class Skeleton:
    """The grouping structure on one row per distinct id tuple (pass 1), before the statistics."""

    formula: Formula
    ids: pd.DataFrame
    factors: list[GroupingFactor]
    nesting: Nesting | None

    @property
    def leaf(self) -> NDArray[np.int64]:
        """The innermost group of each id tuple; for crossed factors, the tuple itself (a cell)."""
        if self.nesting is None:
            return np.arange(len(self.ids), dtype=np.int64)
        return self.nesting.tree.leaf

    @property
    def nleaf(self) -> int:
        """Innermost groups (nested) or cells (crossed): what the statistics are kept by."""
        return len(self.ids) if self.nesting is None else int(self.nesting.tree.sizes[-1])


def build_skeleton(f: Formula, ids: pd.DataFrame, *, force: bool, where: Sources) -> Skeleton:
    """Grouping factors and nesting from the distinct id tuples.

    ``where`` names the file each id tuple (row of ``ids``) was first seen in, for messages.

    Raises
    ------
    DataError
        A factor with fewer than two groups (as in memory).
    NestingError
        A declared child under two parents, naming the files it appears in.
    """
    factors = build_factors(f, ids)
    if not force:
        try:
            check_child_nesting(f, ids, factors)
        except NestingError as exc:
            raise NestingError(f"{exc}{_files_of(f, ids, where)}") from None
    distinct: dict[tuple[str, ...], GroupingFactor] = {}
    for gf in factors:
        distinct.setdefault(gf.columns, gf)
    nesting = nested_chain(list(distinct.values()))
    if nesting is not None and nesting.identical and not force:
        coarse, fine = nesting.identical[0]
        raise identical_partition_error(f, ids, coarse, fine)
    if nesting is not None and all(t.is_intercept_only for t in f.random):
        factors, nesting = _narrowed(factors, nesting)
        ids = _on_codes(ids, factors)
    return Skeleton(f, ids, factors, nesting)


def _on_codes(ids: pd.DataFrame, factors: list[GroupingFactor]) -> pd.DataFrame:
    """The id tuples with each column that a factor codes alone held as categories on its codes.

    A factor that is not an implicit combination codes its last column on its own, in sorted order
    of the values, so the column is a `pandas.Categorical` whose codes are the factor's array (no
    copy) and whose categories are the sorted distinct ids: the same values, labels and kinds of
    ids (`tiers.inference.predict`), without a second array per id tuple (0.8 GB for four int32
    columns at 10^8 rows of the seed design).
    """
    own = {gf.columns[-1]: gf for gf in factors if not gf.implicit}
    cols: dict[str, Any] = {}
    for c in ids.columns:
        gf = own.get(c)
        values = ids[c].to_numpy()
        if gf is None or gf.codes.dtype != np.int32 or gf.codes.size != values.size:
            cols[c] = ids[c]
            continue
        categories = np.empty(gf.nlevels, dtype=values.dtype)
        step = 1 << 20  # whole, the int32 codes would be copied to intp to index
        for i in range(0, values.size, step):
            categories[gf.codes[i : i + step]] = values[i : i + step]  # one value per code
        cols[c] = pd.Categorical.from_codes(gf.codes, pd.Index(categories, copy=False))
    # copy=False: the frame's categories keep the factors' codes as their own
    return pd.DataFrame(cols, index=ids.index, copy=False)


def _narrow(codes: IntArray | None) -> IntArray | None:
    if codes is None or codes.size == 0 or int(codes.max()) >= np.iinfo(np.int32).max:
        return codes
    # int32 where int64 is declared: only indexing and bincount read these codes from here on
    # (the nesting checks that multiply codes ran above), and numpy takes either
    return cast(IntArray, codes.astype(np.int32, copy=False))


def _narrowed(
    factors: list[GroupingFactor], nesting: Nesting
) -> tuple[list[GroupingFactor], Nesting]:
    """The codes of nested random intercepts in int32.

    One per id tuple: at 10^8 rows of the seed design, 50 million for each of four factors
    (0.8 GB saved).
    """
    done: dict[int, IntArray | None] = {}

    def narrow(codes: IntArray | None) -> IntArray | None:
        if codes is None:
            return None
        if id(codes) not in done:
            done[id(codes)] = _narrow(codes)
        return done[id(codes)]

    def factor(gf: GroupingFactor) -> GroupingFactor:
        codes = narrow(gf.codes)
        assert codes is not None
        return dataclasses.replace(
            gf,
            row_codes=codes,
            leaf_path=None,
            parent_codes=narrow(gf.parent_codes),
            prefix_map=narrow(gf.prefix_map),
            # counted over id tuples, not rows: `build_design` counts the rows per group
            counts=np.zeros(0, dtype=np.int64),
        )

    by_columns = {gf.columns: factor(gf) for gf in nesting.factors}
    out = [dataclasses.replace(by_columns[gf.columns], name=gf.name) for gf in factors]
    tree = nesting.tree
    leaf = narrow(tree.leaf)
    assert leaf is not None
    parents = tuple(p for p in (narrow(p) for p in tree.parents) if p is not None)
    narrowed = dataclasses.replace(
        nesting,
        factors=tuple(by_columns[gf.columns] for gf in nesting.factors),
        tree=Tree(leaf, parents, tree.sizes),
    )
    return out, narrowed


def _files_of(f: Formula, ids: pd.DataFrame, where: Sources) -> str:
    """Where the ids of a child seen under two parents come from (files named)."""
    for term in f.random:
        if len(term.group) < 2:
            continue
        child, parents = term.group[-1], list(term.group[:-1])
        pairs = ids[[*parents, child]].drop_duplicates()
        twice = pairs[child].duplicated(keep=False)
        if not twice.any():
            continue
        value = pairs.loc[twice, child].iloc[0]
        rows = np.flatnonzero((ids[child] == value).to_numpy())
        files = sorted({where.files[i] for i in where.first[rows]})
        return f" (column {child!r}: {child} {value} appears in {', '.join(files)})"
    return ""


def independent_columns(stats: NestedStatistics, names: tuple[str, ...]) -> list[int]:
    """The columns the in-memory frame keeps (`tiers.data.frame.independent_columns`).

    Greedy in the original order: column j is kept when its residual on the kept columns,
    relative to its own norm, is above `COLLINEARITY_TOL` (up to ``_QR_ROWS`` rows, the in-memory
    rule of its scaled QR), else when the squared ratio is above ``100 * COLLINEARITY_TOL**2``
    (its cross-product rule). With an intercept the residuals come from the centred
    cross-products (the co-moments, exact), never from raw sums that cancel.
    """
    from scipy.linalg import solve_triangular

    stats = _bare(stats)
    # the centred basis needs the intercept first (formulaic's order), so that no column is
    # tested against the kept ones before the intercept is among them
    c = stats.centred() if stats.intercept == 0 else stats.recentred(np.zeros(stats.p + 1))
    c = c if stats.intercept == 0 else dataclasses.replace(c, intercept=None)
    p = stats.p
    mean = c.shift[:p] if c.intercept is not None else np.zeros(p)
    G = c.dtd[:p, :p].copy()
    if c.intercept is not None:
        # [1, x - mean] spans what [1, x] spans: the intercept's row and column are (n, 0)
        G[c.intercept, :] = 0.0
        G[:, c.intercept] = 0.0
        G[c.intercept, c.intercept] = float(stats.n)
    raw_norm2 = np.diag(G) + stats.n * mean**2
    if c.intercept is not None:
        raw_norm2[c.intercept] = float(stats.n)
    tol2 = COLLINEARITY_TOL**2 if stats.n <= _QR_ROWS else COLLINEARITY_TOL**2 * 100
    scale = np.sqrt(np.where(raw_norm2 > 0, raw_norm2, 1.0))
    g = G / np.outer(scale, scale)
    L = np.zeros((p, p))
    keep: list[int] = []
    for j in range(p):
        if raw_norm2[j] <= 0:
            continue
        k = len(keep)
        w = solve_triangular(L[:k, :k], g[keep, j], lower=True) if k else np.zeros(0)
        resid = g[j, j] - float(w @ w)
        if resid > tol2:
            L[k, :k] = w
            L[k, k] = np.sqrt(resid)
            keep.append(j)
    return keep


def _group_sizes(skel: Skeleton, leaf_rows: FloatArray) -> dict[tuple[str, ...], IntArray]:
    """Rows in each group of each factor, from the rows of each leaf (or cell).

    Nested: summed up the tree, level by level, with no array of one entry per id tuple.
    """
    if skel.nesting is None:
        rows = leaf_rows[skel.leaf]
        return {
            gf.columns: np.bincount(gf.codes, weights=rows, minlength=gf.nlevels).astype(np.int64)
            for gf in skel.factors
        }
    tree = skel.nesting.tree
    out: dict[tuple[str, ...], IntArray] = {}
    counts = leaf_rows
    for k in range(len(tree.sizes) - 1, -1, -1):
        out[skel.nesting.factors[k].columns] = _narrowest(counts)
        if k:
            # counts are whole numbers: their sums are exact in any order
            counts = sum_rows(counts[:, None], tree.parents[k - 1], tree.sizes[k - 1])[:, 0]
    return out


def _narrowest(counts: FloatArray) -> IntArray:
    """Row counts in the smallest integer type that holds them.

    Only their minimum, mean, maximum and singletons are read (`Design.level_infos`,
    `level_messages`); one per id tuple at the innermost level: 0.1 GB in int16 for 50 million
    students against 0.4 GB in int64.
    """
    top = float(counts.max()) if counts.size else 0.0
    dtype = next(t for t in (np.int16, np.int32, np.int64) if top <= np.iinfo(t).max)
    return cast(IntArray, counts.astype(dtype))


def _bare(stats: NestedStatistics) -> NestedStatistics:
    """The statistics without their leaves: what moving the cross-products needs, at no copy."""
    return dataclasses.replace(stats, leaf=np.empty((0, stats.leaf.shape[1])))


def _intercepts(f: Formula, factors: list[GroupingFactor], n: int) -> list[TermSpec]:
    """Random intercepts whose ``Z`` is one 1 seen ``n`` times (one row per id tuple, not held)."""
    ones = np.broadcast_to(np.ones((1, 1)), (n, 1))
    return [
        TermSpec(term.name, gf, ones, ("(Intercept)",), CovStructure(term.covariance, 1))
        for term, gf in zip(f.random, factors, strict=True)
    ]


def _terms(f: Formula, factors: list[GroupingFactor], znames: tuple[str, ...]) -> list[TermSpec]:
    """The random terms with their effects' names; ``Z`` has no rows (they are not held)."""
    out = []
    for i, (term, gf) in enumerate(zip(f.random, factors, strict=True)):
        own = tuple(n.split("|", 1)[1] for n in znames if n.split("|", 1)[0] == str(i))
        cov = CovStructure(term.covariance, len(own))
        out.append(TermSpec(term.name, gf, np.empty((0, len(own))), own, cov))
    return out


def select_columns(stats: NestedStatistics, keep: list[int]) -> NestedStatistics:
    """The statistics of ``[X[:, keep] y]``."""
    p = stats.p
    if keep == list(range(p)):
        return stats
    idx = np.array([*keep, p])
    icpt = keep.index(stats.intercept) if stats.intercept in keep else None
    leaf = stats.leaf[:, np.concatenate(([0], idx + 1))]
    return NestedStatistics(
        stats.n,
        len(keep),
        icpt,
        stats.shift[idx],
        stats.colsum[idx],
        stats.dtd[np.ix_(idx, idx)],
        leaf,
        stats.tree,
    )


@dataclass(frozen=True)
class Totals:
    """What pass 1 and pass 2 found over every partition."""

    n_dropped: int
    dropped_by_column: dict[str, int]
    names: tuple[str, ...]
    y_min: float
    y_max: float
    y_absmax: float
    binary: bool
    x_range: FloatArray
    source: str | None


def build_design(
    skel: Skeleton,
    statistics: NestedStatistics | LeafGrams,
    totals: Totals,
    limits: Limits | None,
) -> Design:
    """The design: skeleton, group sizes from the statistics, fixed columns as in memory.

    `NestedStatistics` for nested random intercepts (the scalar engine); `LeafGrams` with random
    slopes (the block engine, per leaf) or crossed factors (per cell); ``totals.names`` then
    starts with the effects' names.
    """
    f = skel.formula
    nleaf = skel.nleaf
    grams = statistics if isinstance(statistics, LeafGrams) else None
    if grams is not None:
        znames, xnames_all = totals.names[: grams.qz], totals.names[grams.qz :]
        stats = grams.fixed_part(nleaf)
    else:
        assert isinstance(statistics, NestedStatistics)
        znames, xnames_all, stats = (), totals.names, statistics
    if stats.n == 0:
        cols = ", ".join(skel.ids.columns)
        raise DataError(f"no rows left: every row has a missing value in one of {cols}")
    raw = _bare(stats).recentred(np.zeros(stats.p + 1))
    keep = independent_columns(stats, xnames_all)
    omitted = tuple(n for j, n in enumerate(xnames_all) if j not in keep)
    stats = select_columns(stats, keep)
    if skel.nesting is not None:
        stats = dataclasses.replace(stats, tree=skel.nesting.tree)
    engine_stats: NestedStatistics | LeafGrams = stats
    if grams is not None:
        if grams.leaves.size != nleaf:  # pragma: no cover - every leaf has a complete row
            raise DataError("the data changed between the two passes; read it again")
        engine_stats = grams.select(keep)
    sizes = _group_sizes(skel, stats.leaf[:, 0])
    resized = {gf.columns: dataclasses.replace(gf, counts=sizes[gf.columns]) for gf in skel.factors}
    factors = [dataclasses.replace(resized[gf.columns], name=gf.name) for gf in skel.factors]
    nesting = (
        None
        if skel.nesting is None
        else dataclasses.replace(
            skel.nesting, factors=tuple(resized[gf.columns] for gf in skel.nesting.factors)
        )
    )
    terms = _intercepts(f, factors, len(skel.ids)) if grams is None else _terms(f, factors, znames)
    # the in-memory checks on the extremes: the response's and each column's range
    y_range = np.array([totals.y_min, totals.y_max])
    xnames = tuple(xnames_all[j] for j in keep)
    # effects' ranges are not kept with slopes; random intercepts' are 1 (checked on one row,
    # not one per id tuple)
    scalar_terms = _intercepts(f, factors, 1) if grams is None else []
    x_range = ColumnMatrix.of_array(totals.x_range[:, keep])
    check_estimable(f.response, y_range, x_range, xnames, scalar_terms)
    _check_sizes(terms, stats.n)
    check_resources(terms, len(skel.ids), len(keep), limits, skel.nesting is not None)
    frame = SummaryFrame(
        formula=f,
        data=skel.ids,
        y=np.empty(0),
        x_columns=ColumnMatrix.of_array(np.empty((0, len(keep)))),
        xnames=xnames,
        omitted=omitted,
        n_dropped=totals.n_dropped,
        dropped_by_column=totals.dropped_by_column,
        source=totals.source,
        n_used=stats.n,
        y_signature=(float(raw.colsum[-1]), float(raw.dtd[-1, -1])),
        y_absmax=totals.y_absmax,
        statistics=engine_stats,
    )
    binary = np.array([totals.y_min, totals.y_max]) if totals.binary else np.array([0.5])
    response_warnings = linear_probability(binary, f.response)
    if nesting is None:
        if grams is None:  # pragma: no cover - crossed factors are always reduced by cells
            raise DataError("the statistics do not match the model's random effects")
        return Design(f, frame, factors, "crossed", terms, response_warnings=response_warnings)
    levels = [[t for t in terms if t.factor.columns == gf.columns] for gf in nesting.factors]
    ordered = [t for lv in levels for t in lv]
    scalar = all(len(lv) == 1 and lv[0].intercept_only for lv in levels)
    if scalar != (grams is None):  # pragma: no cover - pass 2 reduced for this engine
        raise DataError("the statistics do not match the model's random effects")
    return Design(
        f,
        frame,
        factors,
        "nested" if scalar else "tree",
        ordered,
        nesting,
        levels,
        response_warnings=response_warnings,
    )
