"""`tiers.fit` of a `dask.dataframe.DataFrame`: two passes over the partitions, the fit on the client.

Pass 1 (`tiers.scale.passes.survey`) learns, from every row, what makes the design equal to the
in-memory one: missing values per used column, the levels of categorical predictors, the distinct
id tuples (the nesting tree, implicit nesting as in memory). Pass 2
(`tiers.scale.passes.reduce_partition`) reduces each partition to sufficient statistics about its
own column means; pieces are combined pairwise in a tree on the workers by the exact co-moment
update (Chan, Golub and LeVeque 1979), so no row and no per-row array reaches the client. The
fit then runs on the statistics alone (`tiers.engine.registry`: the nested engine from sums, the
block and crossed engines from rows that reproduce each leaf's or cell's cross-product).

Runs on whatever Dask scheduler is active: a `distributed.Client` if one is, else Dask's default.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.frame import _variables
from tiers.design.design import Design
from tiers.design.diagnostics import Limits
from tiers.errors import DataError, TiersError
from tiers.fitting import fit_design
from tiers.formula.parse import parse
from tiers.formula.types import Formula
from tiers.results.result import FitResult
from tiers.scale.design import Skeleton, Sources, Totals, build_design, build_skeleton
from tiers.scale.files import source_names
from tiers.scale.passes import (
    Columns,
    Piece,
    Plan,
    Survey,
    combine,
    reduce_partition,
    spread,
    survey,
)
from tiers.scale.transforms import learn, stateful_calls

_NUMERIC = {"integer": "numbers", "float": "numbers", "bool": "numbers"}


def is_dask_frame(data: Any) -> bool:
    """A `dask.dataframe.DataFrame` (checked without importing Dask)."""
    return type(data).__module__.startswith("dask.") and hasattr(data, "npartitions")


def _columns(f: Formula, meta: pd.DataFrame) -> Columns:
    options = [
        name
        for name, value in (("residuals()", f.residuals), ("weights", f.weights), ("vce()", f.vce))
        if value is not None
    ]
    if options:
        raise DataError(
            f"{options[0]} in {f.text!r}: a fit of a Dask DataFrame uses unweighted sufficient "
            "statistics with independent residuals and model-based standard errors; compute the "
            "data (ddf.compute()) to fit it in memory"
        )
    calls = stateful_calls(f)
    roles = _variables(f)
    for name in re.findall(r"`([^`]+)`", f.fixed):
        if name in meta.columns:
            roles.setdefault(name, "a predictor")
    in_c = set(re.findall(r"\bC\(\s*`?([^`,)]+?)`?\s*[,)]", f.fixed))
    categorical = tuple(
        c
        for c, role in roles.items()
        if role == "a predictor"
        and c in meta.columns
        and (c in in_c or not pd.api.types.is_numeric_dtype(meta[c]) or meta[c].dtype == bool)
    )
    return Columns(f, roles, tuple(f.group_columns), categorical, calls)


def _check_kinds(surveys: list[Survey], files: tuple[str, ...]) -> None:
    """Each used column has one kind in every partition (numbers, text or categories)."""
    first: dict[str, tuple[str, str]] = {}
    for s in surveys:
        for col, kind in s.kinds.items():
            if kind == "absent":
                raise DataError(
                    f"{files[s.source]} has no column {col!r}; every file of a dataset needs the "
                    "columns the model uses"
                )
            if kind == "empty":
                continue
            coarse = _NUMERIC.get(kind, kind)
            seen = first.setdefault(col, (coarse, files[s.source]))
            if seen[0] != coarse:
                raise DataError(
                    f"column {col!r} holds {coarse} in {files[s.source]} but {seen[0]} in "
                    f"{seen[1]}; write it with one type in every file (ids as text or as numbers, "
                    "not both)"
                )


def _levels(surveys: list[Survey], cols: Columns) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for c in cols.categorical:
        values = pd.unique(np.concatenate([s.levels[c] for s in surveys if c in s.levels]))
        try:
            out[c] = sorted(values.tolist())
        except TypeError:
            raise DataError(
                f"column {c!r} mixes numbers and text across the files; convert it to one type"
            ) from None
    return out


def _shared(plans: list[Plan]) -> list[Any]:
    """Each partition's plan for its task.

    Scattered to the workers of an active client, else embedded in the graph.
    """
    from dask import delayed

    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return [delayed(p, traverse=False) for p in plans]
    return list(client.scatter(plans, hash=False))


def _tree_reduce(pieces: list[Any], files: tuple[str, ...]) -> Any:
    from dask import delayed

    merge = delayed(_combine_named, pure=True)
    while len(pieces) > 1:
        nxt = [merge(a, b, files) for a, b in zip(pieces[::2], pieces[1::2], strict=False)]
        if len(pieces) % 2:
            nxt.append(pieces[-1])
        pieces = nxt
    return pieces[0]


def _combine_named(a: Piece | None, b: Piece | None, files: tuple[str, ...]) -> Piece | None:
    try:
        return combine(a, b)
    except DataError:
        assert a is not None and b is not None
        raise DataError(
            f"{files[a.sources[0]]} and {files[b.sources[0]]} give different fixed-effects "
            f"columns ({', '.join(a.names)} vs {', '.join(b.names)})"
        ) from None


def _named(step: Any, files: tuple[str, ...]) -> Any:
    """A pass over one partition whose errors name its file."""

    def run(df: pd.DataFrame, arg: Any, source: int) -> Any:
        try:
            return step(df, arg, source)
        except TiersError as exc:
            raise type(exc)(f"{files[source]}: {exc}") from None

    return run


def fit_dask(
    formula: str | Formula,
    ddf: Any,
    *,
    reml: bool | None,
    force: bool,
    limits: Limits | None,
    result_type: type[FitResult],
) -> FitResult:
    """Fit a linear mixed model to a Dask DataFrame from its sufficient statistics.

    See `tiers.api.stages.fit` for the parameters: `prepare_dask`, then the in-memory fitting
    stage on the statistics.
    """
    start = time.perf_counter()
    design = prepare_dask(formula, ddf, force=force, limits=limits)
    return fit_design(design, reml=reml, start=start, result_type=result_type)


def prepare_dask(
    formula: str | Formula, ddf: Any, *, force: bool = False, limits: Limits | None = None
) -> Design:
    """The design of a Dask DataFrame (`tiers.prepare`'s stage): two passes over the data.

    Nothing of the size of the rows reaches the client: the design holds one row per innermost
    group and the sufficient statistics (`tiers.design.summary.SummaryFrame`).

    Raises
    ------
    DataError, NestingError, FormulaError
        As in memory, naming the file (or partition) and the column.
    """
    import dask
    from dask import delayed

    f = parse(formula) if isinstance(formula, str) else formula
    files = source_names(ddf)
    cols = _columns(f, ddf._meta)
    parts = ddf.to_delayed()
    look = delayed(_named(survey, files), pure=True)
    surveys: list[Survey] = list(dask.compute(*[look(p, cols, i) for i, p in enumerate(parts)]))
    _check_kinds(surveys, files)
    levels = _levels(surveys, cols)
    state = learn(cols.calls, [s.transforms for s in surveys])
    ids, where, row_of = _distinct_ids(surveys, cols, files)
    skel = build_skeleton(f, ids, force=force, where=where)
    nleaf = skel.nleaf
    leaf_of = skel.leaf[row_of]  # the leaf of each partition's id tuples, partition after partition
    bounds = np.cumsum([0] + [len(s.ids) for s in surveys])
    order = _term_order(f, skel)
    plans = _shared(
        [
            Plan(cols, levels, leaf_of[bounds[i] : bounds[i + 1]], order, state)
            for i in range(len(surveys))
        ]
    )
    step = delayed(_named(reduce_partition, files), pure=True)
    total = _tree_reduce([step(p, plans[i], i) for i, p in enumerate(parts)], files)
    piece: Piece | None = dask.compute(total)[0]
    if piece is None:
        raise DataError(
            f"no rows left: every row has a missing value in one of {', '.join(cols.roles)}"
        )
    by_column = {c: sum(s.dropped_by_column.get(c, 0) for s in surveys) for c in cols.roles}
    totals = Totals(
        n_dropped=sum(s.n_dropped for s in surveys),
        dropped_by_column=by_column,
        names=piece.names,
        y_min=piece.y_min,
        y_max=piece.y_max,
        y_absmax=piece.y_absmax,
        binary=piece.binary,
        x_range=piece.x_range,
        source=_source(files),
    )
    stats = piece.statistics if order is not None else spread(piece, nleaf)
    design = build_design(skel, stats, totals, limits)
    _attach_specs(design, cols, levels, state)
    return design


def _attach_specs(
    design: Design, cols: Columns, levels: dict[str, list[Any]], state: dict[str, Any]
) -> None:
    """The model specs of the fixed part and of the random terms (new data, F tests).

    In memory they are learned from the rows (`tiers.design.design.Design.term_spec`); here from
    a small frame holding each categorical predictor's levels over the whole data, with the state
    of the stateful transforms learned from every row (other predictors are numbers), which codes
    the same columns.
    """
    from formulaic import ModelSpec

    predictors = [c for c, role in cols.roles.items() if role == "a predictor"]
    size = max([2, *(len(v) for v in levels.values())])
    frame = pd.DataFrame(
        {
            c: (
                pd.Categorical(np.resize(np.array(levels[c], dtype=object), size), levels[c])
                if c in levels
                else np.arange(size, dtype=np.float64) + 1.0
            )
            for c in predictors
        }
    )
    f = design.formula
    for rhs in [f.fixed, *(t.expr for t in f.random if not t.is_intercept_only)]:
        spec = ModelSpec(formula=rhs, na_action="ignore", transform_state=copy.deepcopy(state))
        design.learned_specs[rhs] = spec.get_model_matrix(frame).model_spec


def _term_order(f: Formula, skel: Skeleton) -> tuple[int, ...] | None:
    """The random terms in the engine's order, when it reads per-leaf (or per-cell) cross-products.

    Nested intercepts only: None (sums suffice). Slopes: outermost level first. Crossed factors:
    the formula's order, kept per cell.
    """
    if skel.nesting is None:
        return tuple(range(len(f.random)))
    if all(t.is_intercept_only for t in f.random):
        return None
    return tuple(
        i
        for gf in skel.nesting.factors
        for i, t in enumerate(f.random)
        if tuple(t.group) == gf.columns
    )


def _distinct_ids(
    surveys: list[Survey], cols: Columns, files: tuple[str, ...]
) -> tuple[pd.DataFrame, Sources, NDArray[np.int64]]:
    """The distinct id tuples over all partitions, and the file each was first seen in.

    Also, for each partition's tuples (partition after partition), their row among the distinct
    ones.
    """
    if not any(len(s.ids) for s in surveys):
        raise DataError(
            f"no rows left: every row has a missing value in one of {', '.join(cols.roles)}"
        )
    groups = list(cols.groups)
    every = pd.concat([s.ids for s in surveys], ignore_index=True)
    # first-appearance numbering: the row of each tuple among drop_duplicates' (keep first)
    row_of = every.groupby(groups, sort=False).ngroup().to_numpy().astype(np.int64)
    first = np.flatnonzero(np.concatenate(([True], np.diff(np.maximum.accumulate(row_of)) > 0)))
    src = np.repeat([s.source for s in surveys], [len(s.ids) for s in surveys])
    ids = every.iloc[first].reset_index(drop=True)
    return ids, Sources(files, src[first].astype(np.int64)), row_of


def _source(files: tuple[str, ...]) -> str | None:
    if files[0].startswith("partition "):
        return None
    if len(files) == 1:
        return files[0]
    return f"{files[0]} ... {files[-1]} ({len(files):,} files)"
