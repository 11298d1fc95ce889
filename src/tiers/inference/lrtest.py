"""Likelihood-ratio tests between two fits that refuse comparisons the likelihoods cannot support.

REML maximises the likelihood of the residual contrasts ``K'y`` with ``K'X = 0``; two models with
different fixed effects use different ``K``, so their REML likelihoods describe different data and
their difference is not a likelihood ratio (Verbeke and Molenberghs 2000, sec. 5.7). Variance
components tested at zero lie on the boundary of the parameter space, so the LR statistic follows a
chi-bar-square mixture, not chi2 (Self and Liang 1987; Stram and Lee 1994).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from tiers.errors import ComparisonError
from tiers.fitting import refit as refit_fit
from tiers.results.lrtest import LRTest
from tiers.results.result import FitResult


def _same_rows(m0: FitResult, m1: FitResult) -> None:
    if m0.nobs != m1.nobs or m0.data_signature != m1.data_signature:
        raise ComparisonError(
            f"the two models were fitted on different rows ({m0.nobs:,} and {m1.nobs:,} "
            "observations, or the same count of different rows): likelihoods of different data "
            "cannot be compared; drop the rows with missing values in either model's columns "
            "before fitting both"
        )


def lrtest(m0: FitResult, m1: FitResult, *, refit: bool = False) -> LRTest:
    """LR test of ``m0`` (the smaller model) against ``m1``.

    Parameters
    ----------
    m0, m1 : FitResult
        Fitted to the same rows; ``m0`` nested in ``m1``.
    refit : bool
        When both are REML fits whose fixed effects differ, refit both by ML instead of refusing.

    Raises
    ------
    ComparisonError
        Different rows; different criteria (REML vs ML); REML fits with different fixed effects
        (unless ``refit``); ``m0`` not nested in ``m1``.
    """
    if not isinstance(m0, FitResult) or not isinstance(m1, FitResult):
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
        m0, m1 = refit_fit(m0, reml=False), refit_fit(m1, reml=False)
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


def _partition_codes(res: FitResult) -> list[np.ndarray]:
    nesting = res.design.nesting
    return [] if nesting is None else [gf.codes for gf in nesting.factors]


def _matched_levels(m0: FitResult, m1: FitResult) -> int:
    """How many levels of m0 partition the rows exactly as some level of m1 does.

    Names may differ: ``school_id`` with unique ids is the same grouping as ``school_id:dist_id``.
    """
    codes1 = _partition_codes(m1)
    matched = 0
    for c0 in _partition_codes(m0):
        n0 = int(c0.max()) + 1
        for c1 in codes1:
            if int(c1.max()) + 1 == n0 and np.unique(c0 * n0 + c1).size == n0:
                matched += 1
                break
    return matched
