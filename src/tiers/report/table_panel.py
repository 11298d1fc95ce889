"""A panel estimator's column in a publication table (`tiers.report.table`).

Stata's ``esttab`` puts ``xtreg, fe`` and ``xtreg, re`` next to ``mixed``; the same rows here:
coefficients (the constant as ``(Intercept)``), ``sigma_u`` as the id's intercept SD, ``sigma_e``
as the residual SD, ``rho`` as the id's ICC, Stata's within, between and overall R-squared, N and
groups. Panel estimators are not likelihood fits: their log-likelihood, AIC and BIC are empty.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tiers._lazy import stats
from tiers.panel.estimators import PanelResult

ESTIMATORS = {"pooled": "pooled OLS", "fe": "FE (within)", "re": "RE (GLS)"}

Cells = dict[tuple[str, str], tuple[str, str]]


def panel_column(
    res: PanelResult,
    *,
    statistic: str,
    stars: bool,
    level: float,
    digits: int,
    fmt: Callable[[float, int], str],
    marks: Callable[[float], str],
    residual: str,
) -> tuple[Cells, list[str]]:
    """One panel model's cells by (section, label) and its notes (the test it uses)."""
    cells: Cells = {}
    if res.df_resid is None:
        q, test = float(stats.norm.ppf(0.5 + level / 2.0)), "normal (z) tests"
    else:
        q = float(stats.t.ppf(0.5 + level / 2.0, res.df_resid))
        test = f"t tests with {res.df_resid:,} df"
    for name, r in res.coef.iterrows():
        label = "(Intercept)" if name == "_cons" else str(name)
        cells[("fixed", label)] = (fmt(r.estimate, digits), marks(r.p_value) if stars else "")
        below = (
            f"({fmt(r.std_error, digits)})"
            if statistic == "std_error"
            else f"[{fmt(r.estimate - q * r.std_error, digits)}, "
            f"{fmt(r.estimate + q * r.std_error, digits)}]"
        )
        cells[("fixed", f"{label} ")] = (below, "")
    group = res.id or "id"
    if res.sigma_u is not None:
        cells[("variance", f"SD (Intercept | {group})")] = (fmt(res.sigma_u, digits), "")
    if res.sigma_e is not None:
        cells[("variance", residual)] = (fmt(res.sigma_e, digits), "")
    if res.rho is not None:
        cells[("icc", f"ICC ({group})")] = (fmt(res.rho, digits), "")
    for kind in ("within", "between", "overall"):
        value = getattr(res, f"r2_{kind}")
        if value is not None:
            cells[("r2", f"R2 {kind}")] = (fmt(value, digits), "")
    cells[("fit", "N")] = (f"{res.nobs:,}", "")
    if res.ngroups:
        cells[("fit", f"Groups ({group})")] = (f"{res.ngroups:,}", "")
    cells[("fit", "Method")] = (ESTIMATORS.get(res.estimator, res.estimator), "")
    notes = [f"xtreg {res.estimator}, {test}, {res.vce} SEs"]
    if res.estimator == "fe":
        notes.append("sigma_u is the SD of the estimated fixed effects, not a variance estimate")
    return cells, notes


def method(res: object) -> str:
    """The estimation method a note names: REML, ML, or the panel estimator."""
    if isinstance(res, PanelResult):
        return ESTIMATORS.get(res.estimator, res.estimator)
    return str(getattr(res, "method", ""))


def signature(res: object) -> tuple[float, ...] | None:
    """The response's signature where the model keeps one (mixed models), else None."""
    sig = getattr(res, "data_signature", None)
    return None if sig is None or np.allclose(sig, 0.0) else tuple(sig)
