"""Fits over multiply imputed data sets combined by Rubin's rules (``mi estimate: mixed``, mice).

For a parameter with estimates ``q_j`` and squared standard errors ``u_j`` in the ``m`` fits
(Rubin 1987, eqs. 3.1.2-3.1.5): ``qbar = mean(q_j)``, within-imputation variance ``ubar =
mean(u_j)``, between-imputation variance ``b = var(q_j)`` (denominator ``m - 1``) and total
variance ``t = ubar + (1 + 1/m) b``. The relative increase in variance is ``riv = (1 + 1/m) b /
ubar``, the proportion of variance due to the missing data ``lambda = (1 + 1/m) b / t``.

Degrees of freedom (Barnard & Rubin 1999, eq. 3; van Buuren 2018, eqs. 2.30-2.32), with the
complete-data df ``dfcom``: ``df_old = (m - 1) / lambda^2``, ``df_obs = (dfcom + 1) / (dfcom + 3)
dfcom (1 - lambda)`` and ``df = df_old df_obs / (df_old + df_obs)``; the fraction of missing
information ``fmi = (riv + 2 / (df + 3)) / (1 + riv)``. These are mice's ``pool()`` numbers: for
the fixed effects ``dfcom`` is the residual df of the fit, ``nobs`` minus the parameters (lme4's
``df.residual``).

The variance components are pooled on the scale where their sampling distribution is closest to
normal, as Stata's ``mi estimate: mixed`` does: the log of each SD and Fisher's z (atanh) of each
correlation, with the observed-information SEs of one fit moved to that scale by the delta method
(``se(log sd) = se(sd) / sd``, ``se(z) = se(r) / (1 - r^2)``), pooled with ``dfcom`` infinite and
back-transformed (estimate and interval bounds). An SD estimated at zero in some fit has no log:
that component is not pooled, and a note says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.errors import ComparisonError
from tiers.options import check_level
from tiers.results.result import FitResult

RUBIN_COLUMNS = ("estimate", "ubar", "b", "t", "riv", "lambda", "fmi", "df", "std_error")


def rubin(q: np.ndarray, u: np.ndarray, dfcom: float) -> dict[str, float]:
    """Rubin's rules for one parameter: ``q`` the m estimates, ``u`` their squared SEs.

    ``dfcom`` may be ``inf`` (large-sample df, ``df_old``).
    """
    m = len(q)
    qbar, ubar = float(np.mean(q)), float(np.mean(u))
    b = float(np.var(q, ddof=1))
    t = ubar + (1.0 + 1.0 / m) * b
    riv = (1.0 + 1.0 / m) * b / ubar if ubar > 0 else np.inf
    lam = (1.0 + 1.0 / m) * b / t if t > 0 else np.nan
    df_old = (m - 1) / lam**2 if lam > 0 else np.inf
    if np.isinf(dfcom):
        df = df_old
    else:
        df_obs = (dfcom + 1.0) / (dfcom + 3.0) * dfcom * (1.0 - lam)
        df = df_obs if np.isinf(df_old) else df_old * df_obs / (df_old + df_obs)
    fmi = (riv + 2.0 / (df + 3.0)) / (1.0 + riv) if np.isfinite(df) else lam
    return {
        "estimate": qbar,
        "ubar": ubar,
        "b": b,
        "t": t,
        "riv": riv,
        "lambda": lam,
        "fmi": fmi,
        "df": df,
        "std_error": float(np.sqrt(t)),
    }


@dataclass(frozen=True)
class PooledResult:
    """Fits over ``m`` imputed data sets combined by Rubin's rules.

    Attributes
    ----------
    formula : str
    method : str
        ``REML`` or ``ML``, as every fit.
    m : int
        Number of fits.
    nobs : int
        Rows of each fit.
    fixed : DataFrame
        By fixed effect: ``estimate, std_error, statistic, df, p_value, conf_low, conf_high``
        and Rubin's parts ``ubar, b, t, riv, lambda, fmi, dfcom``.
    variance : DataFrame
        By variance parameter (``group, term`` as broom.mixed names them: ``sd__(Intercept)``,
        ``cor__(Intercept).Days``, ``sd__Observation``): the back-transformed ``estimate``,
        ``conf_low``, ``conf_high``, the ``scale`` pooled on (``log`` or ``atanh``), the pooled
        ``estimate_scaled`` and ``std_error_scaled`` there, ``riv``, ``lambda``, ``fmi``, ``df``.
    level : float
    notes : tuple of str
    """

    formula: str
    method: str
    m: int
    nobs: int
    fixed: pd.DataFrame
    variance: pd.DataFrame
    level: float
    notes: tuple[str, ...]

    def summary(self) -> str:
        """The pooled tables as text, in the spirit of Stata's ``mi estimate: mixed``."""
        from tiers.inference.pool_text import pooled_summary

        return pooled_summary(self)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """The pooled results as plain Python values (NaN and infinities as None)."""

        def clean(frame: pd.DataFrame) -> list[dict[str, Any]]:
            rows = frame.reset_index().to_dict(orient="records")
            return [
                {
                    k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                    for k, v in r.items()
                }
                for r in rows
            ]

        return {
            "formula": self.formula,
            "method": self.method,
            "m": self.m,
            "nobs": self.nobs,
            "level": self.level,
            "fixed_effects": clean(self.fixed.rename_axis("term")),
            "variance_components": clean(self.variance),
            "notes": list(self.notes),
        }


