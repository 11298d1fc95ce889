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
import dataclasses
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.frame import _variables
from tiers.design.design import Design
from tiers.design.diagnostics import Limits
from tiers.engine.statistics import NestedStatistics
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
    survey,
)
from tiers.scale.transforms import learn, stateful_calls

FloatArray = NDArray[np.float64]
#: Where the passes' wall times are told (INFO): pass 1, the client's tree, pass 2, the design.
log = logging.getLogger("tiers.scale")

_NUMERIC = {"integer": "numbers", "float": "numbers", "bool": "numbers"}
#: Leaves moved per step: 50 million at 10^8 rows of the seed design.
_STEP = 1 << 20


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


def _accumulate(tasks: list[Any], nleaf: int, files: tuple[str, ...]) -> Piece | None:
    """Nested-intercept pieces summed into one table of leaves on the client, as they arrive.

    A piece holds only its partitions' leaves, so each is added into its rows of the table once
    (about the first piece's shift; `NestedStatistics.recentred` is the exact co-moment update).
    Merging pieces pairwise on the workers would instead hold the whole table two or three times
    in one worker at the top of the tree: at 10^8 rows of the seed design, 50 million leaves of
    32 bytes, 1.6 GB each.
    """
    leaf: FloatArray | None = None
    heads: list[Piece] = []
    shift: FloatArray | None = None
    for piece in _completed(tasks):
        if piece is None:
            continue
        stats = piece.statistics
        assert isinstance(stats, NestedStatistics)
        if leaf is None or shift is None:
            leaf = np.zeros((nleaf, stats.leaf.shape[1]))
            shift = stats.shift
        moved = stats.recentred(shift)
        leaf[piece.leaves] += moved.leaf  # a piece's leaves are distinct: one add each
        # copies, not views: a view would keep the piece's whole arrays alive with its head
        small = dataclasses.replace(
            piece,
            statistics=dataclasses.replace(stats, leaf=np.empty((0, stats.leaf.shape[1]))),
            leaves=np.empty(0, dtype=piece.leaves.dtype),
        )
        del piece, stats, moved
        heads.append(small)
    if not heads or leaf is None or shift is None:
        return None
    # the columns' sums and cross-products merged pairwise, as `_tree_reduce` merges pieces
    while len(heads) > 1:
        pairs = zip(heads[::2], heads[1::2], strict=False)
        heads = [_merged(a, b, files) for a, b in pairs] + heads[len(heads) - len(heads) % 2 :]
    head = heads[0]
    total = head.statistics
    assert isinstance(total, NestedStatistics)
    # the table moved in place, a column at a time, to where the engine centres it (the column
    # means, 0 for an intercept), until centring moves it no further (the mean's rounding is
    # below half an ulp of the shift): the engine then takes the statistics as they are
    # (`NestedStatistics.centred`) instead of copying the table
    at = shift
    for _ in range(3):
        total = total.centred()
        delta = at - total.shift
        for j in np.flatnonzero(delta):
            for i in range(0, nleaf, _STEP):  # whole, ``n * delta`` is a column-long temporary
                leaf[i : i + _STEP, j + 1] += leaf[i : i + _STEP, 0] * delta[j]
        at = total.shift
        if total.centred() is total:
            break
    return dataclasses.replace(head, statistics=dataclasses.replace(total, leaf=leaf))


def _merged(a: Piece, b: Piece, files: tuple[str, ...]) -> Piece:
    out = _combine_named(a, b, files)
    assert out is not None
    return out


