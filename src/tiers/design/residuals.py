"""The residual groups of a design: which rows share a block ``R_g``, in time order, by pattern.

Built once with the design (``../shared/STYLE.md`` section 2). Residual groups are the innermost
random-effects groups (Stata's rule), or those split by the structure's ``group`` column (nlme's
``form = ~ t | school/student`` under ``random = ~ 1 | school``). Within a group, rows are ordered
by time. Groups of one size whose times, strata and occasions agree share one ``R_g`` (a
*pattern*): a balanced panel has one pattern, so the blocks cost nothing per evaluation.

Bad input is refused here, naming the column and the group: a time that repeats within a group,
a non-numeric time, a non-integer time for AR(1), too many occasions for unstructured residuals,
and a structure that the random effects make unidentifiable (exchangeable or unstructured
residuals with a random intercept on the same groups).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.design.grouping import Codes, GroupingFactor, combined_key
from tiers.design.residual_params import ResidualParams
from tiers.design.terms import TermSpec
from tiers.errors import DataError
from tiers.formula.residuals import BY_OCCASION, LAGGED, MAX_OCCASIONS, ResidualStructure

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class SizeClass:
    """The residual groups of one size T.

    Attributes
    ----------
    rows : IntArray (G, T)
        Each group's rows, in time order.
    leaf : IntArray (G,)
        The innermost random-effects group holding each residual group.
    pattern : IntArray (G,)
        Index into the patterns' rows below.
    times, strata, occasion : arrays (P, T)
        Per pattern: the times (or 0..T-1), stratum codes, unstructured occasion codes.
    """

    rows: IntArray
    leaf: IntArray
    pattern: IntArray
    times: FloatArray
    strata: IntArray
    occasion: IntArray

    @property
    def size(self) -> int:
        """Residuals per group."""
        return int(self.rows.shape[1])


@dataclass(frozen=True)
class ResidualLayout:
    """The residual structure of a design: its parameters and its groups by size and pattern."""

    params: ResidualParams
    classes: tuple[SizeClass, ...]
    ngroups: int
    group_name: str

    @property
    def spec(self) -> ResidualStructure:
        """The structure as asked for."""
        return self.params.spec


def _numeric_time(data: pd.DataFrame, spec: ResidualStructure) -> FloatArray:
    col = spec.time
    assert col is not None
    series = data[col]
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise DataError(
            f"the time variable {col!r} of the {spec.kind} residual structure must be numeric "
            f"(got {series.dtype}); convert it to numbers (waves 1, 2, 3, ... or dates in days)"
        )
    t = series.to_numpy(dtype=np.float64)
    if spec.kind in ("ar1", "toeplitz", "ma", "unstructured") and not np.all(t == np.round(t)):
        bad = t[t != np.round(t)][0]
        fix = "use CAR1 for a continuous time" if spec.kind == "ar1" else "code the times 1, 2, ..."
        raise DataError(
            f"the time variable {col!r} of the {spec.kind} residual structure takes the "
            f"non-integer value {bad:g}; {fix}"
        )
    return t


def _codes(values: pd.Series) -> tuple[IntArray, list[str]]:
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def build_residual_layout(
    spec: ResidualStructure,
    data: pd.DataFrame,
    leaf: GroupingFactor,
    leaf_terms: list[TermSpec],
) -> ResidualLayout:
    """Residual groups, time order and patterns of ``spec`` on the model frame's rows.

    Parameters
    ----------
    spec : ResidualStructure
    data : DataFrame
        The model frame's rows (complete cases).
    leaf : GroupingFactor
        The innermost random-effects grouping factor.
    leaf_terms : list of TermSpec
        The random-effects terms on ``leaf`` (for the identification check).

    Raises
    ------
    DataError
        Naming the column (and the group) at fault.
    """
    n = len(data)
    block, nblocks, group_name = leaf.codes, leaf.nlevels, leaf.name
    if spec.group is not None:
        g, ng = _codes(data[spec.group])[0], data[spec.group].nunique()
        block, uniq = pd.factorize(combined_key(leaf.codes, max(ng, 1), g), sort=True)
        block = block.astype(np.int64)
        nblocks, group_name = len(uniq), f"{spec.group} within {leaf.name}"
    times = _numeric_time(data, spec) if spec.time is not None else np.zeros(n)
    order = (
        np.lexsort((times, block)) if spec.time is not None else np.argsort(block, kind="stable")
    )
    bs, ts = block[order], times[order]
    if spec.time is not None:
        dup = np.flatnonzero((bs[1:] == bs[:-1]) & (ts[1:] == ts[:-1]))
        if dup.size:
            row = order[dup[0]]
            label = leaf.labels(data)[leaf.codes[row]]
            where = f"{leaf.name} {label!r}"
            if spec.group is not None:
                where = f"{spec.group} {data[spec.group].iloc[row]!r} of {where}"
            raise DataError(
                f"the time variable {spec.time!r} takes the value {ts[dup[0]]:g} twice within "
                f"{where}: each residual group needs distinct times (one row per occasion); "
                "aggregate the repeated rows or check the grouping"
            )
    strata = np.zeros(n, dtype=np.int64)
    labels: tuple[str, ...] = ()
    reference = None
    if spec.by is not None:
        strata, names = _codes(data[spec.by])
        if len(names) < 2:
            raise DataError(
                f"the column {spec.by!r} (by=) takes one value in the rows used: an SD per "
                "stratum needs at least two strata"
            )
        reference, labels = names[0], tuple(names[1:])
    occasion = np.zeros(n, dtype=np.int64)
    occasions = None
    if spec.kind in BY_OCCASION:
        occasions = np.unique(times)
        if occasions.size > MAX_OCCASIONS:
            raise DataError(
                f"{spec.kind} residuals over {spec.time!r} would have {occasions.size} occasions "
                f"(an SD each); at most {MAX_OCCASIONS} are fitted: use AR1, Toeplitz or "
                "Exchangeable, or fewer occasions"
            )
        if spec.kind == "banded" and spec.order > occasions.size - 1:
            raise DataError(
                f"banded residuals of order {spec.order} over {spec.time!r}: there are "
                f"{occasions.size} occasions, so at most {occasions.size - 1} apart; use an order "
                f"of at most {occasions.size - 1} (that order is unstructured)"
            )
        occasion = np.searchsorted(occasions, times).astype(np.int64)
        reference = _occasion_label(occasions[0])
        labels = tuple(_occasion_label(v) for v in occasions[1:])
    counts = np.bincount(block, minlength=nblocks)
    max_size = int(counts.max()) if n else 0
    max_lag = _longest_lag(times, block, nblocks) if spec.kind in LAGGED else 0
    if spec.kind in LAGGED and spec.order > max_lag:
        raise DataError(
            f"{spec.describe()} residuals over {spec.time!r} need lags up to {spec.order}, but "
            f"the longest lag within a group of {group_name} is {max_lag:g}: the correlations "
            f"beyond it are not estimable; use an order of at most {max_lag:g}"
        )
    n_occasions = 0 if occasions is None else occasions.size
    _check_identified(spec, leaf, leaf_terms, nblocks, max_lag, n_occasions)
    if spec.kind == "exchangeable" and max_size < 2:
        raise DataError(
            f"exchangeable residuals need groups of {group_name} with two or more rows; every "
            "group has one"
        )
    starts = np.concatenate(([0], np.cumsum(counts)))
    leaf_of_block = np.empty(nblocks, dtype=np.int64)
    leaf_of_block[block] = leaf.codes
    classes = []
    for T in np.unique(counts):
        which = np.flatnonzero(counts == T)
        rows = order[starts[which][:, None] + np.arange(T)[None, :]]
        key = [times[rows], strata[rows].astype(np.float64), occasion[rows].astype(np.float64)]
        keys = np.concatenate(key, axis=1)
        if np.all(keys == keys[0]):  # a balanced panel: one pattern, no sort
            uniq, pattern = keys[:1], np.zeros(keys.shape[0], dtype=np.int64)
        else:
            uniq, pattern = np.unique(keys, axis=0, return_inverse=True)
        classes.append(
            SizeClass(
                rows=rows,
                leaf=leaf_of_block[which],
                pattern=pattern.reshape(-1).astype(np.int64),
                times=uniq[:, :T],
                strata=uniq[:, T : 2 * T].astype(np.int64),
                occasion=uniq[:, 2 * T :].astype(np.int64),
            )
        )
    n_corr = {"ar1": 1, "car1": 1, "exchangeable": 1, "independent": 0}.get(spec.kind, 0)
    if spec.kind in LAGGED:
        n_corr = spec.order
    if occasions is not None:
        T = occasions.size
        band = T if spec.kind == "unstructured" else spec.order
        n_corr = sum(T - h for h in range(1, min(band, T - 1) + 1))
    span = int(max_lag) + 1 if spec.kind in LAGGED else 0
    params = ResidualParams(spec, n_corr, labels, reference, max_size, occasions, span)
    return ResidualLayout(params, tuple(classes), nblocks, group_name)


def _occasion_label(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _longest_lag(times: FloatArray, block: Codes, nblocks: int) -> float:
    """The largest ``t_max - t_min`` within a residual group (0 without rows)."""
    if not times.size:
        return 0.0
    spread = np.full(nblocks, -np.inf)
    np.maximum.at(spread, block, times)
    low = np.full(nblocks, np.inf)
    np.minimum.at(low, block, times)
    return float(np.max(spread - low))


def _check_identified(
    spec: ResidualStructure,
    leaf: GroupingFactor,
    leaf_terms: list[TermSpec],
    nblocks: int,
    max_lag: float,
    n_occasions: int,
) -> None:
    """Refuse residuals that a random intercept on the same groups makes unidentifiable.

    Exchangeable, unstructured, or Toeplitz (or MA, or banded) over every lag of a group. A random intercept
    on the residual groups adds the same constant to every covariance within a group; these
    blocks already have a free common covariance, so the two cannot be told apart.
    """
    full_toeplitz = spec.kind in LAGGED and spec.order >= max_lag
    if spec.kind == "banded":
        full_toeplitz = spec.order >= n_occasions - 1  # every pair: unstructured
    if spec.kind not in ("exchangeable", "unstructured") and not full_toeplitz:
        return
    intercept = any("(Intercept)" in t.znames for t in leaf_terms)
    if intercept and nblocks == leaf.nlevels:
        raise DataError(
            f"{spec.kind} residuals within {leaf.name} and a random intercept of {leaf.name} are "
            "not identified together: both give every pair of residuals of a group a common "
            f"covariance. Drop the random intercept of {leaf.name} (keep slopes with "
            "noconstant), or put the residual groups inside it (group=, e.g. residuals within "
            "students with a random intercept of schools)"
            + ("; or use a Toeplitz order below the longest lag" if full_toeplitz else "")
        )
