"""Weights of the rows and groups a model is fitted to: read, checked and scaled once.

A `WeightSpec` names columns; `resolve_weights` reads them on the rows the model uses and refuses
what no weighting can mean (a missing, infinite, negative or zero weight, a fractional frequency, a
level's weight that varies within one of its groups, a weight for a level the model does not have),
naming the column and how many rows or groups are affected.

Sampling weights are turned into what the pseudo-likelihood needs (Rabe-Hesketh and Skrondal 2006,
JRSS A 169(4); Pfeffermann et al. 1998): one weight per observation *conditional* on its
innermost group, and one per group of every level conditional on the group above. Overall
(unconditional) weights are divided by the overall weight of the level above (WeMix's ``cWeights =
FALSE``). ``pwscale`` rescales the level-1 weights within each innermost group as Stata's
``mixed`` does: ``size`` to sum to the group's size ``n_j``, ``effective`` to sum to its effective
size ``(sum w)^2 / sum w^2``, ``gk`` (Graubard and Korn 1996) sets them to 1 and gives the group
the mean of ``w_i|j w_j`` over its rows.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.frame import ModelFrame, as_pandas
from tiers.design.grouping import GroupingFactor
from tiers.errors import DataError
from tiers.formula.weighting import WeightSpec

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class RowWeights:
    """Checked weights of the rows used (and, for sampling weights, of the groups).

    Attributes
    ----------
    spec : WeightSpec
    rows : array (nobs,)
        Per row: the precision or frequency weight, or the level-1 sampling weight conditional on
        the innermost group, after ``pwscale`` (ones when no column weights the observations).
    groups : tuple of arrays
        Sampling weights only: per grouping level (outermost first) one weight per group,
        conditional on the group above (ones for a level without weights).
    notes : tuple of str
        What was done to the weights, in words (shown with the fit's notes).
    observation : str or None
        The observations' weight column (for sampling weights given as a mapping, the key that is
        not a level).
    levels : tuple of (str, str)
        The grouping levels' weight columns (sampling weights).
    """

    spec: WeightSpec
    rows: FloatArray
    groups: tuple[FloatArray, ...] = ()
    notes: tuple[str, ...] = ()
    observation: str | None = None
    levels: tuple[tuple[str, str], ...] = ()

    @property
    def frequency(self) -> bool:
        """Frequency weights: row i stands for ``rows[i]`` identical rows."""
        return self.spec.kind == "frequency"

    @property
    def sampling(self) -> bool:
        """Sampling weights: fitted by pseudo-maximum likelihood."""
        return self.spec.kind == "sampling"

    @property
    def nobs(self) -> int:
        """Observations the weights stand for: their sum for frequency weights, else the rows."""
        return int(round(float(self.rows.sum()))) if self.frequency else int(self.rows.size)


def _column(df: pd.DataFrame, frame: ModelFrame, column: str, role: str) -> FloatArray:
    """The column's values on the rows used, as floats; every bad value refused with a count."""
    if column not in df.columns:
        cols = [str(c) for c in df.columns]
        close = difflib.get_close_matches(column, cols, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DataError(f"weight column {column!r} ({role}) is not in the data{hint}")
    raw = df[column] if frame.rows is None else df[column].iloc[frame.rows]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    n_text = int((np.isnan(values) & raw.notna().to_numpy()).sum())
    if n_text:
        raise DataError(f"weight column {column!r} has {n_text:,} non-numeric values")
    bad = {
        "missing": int(np.isnan(values).sum()),
        "infinite": int(np.isinf(values).sum()),
        "negative": int((values < 0).sum()),
        "zero": int((values == 0).sum()),
    }
    found = {k: v for k, v in bad.items() if v}
    if found:
        what = ", ".join(f"{v:,} {k}" for k, v in found.items())
        advice = (
            "; zero weights carry no information: drop those rows (drop_zero_weights=True "
            "for precision weights)"
            if "zero" in found
            else "; a weight must be a positive, finite number on every row used"
        )
        raise DataError(f"weight column {column!r} ({role}) has {what} values{advice}")
    return values


def resolve_weights(
    spec: WeightSpec, data: object, frame: ModelFrame, levels: list[GroupingFactor] | None
) -> RowWeights:
    """Read and check the weights of ``spec`` on the rows of ``frame``.

    Parameters
    ----------
    spec : WeightSpec
    data : DataFrame
        The data as given (the weight columns are read from it).
    frame : ModelFrame
        The rows used.
    levels : list of GroupingFactor or None
        The nested grouping levels, outermost first; None when the factors do not nest.

    Raises
    ------
    DataError
        A missing column, a bad value (with counts), a fractional frequency weight, a level's
        weight that varies within its groups, a weight for a level the model does not have.
    """
    df = as_pandas(data)
    if spec.kind != "sampling":
        if spec.observation is None or spec.levels:
            raise DataError(
                f"{spec.kind} weights are one column weighting the observations; weights per "
                "level are sampling weights (weight_type='sampling')"
            )
        w = _column(df, frame, spec.observation, f"{spec.kind} weights")
        if spec.kind == "frequency":
            frac = int((w != np.round(w)).sum())
            if frac:
                raise DataError(
                    f"frequency weight column {spec.observation!r} has {frac:,} values that are "
                    "not whole numbers; a frequency weight counts identical rows (use precision "
                    "or sampling weights for other weights)"
                )
        dropped = (
            f"; {spec.zero_dropped:,} rows with a zero weight dropped (drop_zero_weights)"
            if spec.zero_dropped
            else ""
        )
        what = (
            f"precision weights {spec.observation!r}: the residual variance of each row is "
            f"sigma^2 / weight{dropped}"
            if spec.kind == "precision"
            else f"frequency weights {spec.observation!r}: each row counts as that many "
            f"observations ({int(w.sum()):,} in all)"
        )
        return RowWeights(spec, _readonly(w), notes=(what,), observation=spec.observation)
    return _sampling(spec, df, frame, levels)


def _sampling(
    spec: WeightSpec, df: pd.DataFrame, frame: ModelFrame, levels: list[GroupingFactor] | None
) -> RowWeights:
    if levels is None:
        raise DataError(
            "sampling weights need nested grouping levels (a multistage sample: units within "
            "clusters); the grouping factors of this model cross"
        )
    names = [gf.name for gf in levels]
    given = dict(spec.levels)
    observation = spec.observation
    unknown = [name for name in given if name not in names]
    # the one key that is neither a grouping level nor close to one names the observations
    far = [k for k in unknown if not difflib.get_close_matches(k, names, n=1, cutoff=0.75)]
    if len(far) == 1 and observation is None:
        observation = given.pop(far[0])
        unknown.remove(far[0])
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"sampling weights given for level {name!r}{hint}, which this model does not have; "
            f"its levels are {', '.join(names)} (outermost first), and one more key names the "
            "observations' weights"
        )
    groups = []
    for gf in levels:
        if gf.name not in given:
            groups.append(np.ones(gf.nlevels))
            continue
        col = given[gf.name]
        w = _column(df, frame, col, f"sampling weights of level {gf.name}")
        lo = np.full(gf.nlevels, np.inf)
        hi = np.full(gf.nlevels, -np.inf)
        np.minimum.at(lo, gf.codes, w)
        np.maximum.at(hi, gf.codes, w)
        varies = int((hi - lo > 1e-12 * np.abs(hi)).sum())
        if varies:
            raise DataError(
                f"the sampling weight {col!r} of level {gf.name} varies within {varies:,} of its "
                f"{gf.nlevels:,} groups; a level's weight must be constant within each group"
            )
        groups.append(lo)
    notes: list[str] = []
    rows = np.ones(frame.nobs)
    if observation is not None:
        rows = _column(df, frame, observation, "sampling weights of the observations")
    if not spec.conditional:
        # overall weights -> conditional: divide by the overall weight of the unit above
        if observation is not None:
            rows = rows / groups[-1][levels[-1].codes]
        for k in range(len(levels) - 1, 0, -1):
            groups[k] = groups[k] / groups[k - 1][_parent_codes(levels, k)]
        notes.append(
            "sampling weights given as overall (unconditional) weights: each divided by the "
            "weight of the unit above to make it conditional"
        )
    rows, groups[-1], note = _scale(spec, rows, groups[-1], levels[-1])
    notes.append(note)
    return RowWeights(
        spec,
        _readonly(rows),
        tuple(_readonly(g) for g in groups),
        tuple(notes),
        observation,
        tuple(given.items()),
    )


