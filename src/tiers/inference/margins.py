"""Predictive margins and average marginal effects of a fixed-effect variable (Stata's ``margins``).

Both are linear in beta, so each is ``g' beta`` for a vector ``g`` built from the data, and the
delta method is exact: ``se = sqrt(g' V g)`` with ``V`` the fixed effects' covariance.

* Predictive margin of variable ``x`` at value ``a``: set ``x = a`` in every row used by the fit,
  predict the fixed part and average: ``g = mean_i X_i(x = a)`` (Stata's ``margins, at(x = a)``;
  for a factor, ``margins x``). The random effects are at their mean, zero.
* Average marginal effect (``margins, dydx(x)``; R's ``marginaleffects::avg_slopes``): for a
  number, the mean over the rows of ``d(X_i beta) / dx`` by a central difference of the model
  matrix (exact for fixed parts linear or quadratic in ``x``), optionally with ``x`` set to each of
  ``at`` first; for a factor, the difference between the predictive margins of each level and the
  reference level of the fit's coding (the first level unless the formula sets another).

Tests are normal (Stata's) or t with Satterthwaite's df for the contrast ``g`` (lmerTest's, as
emmeans with ``lmer.df = "satterthwaite"``). Averaging over the data, as Stata does, equals
emmeans' reference grid (other covariates at their means) when the fixed part is linear in the
covariates averaged over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.inference.kenward_roger import KenwardRoger
from tiers.inference.predict import fixed_matrix
from tiers.inference.satterthwaite import DdfTests, Satterthwaite
from tiers.options import check_level, check_option
from tiers.results.result import FitResult

Kind = Literal["predictive", "dydx"]
KINDS: tuple[str, ...] = ("predictive", "dydx")
DDFS: tuple[str, ...] = ("normal", "satterthwaite", "kenward-roger")
#: Relative step of the central difference for a numeric variable's marginal effect.
STEP = 1e-5


def fixed_variables(res: FitResult) -> list[str]:
    """The data columns the fixed part is built from, in the data's order."""
    used = set(res.design.fixed_spec.variables)
    return [c for c in res.design.frame.data.columns if c in used]


