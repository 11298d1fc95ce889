"""Tidy (long) and glance (one-row) DataFrames of a fit, in the shape of R's broom.mixed.

`tidy` stacks the fixed effects, the variance parameters and, on request, the conditional modes
in one long table with broom.mixed's columns (``effect, group, term, estimate, std_error,
statistic, df, p_value, conf_low, conf_high``; R's dots written as underscores) and names
(``sd__(Intercept)``, ``cor__(Intercept).Days``, ``sd__Observation`` for the residual).
`glance` gives the fit statistics in one row, `augment` the data with fitted values and
residuals. Publication tables (`tiers.report.table`) are
built from these.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.inference.predict import ranef_frames
from tiers.inference.r2 import r2
from tiers.options import check_level, check_option
from tiers.results.result import FitResult
from tiers.variance.information import CorrInference, SdInference, variance_inference

DfMethod = Literal["normal", "satterthwaite"]
DF_METHODS: tuple[str, ...] = ("normal", "satterthwaite", "kenward-roger")
Effect = Literal["fixed", "ran_pars", "ran_vals"]
EFFECTS: tuple[str, ...] = ("fixed", "ran_pars", "ran_vals")
COLUMNS = (
    "effect",
    "group",
    "term",
    "estimate",
    "std_error",
    "statistic",
    "df",
    "p_value",
    "conf_low",
    "conf_high",
)


def variance_at_level(res: FitResult, level: float) -> tuple[SdInference, CorrInference]:
    """The variance parameters' SEs and Wald intervals at ``level`` (the result keeps 95%)."""
    sdi, ci = res.sd_inference, res.corr_inference
    if level != sdi.level:
        sdi, ci = variance_inference(
            res.devfun, res.design.terms, np.asarray(res.theta), res.sigma, level=level
        )
    return sdi, ci


def _fixed_rows(
    res: FitResult, level: float, ddf: str, tests: pd.DataFrame | None
) -> list[dict[str, Any]]:
    if ddf != "normal":
        if tests is None:
            raise ValueError(f"ddf={ddf!r} needs its coefficient table (tests)")
        return [
            {
                "effect": "fixed",
                "group": "",
                "term": name,
                "estimate": r.estimate,
                "std_error": r.std_error,
                "statistic": r.t,
                "df": r.df,
                "p_value": r.p_value,
                "conf_low": r.ci_lower,
                "conf_high": r.ci_upper,
            }
            for name, r in tests.iterrows()
        ]
    table = res.coef_table(level)
    return [
        {
            "effect": "fixed",
            "group": "",
            "term": name,
            "estimate": r.estimate,
            "std_error": r.std_error,
            "statistic": r.z,
            "df": np.inf,
            "p_value": r.p_value,
            "conf_low": r.ci_lower,
            "conf_high": r.ci_upper,
        }
        for name, r in table.iterrows()
    ]


def _ran_par_rows(res: FitResult, level: float) -> list[dict[str, Any]]:
    sdi, ci = variance_at_level(res, level)
    blank = {"statistic": np.nan, "df": np.nan, "p_value": np.nan}
    rows: list[dict[str, Any]] = []
    for k, (group, term) in enumerate(sdi.names[:-1]):
        rows.append(
            {"effect": "ran_pars", "group": group, "term": f"sd__{term}", "estimate": sdi.sd[k]}
            | {"std_error": sdi.se[k], "conf_low": sdi.lower[k], "conf_high": sdi.upper[k]}
            | blank
        )
        # broom.mixed's order: after each SD, that effect's correlations with the later ones
        for i, (g, a, b) in enumerate(ci.names):
            if g == group and b == term:
                rows.append(
                    {"effect": "ran_pars", "group": g, "term": f"cor__{b}.{a}"}
                    | {"estimate": ci.estimate[i], "std_error": ci.se[i]}
                    | {"conf_low": ci.lower[i], "conf_high": ci.upper[i]}
                    | blank
                )
    rows.append(
        {"effect": "ran_pars", "group": "Residual", "term": "sd__Observation"}
        | {"estimate": sdi.sd[-1], "std_error": sdi.se[-1]}
        | {"conf_low": sdi.lower[-1], "conf_high": sdi.upper[-1]}
        | blank
    )
    return rows