def _parent_codes(levels: list[GroupingFactor], k: int) -> NDArray[np.int64]:
    """The group at level ``k - 1`` of each group of level ``k``."""
    parent = np.zeros(levels[k].nlevels, dtype=np.int64)
    parent[levels[k].codes] = levels[k - 1].codes
    return parent


def _scale(
    spec: WeightSpec, rows: FloatArray, inner: FloatArray, leaf: GroupingFactor
) -> tuple[FloatArray, FloatArray, str]:
    """Stata's ``pwscale()`` of the level-1 weights within each innermost group."""
    g, m = leaf.codes, leaf.nlevels
    if spec.pwscale == "none":
        return rows, inner, "level-1 sampling weights used as given (no pwscale)"
    total = np.bincount(g, weights=rows, minlength=m)
    if spec.pwscale == "size":
        n_g = np.bincount(g, minlength=m)
        return (
            rows * (n_g / total)[g],
            inner,
            f"level-1 sampling weights scaled to sum to the size of each {leaf.name} "
            "(pwscale(size))",
        )
    if spec.pwscale == "effective":
        sq = np.bincount(g, weights=rows * rows, minlength=m)
        return (
            rows * (total / sq)[g],
            inner,
            f"level-1 sampling weights scaled to sum to the effective size of each {leaf.name}, "
            "(sum w)^2 / sum w^2 (pwscale(effective))",
        )
    n_g = np.bincount(g, minlength=m)
    mean_w = np.bincount(g, weights=rows * inner[g], minlength=m) / n_g
    return (
        np.ones_like(rows),
        mean_w,
        f"Graubard-Korn scaling (pwscale(gk)): level-1 weights set to 1, each {leaf.name} "
        "weighted by the mean over its rows of (level-1 weight x its own weight)",
    )


def _readonly(a: FloatArray) -> FloatArray:
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out