def _check_fits(fits: Sequence[Any]) -> list[FitResult]:
    fits = list(fits)
    if len(fits) < 2:
        raise ComparisonError(
            f"pool needs at least 2 fits (one per imputed data set); got {len(fits)}"
        )
    for i, f in enumerate(fits):
        if not isinstance(f, FitResult):
            raise ComparisonError(
                f"pool takes fits of tiers.fit; item {i + 1} is a {type(f).__name__}"
            )
    first = fits[0]
    for i, f in enumerate(fits[1:], start=2):
        if f.formula.text != first.formula.text:
            raise ComparisonError(
                f"fit {i} has formula {f.formula.text!r}, fit 1 {first.formula.text!r}: pool "
                "combines one model fitted to each imputed data set"
            )
        if f.nobs != first.nobs:
            raise ComparisonError(
                f"fit {i} used {f.nobs:,} rows, fit 1 {first.nobs:,}: imputed data sets have the "
                "same rows; a fit that dropped rows (missing values left) cannot be pooled"
            )
        if f.reml != first.reml:
            raise ComparisonError(f"fit {i} is {f.method}, fit 1 {first.method}: fit all alike")
        if f.xnames != first.xnames or [t.znames for t in f.terms] != [
            t.znames for t in first.terms
        ]:
            raise ComparisonError(
                f"fit {i} has other columns ({', '.join(f.xnames)}) than fit 1 "
                f"({', '.join(first.xnames)}): a factor's levels differ between the data sets"
            )
    return fits


def _fixed(fits: list[FitResult], level: float) -> pd.DataFrame:
    q = np.array([np.asarray(f.beta) for f in fits])
    u = np.array([np.diag(f.vcov.to_numpy()) for f in fits])
    dfcom = float(fits[0].nobs - fits[0].n_params)
    rows = []
    for j, name in enumerate(fits[0].xnames):
        r = rubin(q[:, j], u[:, j], dfcom)
        stat = r["estimate"] / r["std_error"]
        tq = float(stats.t.ppf(0.5 + level / 2.0, r["df"]))
        rows.append(
            {"term": name}
            | r
            | {
                "dfcom": dfcom,
                "statistic": stat,
                "p_value": float(2 * stats.t.sf(abs(stat), r["df"])),
            }
            | {"conf_low": r["estimate"] - tq * r["std_error"]}
            | {"conf_high": r["estimate"] + tq * r["std_error"]}
        )
    cols = ["estimate", "std_error", "statistic", "df", "p_value", "conf_low", "conf_high"]
    cols += ["ubar", "b", "t", "riv", "lambda", "fmi", "dfcom"]
    return pd.DataFrame(rows).set_index("term").rename_axis(None)[cols]