def _ran_val_rows(res: FitResult, level: float) -> list[dict[str, Any]]:
    q = float(stats.norm.ppf(0.5 + level / 2.0))
    rows: list[dict[str, Any]] = []
    for group, frame in ranef_frames(res, cond_var=True).items():
        effects = [c for c in frame.columns if not c.endswith("_sd")]
        for term in effects:
            sd = frame[f"{term}_sd"].to_numpy() if f"{term}_sd" in frame else None
            for i, (label, mode) in enumerate(zip(frame.index, frame[term], strict=True)):
                se = np.nan if sd is None else float(sd[i])
                rows.append(
                    {"effect": "ran_vals", "group": group, "level": str(label), "term": term}
                    | {"estimate": float(mode), "std_error": se}
                    | {"statistic": np.nan, "df": np.nan, "p_value": np.nan}
                    | {"conf_low": mode - q * se, "conf_high": mode + q * se}
                )
    return rows


def tidy(
    res: FitResult,
    *,
    effects: tuple[str, ...] = ("fixed", "ran_pars"),
    level: float = 0.95,
    ddf: str = "normal",
    tests: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One long table of a fit's estimates (broom.mixed's ``tidy``).

    Parameters
    ----------
    res : FitResult
    effects : tuple of {"fixed", "ran_pars", "ran_vals"}
        Which rows: fixed effects; variance parameters (SDs and correlations with observed-
        information SEs and Wald intervals, SDs on the log scale and correlations on Fisher's z,
        as Stata's); the conditional modes with their conditional SDs (then a ``level`` column).
    level : float
        Of the intervals.
    ddf : {"normal", "satterthwaite", "kenward-roger"}
        The fixed effects' reference distribution: normal (Stata's z; ``df`` infinite) or t with
        Satterthwaite's df (lmerTest's) or Kenward-Roger's (pbkrtest's, with its adjusted SE),
        which need ``tests``.
    tests : DataFrame, optional
        ``tiers.LmmResult.coef_table(level, ddf=ddf)`` (for t tests).

    Returns
    -------
    DataFrame
        Columns as broom.mixed's (see the module's docstring); ``attrs``: ``level``, ``ddf``.
    """
    check_level(level)
    check_option(ddf, DF_METHODS, "ddf")
    if isinstance(effects, str):
        effects = (effects,)
    for e in effects:
        check_option(e, EFFECTS, "each of effects")
    rows: list[dict[str, Any]] = []
    if "fixed" in effects:
        rows += _fixed_rows(res, level, ddf, tests)
    if "ran_pars" in effects:
        rows += _ran_par_rows(res, level)
    columns = list(COLUMNS)
    if "ran_vals" in effects:
        rows += _ran_val_rows(res, level)
        columns.insert(2, "level")
    out = pd.DataFrame(rows, columns=columns)
    if "level" in out:
        out["level"] = out["level"].fillna("")
    out.attrs.update(level=level, ddf=ddf)
    return out


def glance(res: FitResult) -> pd.DataFrame:
    """One row of fit statistics (broom.mixed's ``glance``, with R-squared and group counts).

    Columns: ``nobs, sigma, loglik, aic, bic, deviance`` (-2 log-likelihood of the ML fit at these
    estimates, as lme4's ``deviance(fit, REML = FALSE)``), ``reml_criterion`` (NaN for ML fits),
    ``df_residual`` (``nobs`` minus the parameters), ``method``, ``r2_marginal``,
    ``r2_conditional``, ``converged``, ``singular``, then ``ngroups_<factor>`` per grouping factor.
    """
    rsq = r2(res)
    row: dict[str, Any] = {
        "nobs": res.nobs,
        "sigma": res.sigma,
        "loglik": res.loglik,
        "aic": res.aic,
        "bic": res.bic,
        "deviance": res.deviance_ml(),
        "reml_criterion": res.criterion if res.reml else np.nan,
        "df_residual": res.nobs - res.n_params,
        "method": res.method,
        "r2_marginal": rsq.marginal,
        "r2_conditional": rsq.conditional,
        "converged": res.converged,
        "singular": res.is_singular,
    }
    row |= {f"ngroups_{name}": n for name, n in res.ngroups.items()}
    return pd.DataFrame([row])


def augment(res: FitResult) -> pd.DataFrame:
    """The rows used, with ``fitted`` (X beta + Z b), ``fixed`` (X beta) and ``resid`` columns.

    broom.mixed's ``augment`` (``.fitted``, ``.fixed``, ``.resid``), indexed by the input's row
    labels as `tiers.LmmResult.fitted` is.
    """
    from tiers.inference.predict import predict

    frame = res.design.frame
    fitted = predict(res, re="include")["mean"]
    out = frame.data.copy()
    out.index = fitted.index
    out["fitted"] = fitted.to_numpy()
    out["fixed"] = np.asarray(res.X) @ np.asarray(res.beta)
    out["resid"] = np.asarray(res.y) - out["fitted"].to_numpy()
    return out