def _completed(tasks: list[Any]) -> Iterator[Any]:
    """The tasks' results in the tasks' order, computed on an active client.

    Sums are then taken in one order whatever the timing (the fit is reproducible to the last
    bit). A few tasks more than the workers run at a time, so results that finish early and wait
    for those before them are few (each a partition's statistics). Without a client, a few tasks
    at a time on Dask's default scheduler.
    """
    import dask

    try:
        from distributed import as_completed, default_client

        client = default_client()
    except (ImportError, ValueError):
        for i in range(0, len(tasks), 8):
            yield from dask.compute(*tasks[i : i + 8])
        return
    window = 2 * max(1, len(client.scheduler_info().get("workers", {}))) + 2
    running: dict[Any, int] = {}
    pending = as_completed()

    def submit(i: int) -> None:
        future = client.compute(tasks[i])
        running[future.key] = i
        pending.add(future)

    waiting: dict[int, Any] = {}
    turn = 0
    for i in range(min(window, len(tasks))):
        submit(i)
    nxt = min(window, len(tasks))
    try:
        for future in pending:
            waiting[running.pop(future.key)] = future.result()
            future.release()
            if nxt < len(tasks):
                submit(nxt)
                nxt += 1
            while turn in waiting:
                yield waiting.pop(turn)
                turn += 1
    finally:
        pending.clear()


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
    clock = time.perf_counter()
    surveys: list[Survey] = list(dask.compute(*[look(p, cols, i) for i, p in enumerate(parts)]))
    clock = _told("pass 1 (kinds, missing values, levels, id tuples)", clock)
    _check_kinds(surveys, files)
    levels = _levels(surveys, cols)
    state = learn(cols.calls, [s.transforms for s in surveys])
    sizes = [len(s.ids) for s in surveys]
    ids, where, row_of = _distinct_ids(surveys, cols, files)
    # the client keeps one table of id tuples: each partition's own copy goes
    # (a fresh frame: an empty slice would be a view holding the partition's whole table)
    surveys = [dataclasses.replace(s, ids=pd.DataFrame()) for s in surveys]
    skel = build_skeleton(f, ids, force=force, where=where)
    del ids
    nleaf = skel.nleaf
    # the leaf of each partition's id tuples, partition after partition
    leaf_of = skel.leaf if row_of is None else skel.leaf[row_of]
    del row_of
    bounds = np.cumsum([0, *sizes])
    order = _term_order(f, skel)
    plans = _shared(
        [
            Plan(cols, levels, leaf_of[bounds[i] : bounds[i + 1]], order, state)
            for i in range(len(surveys))
        ]
    )
    del leaf_of
    clock = _told("client: id tuples, nesting tree and plans", clock)
    step = delayed(_named(reduce_partition, files), pure=True)
    tasks = [step(p, plans[i], i) for i, p in enumerate(parts)]
    piece: Piece | None
    if order is None:
        piece = _accumulate(tasks, nleaf, files)
    else:
        piece = dask.compute(_tree_reduce(tasks, files))[0]
    del plans, tasks
    clock = _told("pass 2 (sufficient statistics)", clock)
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
    stats = piece.statistics
    del piece
    design = build_design(skel, stats, totals, limits)
    _attach_specs(design, cols, levels, state)
    _told("client: design", clock)
    return design


def _told(step: str, since: float) -> float:
    now = time.perf_counter()
    log.info("%s: %.1f s", step, now - since)
    return now


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
) -> tuple[pd.DataFrame, Sources, NDArray[np.int64] | None]:
    """The distinct id tuples over all partitions, and the file each was first seen in.

    Also, for each partition's tuples (partition after partition), their row among the distinct
    ones; None when that is every row in turn (no tuple in two partitions).
    """
    if not any(len(s.ids) for s in surveys):
        raise DataError(
            f"no rows left: every row has a missing value in one of {', '.join(cols.roles)}"
        )
    groups = list(cols.groups)
    every = pd.concat([s.ids for s in surveys], ignore_index=True)
    # the partition of each tuple, in the smallest integer type that holds the file numbers
    src = np.repeat(
        np.array([s.source for s in surveys], dtype=np.min_scalar_type(len(files))),
        [len(s.ids) for s in surveys],
    )
    if _disjoint(surveys, groups):
        return every, Sources(files, src), None
    # first-appearance numbering: the row of each tuple among drop_duplicates' (keep first)
    row_of = every.groupby(groups, sort=False).ngroup().to_numpy().astype(np.int64)
    first = np.flatnonzero(np.concatenate(([True], np.diff(np.maximum.accumulate(row_of)) > 0)))
    ids = every.iloc[first].reset_index(drop=True)
    return ids, Sources(files, src[first]), row_of


def _disjoint(surveys: list[Survey], groups: list[str]) -> bool:
    """No id tuple is in two partitions: some id column's values never repeat across them.

    So it is when the data is partitioned along a level (a file per set of districts, as a state
    would export it): the tuples are then distinct as they stand, with no shuffle or hashing of
    every tuple on the client.
    """
    held = [s.ids for s in surveys if len(s.ids)]
    for c in groups:
        values = np.concatenate([pd.unique(ids[c].to_numpy()) for ids in held])
        if not pd.Series(values).duplicated().any():
            return True
    return False


def _source(files: tuple[str, ...]) -> str | None:
    if files[0].startswith("partition "):
        return None
    if len(files) == 1:
        return files[0]
    return f"{files[0]} ... {files[-1]} ({len(files):,} files)"