def _is_factor(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def factor_levels(values: pd.Series) -> list[Any]:
    """A factor's levels in the order the fit coded them (a categorical's order, else sorted)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().unique())
        return [c for c in values.cat.categories if c in present]
    return sorted(values.dropna().unique().tolist())


def reference_level(res: FitResult, term: str, levels: list[Any]) -> Any:
    """The factor's base level as the fit coded it: the one level without a ``[T.level]`` column.

    Treatment coding names each other level's column ``...[T.level]`` (formulaic's, also for
    Stata's ``i.x``); with any other coding, the first level.
    """

    def codes_term(prefix: str) -> bool:
        return prefix in (term, f"C({term})") or prefix.startswith(f"C({term},")

    coded = [n for n in res.xnames if "[T." in n and codes_term(n.rsplit("[T.", 1)[0])]
    missing = [a for a in levels if not any(n.endswith(f"[T.{a}]") for n in coded)]
    return missing[0] if coded and len(missing) == 1 else levels[0]


def _set(data: pd.DataFrame, term: str, value: Any) -> pd.DataFrame:
    """``data`` with ``term`` set to ``value`` in every row, keeping a categorical's categories."""
    col = data[term]
    if isinstance(col.dtype, pd.CategoricalDtype):
        new = pd.Categorical([value] * len(data), categories=col.cat.categories)
        return data.assign(**{term: new})
    return data.assign(**{term: pd.Series([value] * len(data), index=data.index, dtype=col.dtype)})


def _mean_row(res: FitResult, data: pd.DataFrame) -> np.ndarray:
    return fixed_matrix(res, data).mean(axis=0)


def _derivative(res: FitResult, data: pd.DataFrame, term: str) -> np.ndarray:
    """Mean over the rows of ``dX_i / dx`` by a central difference (step scaled to ``x``)."""
    x = data[term].to_numpy(dtype=np.float64)
    h = STEP * max(1.0, float(np.std(x)), float(np.abs(x).max()))
    up = fixed_matrix(res, data.assign(**{term: x + h}))
    down = fixed_matrix(res, data.assign(**{term: x - h}))
    return (up - down).mean(axis=0) / (2.0 * h)


def _check_term(res: FitResult, term: str) -> pd.Series:
    variables = fixed_variables(res)
    if term not in variables:
        have = ", ".join(variables) if variables else "none: the fixed part is the intercept only"
        raise ValueError(
            f"{term!r} is not a variable of the model's fixed part ({res.formula.fixed}); "
            f"margins are for its variables: {have}"
        )
    return res.design.frame.data[term]


def _check_at(values: pd.Series, at: Sequence[Any] | None, term: str) -> list[Any] | None:
    if at is None:
        return None
    points = [at] if isinstance(at, str | int | float | np.number) else list(at)
    if not points:
        raise ValueError(f"at must list at least one value of {term!r}")
    if _is_factor(values):
        levels = factor_levels(values)
        bad = [a for a in points if a not in levels]
        if bad:
            raise ValueError(
                f"{bad[0]!r} is not a level of {term!r}; its levels: "
                f"{', '.join(map(str, levels[:20]))}"
            )
        return points
    try:
        nums = [float(a) for a in points]
    except (TypeError, ValueError):
        raise ValueError(
            f"at must be numbers for the numeric variable {term!r}; got {at!r}"
        ) from None
    if not np.all(np.isfinite(nums)):
        raise ValueError(f"at must be finite numbers; got {at!r}")
    return nums


def _contrasts(
    res: FitResult, term: str, values: pd.Series, at: list[Any] | None, kind: str
) -> list[tuple[str, np.ndarray]]:
    """(label, g) of each margin."""
    data = res.design.frame.data
    factor = _is_factor(values)
    if kind == "predictive":
        if at is None:
            if not factor:
                raise ValueError(
                    f"{term!r} is numeric: give the values to set it to, e.g. at=[...] "
                    "(Stata's margins, at(x = (...)))"
                )
            at = factor_levels(values)
        return [(str(a), _mean_row(res, _set(data, term, a))) for a in at]
    if factor:
        levels = factor_levels(values)
        ref = reference_level(res, term, levels)
        base = _mean_row(res, _set(data, term, ref))
        others = [a for a in (at if at is not None else levels) if a != ref]
        if not others:
            raise ValueError(f"dydx of the factor {term!r} needs a level other than {ref!r}")
        return [(f"{a} - {ref}", _mean_row(res, _set(data, term, a)) - base) for a in others]
    if at is None:
        return [("overall", _derivative(res, data, term))]
    return [(f"at {a:g}", _derivative(res, _set(data, term, a), term)) for a in at]


def margins(
    res: FitResult,
    term: str,
    at: Sequence[Any] | None = None,
    *,
    kind: str = "predictive",
    level: float = 0.95,
    ddf: str = "normal",
    satterthwaite: Satterthwaite | None = None,
    kenward_roger: KenwardRoger | None = None,
) -> pd.DataFrame:
    """Predictive margins or average marginal effects of one variable of the fixed part.

    Parameters
    ----------
    res : FitResult
    term : str
        A data column the fixed part uses (``"cses"``, ``"Machine"``).
    at : sequence, optional
        Values to set ``term`` to. Predictive margins: required for a numeric variable; a
        factor's default is each of its levels. Marginal effects: a numeric variable's effect at
        each value (default: at the observed values, one average); a factor's levels to compare
        with the fit's reference level (default: every other level).
    kind : {"predictive", "dydx"}
        Predictive margins (Stata's ``margins``) or average marginal effects (``dydx``).
    level : float
        Of the intervals.
    ddf : {"normal", "satterthwaite", "kenward-roger"}
        Normal (z) tests, or t with Satterthwaite's df, or with Kenward-Roger's df and adjusted
        SE (REML fits; pbkrtest's, as emmeans' default for lmer fits).
    satterthwaite, kenward_roger : optional
        The fit's derivatives or KR matrices (`tiers.LmmResult` keeps them); computed when not
        given.

    Returns
    -------
    DataFrame
        One row per margin: ``value, estimate, std_error, statistic, df, p_value, conf_low,
        conf_high`` (``df`` infinite for normal tests); ``attrs``: ``term``, ``kind``, ``level``,
        ``ddf``, ``nobs`` (the rows averaged over).

    Raises
    ------
    ValueError
        ``term`` is not a variable of the fixed part (the message lists them), a value of ``at``
        is not a level, or an option is not one of those allowed.
    """
    check_option(kind, KINDS, "kind")
    check_option(ddf, DDFS, "ddf")
    check_level(level)
    if not isinstance(term, str):
        raise ValueError(f"term must be the name of a variable; got {term!r}")
    values = _check_term(res, term)
    points = _check_at(values, at, term)
    tests: DdfTests | None = None
    if ddf == "satterthwaite":
        tests = satterthwaite or Satterthwaite.from_result(res)
    elif ddf == "kenward-roger":
        tests = kenward_roger or KenwardRoger.from_result(res)
    beta = np.asarray(res.beta)
    V = res.vcov.to_numpy()
    rows = []
    for label, g in _contrasts(res, term, values, points, kind):
        est = float(g @ beta)
        se = float(np.sqrt(max(g @ V @ g, 0.0)))
        if tests is not None:
            _, se, df, stat, p = tests.contest1d(g)
            q = float(stats.t.ppf(0.5 + level / 2.0, df))
        else:
            df, stat = np.inf, est / se if se > 0 else np.nan
            p = float(2.0 * stats.norm.sf(abs(stat)))
            q = float(stats.norm.ppf(0.5 + level / 2.0))
        rows.append(
            {"value": label, "estimate": est, "std_error": se, "statistic": stat, "df": df}
            | {"p_value": p, "conf_low": est - q * se, "conf_high": est + q * se}
        )
    out = pd.DataFrame(rows)
    out.attrs.update(term=term, kind=kind, level=level, ddf=ddf, nobs=res.nobs)
    return out
