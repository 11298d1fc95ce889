"""Honest model comparison: side-by-side tables (Stata's ``estimates table``) and LR tests that
refuse comparisons the likelihoods cannot support.

REML maximises the likelihood of the residual contrasts ``K'y`` with ``K'X = 0``; two models with
different fixed effects use different ``K``, so their REML likelihoods describe different data and
their difference is not a likelihood ratio (Verbeke and Molenberghs 2000, sec. 5.7). Variance
components tested at zero lie on the boundary of the parameter space, so the LR statistic follows a
chi-bar-square mixture, not chi2 (Self and Liang 1987; Stram and Lee 1994).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tiers.errors import ComparisonError
from tiers.panel.estimators import PanelResult
from tiers.results.result import LmmResult


@dataclass(frozen=True, slots=True)
class LRTest:
    """A likelihood-ratio test of a smaller model (m0) against a larger one (m1)."""

    chi2: float
    df: int
    p_value: float
    test: str
    reason: str
    method: str
    loglik0: float
    loglik1: float
    refitted: bool

    def summary(self) -> str:
        """Stata-like text."""
        sign = ">=" if self.test.startswith("chibar2") else ">"
        lines = [
            f"Likelihood-ratio test ({self.method} fits{', refitted by ML' if self.refitted else ''})",
            f"  log likelihood: m0 = {self.loglik0:.6g}, m1 = {self.loglik1:.6g}",
            f"  LR {self.test} = {self.chi2:.2f}    Prob {sign} {self.test.split('(')[0]} = {self.p_value:.4f}",
            f"  {self.reason}",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "chi2": self.chi2,
            "df": self.df,
            "p_value": self.p_value,
            "test": self.test,
            "reason": self.reason,
            "method": self.method,
            "loglik0": self.loglik0,
            "loglik1": self.loglik1,
            "refitted": self.refitted,
        }


def _same_rows(m0: LmmResult, m1: LmmResult) -> None:
    if m0.nobs != m1.nobs or m0.data_signature != m1.data_signature:
        raise ComparisonError(
            f"the two models were fitted on different rows ({m0.nobs:,} and {m1.nobs:,} "
            "observations, or the same count of different rows): likelihoods of different data "
            "cannot be compared; drop the rows with missing values in either model's columns "
            "before fitting both"
        )


def lrtest(m0: LmmResult, m1: LmmResult, *, refit: bool = False) -> LRTest:
    """LR test of ``m0`` (the smaller model) against ``m1``.

    Parameters
    ----------
    m0, m1 : LmmResult
        Fitted to the same rows; ``m0`` nested in ``m1``.
    refit : bool
        When both are REML fits whose fixed effects differ, refit both by ML instead of refusing.

    Raises
    ------
    ComparisonError
        Different rows; different criteria (REML vs ML); REML fits with different fixed effects
        (unless ``refit``); ``m0`` not nested in ``m1``.
    """
    if not isinstance(m0, LmmResult) or not isinstance(m1, LmmResult):
        raise ComparisonError("lrtest compares two mixed-model fits from tiers.fit")
    _same_rows(m0, m1)
    if m0.reml != m1.reml:
        raise ComparisonError(
            "one model was fitted by REML and the other by ML: their likelihoods are different "
            "criteria; refit both the same way (refit(reml=False) for both)"
        )
    fixed_differ = list(m0.xnames) != list(m1.xnames)
    refitted = False
    if m0.reml and fixed_differ:
        if not refit:
            raise ComparisonError(
                "these REML fits have different fixed effects: a REML likelihood is the likelihood "
                "of residual contrasts that depend on the fixed effects, so the two describe "
                "different data and cannot be compared. Refit both by ML: "
                "lrtest(m0.refit(reml=False), m1.refit(reml=False)), or lrtest(m0, m1, refit=True), "
                "or --ml on the command line."
            )
        m0, m1 = m0.refit(reml=False), m1.refit(reml=False)
        refitted = True
    if m0.n_params > m1.n_params:
        m0, m1 = m1, m0
    matched = _matched_levels(m0, m1)
    if not (set(m0.xnames) <= set(m1.xnames) and matched == len(m0.levels)):
        raise ComparisonError(
            "the models are not nested: every fixed effect and every random-effect level of the "
            "smaller model must appear in the larger one"
        )
    df = m1.n_params - m0.n_params
    if df <= 0:
        raise ComparisonError("the two models have the same number of parameters: nothing to test")
    chi2 = max(2.0 * (m1.loglik - m0.loglik), 0.0)
    removed = len(m1.levels) - matched
    method = "ML" if not m0.reml else "REML"
    if removed and not fixed_differ and removed == df == 1:
        p = 0.5 * stats.chi2.sf(chi2, 1)
        test = "chibar2(01)"
        reason = (
            "One variance component is tested at zero, on the boundary of its range: the statistic "
            "follows a 50:50 mixture of chi2(0) and chi2(1) (Self and Liang 1987)."
        )
    elif removed:
        p = float(stats.chi2.sf(chi2, df))
        test = f"chi2({df})"
        reason = (
            f"{removed} variance component(s) are tested on the boundary; the chi2({df}) p-value is "
            "conservative (too large), as Stata notes; use a parametric bootstrap for an exact test."
        )
    else:
        p = float(stats.chi2.sf(chi2, df))
        test = f"chi2({df})"
        reason = "Only fixed effects differ: the usual chi2 reference distribution applies."
    return LRTest(
        float(chi2), int(df), float(p), test, reason, method, m0.loglik, m1.loglik, refitted
    )


def _partition_codes(res: LmmResult) -> list[np.ndarray]:
    nesting = res._refit_args.get("nesting")
    return [] if nesting is None else [gf.codes for gf in nesting.factors]


def _matched_levels(m0: LmmResult, m1: LmmResult) -> int:
    """How many levels of m0 partition the rows exactly as some level of m1 does (names may differ:
    ``school_id`` with unique ids is the same grouping as ``school_id:dist_id``)."""
    codes1 = _partition_codes(m1)
    matched = 0
    for c0 in _partition_codes(m0):
        n0 = int(c0.max()) + 1
        for c1 in codes1:
            if int(c1.max()) + 1 == n0 and np.unique(c0 * n0 + c1).size == n0:
                matched += 1
                break
    return matched


def _column(res: LmmResult | PanelResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(res, LmmResult):
        table = res.coef_table()
        for name, row in table.iterrows():
            out[f"b:{name}"] = (row.estimate, row.std_error)
        for _, row in res.varcorr.iterrows():
            out[f"sd:{row.group}"] = (row.sd, None)
        out.update(
            {
                "N": res.nobs,
                "groups": ", ".join(f"{k} {v:,}" for k, v in res.ngroups.items()),
                "ll": res.loglik,
                "aic": res.aic,
                "bic": res.bic,
                "method": res.method,
            }
        )
        return out
    for name, row in res.coef.iterrows():
        out[f"b:{'(Intercept)' if name == '_cons' else name}"] = (row.estimate, row.std_error)
    if res.sigma_u is not None:
        out["sd:sigma_u"] = (res.sigma_u, None)
    if res.sigma_e is not None:
        out["sd:Residual"] = (res.sigma_e, None)
    out.update(
        {
            "N": res.nobs,
            "groups": f"{res.ngroups:,}" if res.ngroups else "",
            "ll": None,
            "aic": None,
            "bic": None,
            "method": res.estimator,
        }
    )
    return out


def compare(*models: LmmResult | PanelResult, names: list[str] | None = None) -> pd.DataFrame:
    """A side-by-side table of coefficients (with SEs), SDs, log-likelihood, AIC, BIC, N and groups.

    Rows are ``b:<name>`` (estimate), ``se:<name>``, ``sd:<group>``, then the statistics.
    Log-likelihoods of panel estimators are left empty (they are not likelihood fits), and those
    of REML and ML fits are labelled by the ``method`` row so they are not compared by mistake.

    Raises
    ------
    ComparisonError
        The models were fitted to different numbers of rows.
    """
    if not models:
        raise ComparisonError("compare needs at least one model")
    names = names or [f"m{i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise ComparisonError(f"{len(names)} names for {len(models)} models")
    counts = {m.nobs for m in models}
    if len(counts) > 1:
        raise ComparisonError(
            f"the models were fitted on different numbers of rows ({', '.join(f'{c:,}' for c in sorted(counts))}): "
            "a side-by-side table would compare estimates from different samples; fit all models "
            "to the same rows"
        )
    cols = [_column(m) for m in models]
    coef_keys = list(dict.fromkeys(k for c in cols for k in c if k.startswith("b:")))
    sd_keys = list(dict.fromkeys(k for c in cols for k in c if k.startswith("sd:")))
    rows: dict[str, list[Any]] = {}
    for key in coef_keys:
        rows[key] = [c[key][0] if key in c else np.nan for c in cols]
        rows["se:" + key[2:]] = [c[key][1] if key in c else np.nan for c in cols]
    for key in sd_keys:
        rows[key] = [c[key][0] if key in c else np.nan for c in cols]
    for key in ("ll", "aic", "bic", "N", "groups", "method"):
        rows[key] = [c[key] if c[key] is not None else np.nan for c in cols]
    return pd.DataFrame(rows, index=names).T
