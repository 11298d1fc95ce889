"""Nesting diagnostics, run before any fit: the traps of the founding Stata session.

* Two declared levels that partition the rows identically: the variance components are not
  identified (the seed's levels listed innermost first). When the id columns nest in another order,
  the corrected model is proposed in the syntax the user wrote.
* A child whose labels repeat across parents: implicit nesting when nearly every label repeats
  (teacher 1 in every school), but an error with examples when only a few do (a student under two
  teachers), which suggests crossed factors instead.
* Levels whose groups mostly hold one observation, and levels with very few groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tiers.data.columns import ColumnMatrix
from tiers.design.grouping import GroupingFactor, combined_key, parent_map
from tiers.design.terms import TermSpec
from tiers.errors import DataError, NestingError
from tiers.formula.render import render_nested
from tiers.formula.types import Formula

#: A child whose labels repeat under several parents is taken as implicitly nested (labels
#: restarted within each parent) when at least this share of its labels repeat; below it, the
#: repeats look like units that moved between parents.
IMPLICIT_SHARE = 0.5
#: Fewer groups than this: the level's SD is poorly determined (a handful of draws of the effect).
FEW_GROUPS = 10


def _codes(data: pd.DataFrame, col: str) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(data[col], sort=False)
    return codes.astype(np.int64, copy=False), len(uniques)


def check_child_nesting(
    formula: Formula, data: pd.DataFrame, factors: list[GroupingFactor]
) -> None:
    """Raise when a declared child is not nested in its parent but crosses it for a few units."""
    for term, gf in zip(formula.random, factors, strict=True):
        if not gf.implicit or len(term.group) < 2:
            continue
        child = term.group[-1]
        own, n_own = _codes(data, child)
        parent = gf.parent_codes
        assert parent is not None
        pairs = np.unique(combined_key(parent, n_own, own))
        labels_parents = np.bincount(pairs % n_own, minlength=n_own)
        repeated = np.flatnonzero(labels_parents > 1)
        share = repeated.size / n_own
        if share >= IMPLICIT_SHARE:
            continue
        parent_name = ":".join(term.group[:-1])
        examples = []
        child_values = data[child].to_numpy()
        parent_cols = [data[c].to_numpy() for c in term.group[:-1]]
        own_rows = {int(k): np.flatnonzero(own == k) for k in repeated[:3]}
        for rows in own_rows.values():
            seen = sorted({":".join(str(col[r]) for col in parent_cols) for r in rows})[:3]
            examples.append(
                f"{child} {child_values[rows[0]]} under {parent_name} {', '.join(seen)}"
            )
        raise NestingError(
            f"{child} is not nested in {parent_name}: {repeated.size:,} of {n_own:,} {child} "
            f"values appear under more than one {parent_name} (e.g. {'; '.join(examples)}). If "
            f"units move between groups, the factors are crossed: write "
            f"(1 | {parent_name}) + (1 | {child}) in lme4 syntax. If the labels are meant to restart "
            f"within each {parent_name}, pass force=True (--force) to form the combinations."
        )


def propose_order(formula: Formula, data: pd.DataFrame) -> str | None:
    """The nested model with the levels reordered so each id column nests in the one before it.

    Returns None unless the columns, each taken alone, form a strict chain of nesting in some
    order (globally unique ids), and that order differs from the one written.
    """
    cols = list(dict.fromkeys(c for t in formula.random for c in t.group))
    if len(cols) < 2:
        return None
    coded = {c: _codes(data, c) for c in cols}
    order = sorted(cols, key=lambda c: coded[c][1])
    for coarse, fine in zip(order[:-1], order[1:], strict=True):
        if coded[coarse][1] >= coded[fine][1]:
            return None
        _, ok = parent_map(coded[fine][0], coded[fine][1], coded[coarse][0])
        if not ok:
            return None
    written = [t.group[-1] for t in formula.random]
    if written == order:
        return None
    return render_nested(formula, order)


def identical_partition_error(
    formula: Formula, data: pd.DataFrame, coarse: GroupingFactor, fine: GroupingFactor
) -> NestingError:
    """The 'not identified' error, with the corrected model when one can be proposed."""
    msg = (
        f"the levels {coarse.name!r} and {fine.name!r} define the same {fine.nlevels:,} groups "
        "(after nesting each level in the ones before it), so their variance components are not "
        "identified: the data cannot tell them apart, and any split of the variance between them "
        "fits equally well."
    )
    proposal = propose_order(formula, data)
    if proposal is not None:
        msg += (
            " The id columns nest in another order; levels are listed outermost first. Did you "
            f"mean:\n    {proposal}"
        )
    else:
        msg += " Remove one of the two levels, or check the order in which the levels are listed."
    msg += "\nTo fit anyway (the estimates of these components are then arbitrary), use force=True (--force)."
    return NestingError(msg)


def level_messages(factors: tuple[GroupingFactor, ...]) -> tuple[list[str], list[str]]:
    """Warnings (levels of singletons) and notes (levels with few groups), in plain words."""
    warns, notes = [], []
    for gf in factors:
        sizes = gf.sizes()
        single = float(np.mean(sizes == 1))
        if single > 0.5:
            warns.append(
                f"{single:.0%} of the {gf.nlevels:,} groups of {gf.name} hold a single observation: "
                f"its variance can hardly be told apart from the residual variance"
            )
        if gf.nlevels < FEW_GROUPS:
            notes.append(
                f"{gf.name} has only {gf.nlevels} groups: its SD is poorly determined (a variance "
                f"estimated from {gf.nlevels} draws); read its interval, not the point estimate"
            )
    return warns, notes


#: Responses and predictors whose largest magnitude lies outside this range cannot be fitted in
#: double precision: their sums of squares overflow or underflow.
REPRESENTABLE = (1e-150, 1e150)
#: Relative size of the residual below which the response is taken as fitted exactly.
EXACT_FIT_TOL = 1e-10
#: Up to this many rows `check_exact_fit` runs before every fit; above, only when a fit comes out
#: degenerate (it would cost more than a fit of a large nested model: 270 ms at 800,000 rows).
EXACT_FIT_ROWS = 20_000
#: Least squares on more than this many flops (rows x columns^2) is skipped by `check_estimable`.
_LSTSQ_WORK = 2e8


@dataclass
class Limits:
    """Resource limits checked before a fit; raise them to fit larger models.

    Attributes
    ----------
    max_theta : int
        Most covariance parameters (a term with ``q`` effects and an unstructured covariance has
        ``q (q + 1) / 2``).
    max_bytes : float
        Most memory the engine's working arrays may take (the gradient holds one block per
        covariance parameter per group).
    max_seconds : float
        Longest estimated fitting time (`estimated_seconds`, a rough estimate within a factor of
        a few).
    """

    max_theta: int = 2000
    max_bytes: float = 8.0 * 2**30
    max_seconds: float = 3600.0


#: The limits every fit is checked against; change them here (``tiers.design.diagnostics.LIMITS``)
#: or pass ``limits=`` to `tiers.design.design.build_design`.
LIMITS = Limits()


#: Seconds per unit of `estimated_seconds`' work (n_theta x rows x effects per group), measured
#: on models with 10 to 40 slopes on one factor (2 to 20 s).
_SECONDS_PER_UNIT = 5e-6


#: Seconds per row of a nested random-intercept fit (the seed design at 8,000,000 rows: 2.7 s
#: wall, at load 4, from the data frame to the result, rounded up).
_SECONDS_PER_ROW_SUMS = 5e-7


def estimated_seconds(terms: list[TermSpec], nobs: int, sums_only: bool = False) -> float:
    """A rough fitting time: each gradient costs one pass over the rows per covariance parameter.

    The work grows as ``n_theta x rows x (effects per group)``; measured on a 2-core machine.
    With ``sums_only`` (nested random intercepts, no residual structure: the engine works on
    per-group sums, `tiers.engine.nested_scalar`) one pass over the rows builds the sums and each
    evaluation is a pass over the groups, so the time is linear in the rows alone; the formula
    above overstated an 8,000,000-row fit of 2.7 s as 3 minutes.
    """
    if sums_only and all(t.q == 1 for t in terms):
        return _SECONDS_PER_ROW_SUMS * nobs
    n_theta = sum(t.cov.n_theta for t in terms)
    q_by_group: dict[tuple[str, ...], int] = {}
    for t in terms:
        q_by_group[t.factor.columns] = q_by_group.get(t.factor.columns, 0) + t.q
    return _SECONDS_PER_UNIT * n_theta * nobs * max(q_by_group.values(), default=1)


def check_resources(
    terms: list[TermSpec], nobs: int, p: int, limits: Limits | None, sums_only: bool = False
) -> None:
    """Refuse, before any allocation, a model whose size is above ``limits`` (naming the term).

    ``sums_only``: see `estimated_seconds`.
    """
    lim = LIMITS if limits is None else limits
    if not terms:
        return
    n_theta = sum(t.cov.n_theta for t in terms)
    big = max(terms, key=lambda t: t.cov.n_theta)
    hint = (
        "simplify the term (fewer effects, or an independent covariance with '||'), or raise the "
        "limit: tiers.fit(..., limits=tiers.Limits({0}=...)), on the command line --max-params or "
        "--max-seconds, or for the session tiers.design.diagnostics.LIMITS"
    )
    if n_theta > lim.max_theta:
        raise DataError(
            f"the model has {n_theta:,} covariance parameters (the term for {big.name!r} with "
            f"{big.q} effects has {big.cov.n_theta:,}), above the limit of {lim.max_theta:,}: "
            "fitting it would take hours and many GB; " + hint.format("max_theta")
        )
    q_by_group: dict[tuple[str, ...], int] = {}
    groups: dict[tuple[str, ...], int] = {}
    for t in terms:
        q_by_group[t.factor.columns] = q_by_group.get(t.factor.columns, 0) + t.q
        groups[t.factor.columns] = t.factor.nlevels
    blocks = sum(groups[k] * q * q for k, q in q_by_group.items())
    need = 8.0 * (n_theta + 1) * (blocks + (p + 1) ** 2) + 8.0 * nobs * sum(q_by_group.values())
    if need > lim.max_bytes:
        raise DataError(
            f"the model needs about {need / 2**30:,.1f} GiB of working memory (the term for "
            f"{big.name!r} has {big.q} effects per group and {big.cov.n_theta:,} covariance "
            f"parameters), above the limit of {lim.max_bytes / 2**30:,.1f} GiB; "
            + hint.format("max_bytes")
        )
    seconds = estimated_seconds(terms, nobs, sums_only)
    if seconds > lim.max_seconds:
        raise DataError(
            f"the model would take about {seconds / 3600:,.1f} hours to fit (a rough estimate: "
            f"{n_theta:,} covariance parameters, the term for {big.name!r} with {big.q} effects, "
            f"{nobs:,} rows), above the limit of {lim.max_seconds:,.0f} seconds; "
            + hint.format("max_seconds")
        )


def check_estimable(
    response: str, y: np.ndarray, X: ColumnMatrix, xnames: tuple[str, ...], terms: list[TermSpec]
) -> None:
    """Refuse a model that cannot be estimated, with the reason (cheap checks, before the fit).

    The response also a predictor; values too large or small for double precision; non-finite
    values in a random term's effects. An exact fit of the response is `check_exact_fit`'s.
    """
    if response in xnames:
        raise DataError(
            f"the response {response!r} is also a predictor: it explains itself exactly; remove "
            f"{response!r} from the right-hand side"
        )
    y_lo, y_hi = _extremes(y)
    top_y = _check_scale(y_lo, y_hi, f"the response {response!r}")
    if y.size > 1 and y_lo == y_hi:
        raise DataError(
            f"the fixed effects fit the response {response!r} exactly: it is constant "
            f"({float(y[0]):g} in every row used), so there is no variation to model"
        )
    lo, hi = REPRESENTABLE
    # each column in its own dtype, the intercept's ones once: no float copy of X
    columns = [(name, _one_if_broadcast(X.column(j)), "predictor") for j, name in enumerate(xnames)]
    columns += [
        (z, _one_if_broadcast(t.Z[:, k]), "random effect")
        for t in terms
        for k, z in enumerate(t.znames)
    ]
    for name, col, role in columns:
        c_lo, c_hi = _extremes(col)
        if not (np.isfinite(c_lo) and np.isfinite(c_hi)):  # min and max propagate NaN
            continue  # reported below, with the term
        top_x = _check_scale(c_lo, c_hi, f"the {role} {name!r}")
        if top_y > 0 and top_x > 0 and not lo <= top_y / top_x <= hi:
            raise DataError(
                f"the response {response!r} (values of order {top_y:.0e}) and the {role} "
                f"{name!r} (order {top_x:.0e}) differ in scale by more than {hi:.0e}: the "
                "variance of its coefficient would overflow or underflow double precision; "
                "rescale one of them before fitting, and scale the estimates back"
            )
    for t in terms:
        if np.isfinite(_one_if_broadcast(t.Z)).all():
            continue
        bad = ~np.isfinite(t.Z)
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            rows = np.flatnonzero(bad[:, j])
            raise DataError(
                f"the effect {t.znames[j]!r} of the random term for {t.name!r} has {rows.size:,} "
                "non-finite values (infinite, or NaN from a transformation such as log of a "
                f"non-positive number), first at row {int(rows[0])}; remove or recode those rows"
            )


def _one_if_broadcast(a: np.ndarray) -> np.ndarray:
    """The first row of an array that repeats it in every row (a zero row stride), else the array.

    An intercept-only term's ``Z`` is one 1.0 broadcast to every row: its values are checked once.
    """
    return a[:1] if a.ndim and a.shape[0] and a.strides[0] == 0 else a


def check_exact_fit(response: str, y: np.ndarray, X: np.ndarray, terms: list[TermSpec]) -> None:
    """Refuse a response fitted exactly by the fixed effects or by one term, with the reason.

    The residual variance is then zero and the likelihood unbounded. The check costs a few
    least-squares solves, more than a fit of a large nested model, so `tiers.fitting` runs it
    only when a fit comes out degenerate (a zero residual SD, a non-finite criterion, a singular
    matrix), to say why.
    """
    size = float(np.max(np.abs(y))) * np.sqrt(y.size) if y.size else 0.0
    if _residual_norm(y, X, size) <= EXACT_FIT_TOL * size:
        raise DataError(
            f"the fixed effects fit the response {response!r} exactly (a constant response, or "
            "one that is an exact function of the predictors): the residual variance is zero and "
            "the model cannot be estimated"
        )
    for t in terms:
        if _residual_norm(*_term_space(y, X, t), size) <= EXACT_FIT_TOL * size:
            what = (
                f"constant within every group of {t.name!r} (after the fixed effects)"
                if t.intercept_only
                else f"fitted exactly within every group of {t.name!r} by the fixed effects and "
                f"the random effects {', '.join(t.znames)}"
            )
            raise DataError(
                f"the response {response!r} is {what}: the residual variance is zero and the "
                f"model cannot be estimated; fit it at the level of {t.name!r} (one row per "
                "group), or use fewer effects"
            )


def _term_space(y: np.ndarray, X: np.ndarray, t: TermSpec) -> tuple[np.ndarray, np.ndarray]:
    """``y`` and ``X`` with one term's group-wise effects projected out, for `_residual_norm`.

    An intercept-only term is projected out by centring within groups (cheap for any number of
    groups); a term with slopes by adding its columns group by group to ``X``.
    """
    gf = t.factor
    if t.intercept_only:
        counts = np.bincount(gf.codes, minlength=gf.nlevels).astype(np.float64)
        counts[counts == 0] = 1.0

        def within(v: np.ndarray) -> np.ndarray:
            return v - (np.bincount(gf.codes, weights=v, minlength=gf.nlevels) / counts)[gf.codes]

        return within(y), np.column_stack([within(X[:, j]) for j in range(X.shape[1])])
    n, q = t.Z.shape
    if n * (X.shape[1] + gf.nlevels * q) ** 2 > _LSTSQ_WORK:
        return y, X  # too large to check here: only the fixed part is checked
    Zg = np.zeros((n, gf.nlevels * q))
    rows = np.arange(n)
    for k in range(q):
        Zg[rows, gf.codes * q + k] = t.Z[:, k]
    return y, np.column_stack([X, Zg])


def _extremes(v: np.ndarray) -> tuple[float, float]:
    """The smallest and largest value (NaN when there is one; 0, 0 when empty)."""
    return (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)


def _check_scale(v_lo: float, v_hi: float, what: str) -> float:
    """Refuse values (from ``v_lo`` to ``v_hi``) whose squares leave double precision.

    Rescaling inside the fit would not help: a response of order 1e200 has variances (sigma^2,
    the variance components) of order 1e400, and a predictor of order 1e300 a coefficient whose
    variance is of order 1e-600; neither can be stored, so the result could not be reported.
    """
    top = max(v_hi, -v_lo)
    if top == 0.0:
        return top
    lo, hi = REPRESENTABLE
    if not lo <= top <= hi:
        raise DataError(
            f"{what} has values of order {top:.0e}, outside the range tiers can fit ({lo:.0e} "
            f"to {hi:.0e}): the variances and covariances of the estimates would overflow or "
            "underflow double precision; rescale it (for example divide or multiply by a power "
            "of 10) before fitting, and scale the estimates back"
        )
    return top


def _residual_norm(y: np.ndarray, X: np.ndarray, size: float) -> float:
    """Norm of the residual of ``y`` after least squares on ``X`` (scale-free in X's columns).

    Above `_LSTSQ_WORK` flops only a constant ``y`` counts as fitted exactly (0 is returned for
    it, ``size`` otherwise): the check must stay cheap next to the fit.
    """
    n, p = X.shape
    if n * p * p > _LSTSQ_WORK:
        return 0.0 if float(np.ptp(y)) == 0.0 else size
    if X.shape[1] == 0:
        return float(np.linalg.norm(y))
    top = np.abs(X).max(axis=0)
    keep = top > 0
    if not keep.any():
        return float(np.linalg.norm(y))
    Xs = X[:, keep] / top[keep]
    Xs /= np.linalg.norm(Xs, axis=0)
    coef = np.linalg.lstsq(Xs, y, rcond=None)[0]
    return float(np.linalg.norm(y - Xs @ coef))