def _scaled(f: FitResult) -> list[tuple[str, str, str, float, float]]:
    """(group, term, scale, value, se) of each variance parameter on its pooling scale."""
    sdi, ci = f.sd_inference, f.corr_inference
    out = []
    for k, (group, term) in enumerate(sdi.names):
        name = "sd__Observation" if group == "Residual" else f"sd__{term}"
        sd, se = float(sdi.sd[k]), float(sdi.se[k])
        if sd > 0:
            out.append((group, name, "log", float(np.log(sd)), se / sd))
        else:  # on the boundary: no log, not pooled
            out.append((group, name, "log", np.nan, np.nan))
    for i, (group, a, b) in enumerate(ci.names):
        r, se = float(ci.estimate[i]), float(ci.se[i])
        if abs(r) < 1.0:
            out.append((group, f"cor__{b}.{a}", "atanh", float(np.arctanh(r)), se / (1.0 - r * r)))
        else:
            out.append((group, f"cor__{b}.{a}", "atanh", np.nan, np.nan))
    return out


def _variance(fits: list[FitResult], level: float) -> tuple[pd.DataFrame, list[str]]:
    per_fit = [_scaled(f) for f in fits]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    for k, (group, term, scale, _, _) in enumerate(per_fit[0]):
        q = np.array([p[k][3] for p in per_fit])
        u = np.array([p[k][4] for p in per_fit]) ** 2
        back = np.exp if scale == "log" else np.tanh
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(u))):
            notes.append(
                f"{term} of {group} not pooled: estimated on the boundary (an SD of zero or a "
                "correlation of +-1) or without a standard error in some fit"
            )
            rows.append({"group": group, "term": term, "scale": scale, "estimate": np.nan})
            continue
        r = rubin(q, u, np.inf)
        tq = float(stats.t.ppf(0.5 + level / 2.0, r["df"])) if np.isfinite(r["df"]) else z
        lo, hi = r["estimate"] - tq * r["std_error"], r["estimate"] + tq * r["std_error"]
        rows.append(
            {"group": group, "term": term, "scale": scale}
            | {"estimate": float(back(r["estimate"])), "conf_low": float(back(lo))}
            | {"conf_high": float(back(hi)), "estimate_scaled": r["estimate"]}
            | {"std_error_scaled": r["std_error"], "riv": r["riv"], "lambda": r["lambda"]}
            | {"fmi": r["fmi"], "df": r["df"]}
        )
    cols = ["group", "term", "estimate", "conf_low", "conf_high", "scale", "estimate_scaled"]
    cols += ["std_error_scaled", "riv", "lambda", "fmi", "df"]
    return pd.DataFrame(rows, columns=cols), notes


def pool(fits: Sequence[FitResult], *, level: float = 0.95) -> PooledResult:
    """Combine fits of one model to ``m`` imputed data sets by Rubin's rules.

    Parameters
    ----------
    fits : sequence of FitResult
        One `tiers.fit` of the same formula and method per imputed data set, each on the same
        number of rows.
    level : float
        Of the intervals (t with the Barnard-Rubin df).

    Returns
    -------
    PooledResult

    Raises
    ------
    ComparisonError
        Fewer than two fits, an item that is not a fit, or fits of different formulas, methods,
        numbers of rows or fixed-effect columns.
    """
    check_level(level)
    checked = _check_fits(fits)
    fixed = _fixed(checked, level)
    variance, notes = _variance(checked, level)
    first = checked[0]
    notes = [
        f"Rubin's rules over {len(checked)} imputations; fixed effects with Barnard-Rubin df "
        f"(complete-data df {first.nobs - first.n_params:,}); variance components pooled as log "
        "SDs and atanh correlations, back-transformed"
    ] + notes
    return PooledResult(
        formula=first.formula.text,
        method=first.method,
        m=len(checked),
        nobs=first.nobs,
        fixed=fixed,
        variance=variance,
        level=level,
        notes=tuple(notes),
    )
