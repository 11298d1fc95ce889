"""Likelihood-ratio tests between two fits that refuse comparisons the likelihoods cannot support.

REML maximises the likelihood of the residual contrasts ``K'y`` with ``K'X = 0``; two models with
different fixed effects use different ``K``, so their REML likelihoods describe different data and
their difference is not a likelihood ratio (Verbeke and Molenberghs 2000, sec. 5.7).

The two models are compared term by term: the fixed effects added, and the variance parameters
added (`tiers.inference.vctest.variance_difference`: the grouping factors matched by the rows they
group, so crossed and nested models are compared alike). A variance tested at zero lies on the
boundary of its range, so the LR statistic follows a chi-bar-square mixture, not chi2 (Self and
Liang 1987; Stram and Lee 1994):

* nothing on the boundary (fixed effects, covariances, tied variances): chi2(df);
* exactly one variance added, with any number ``df - 1`` of other parameters (its covariances in
  an unstructured term, fixed effects): ``0.5 chi2(df - 1) + 0.5 chi2(df)`` (``chibar2(01)`` when
  df is 1), exact whatever the information matrix, since near H0 the alternative is a half-space;
* a residual structure added (`tiers.inference.residuals`): its parameters count in df;
  only CAR(1)'s phi = 0 is on the boundary;
* several variances added: the weights depend on the information matrix; the chi2(df) p-value
  is reported and marked conservative (too large), and ``tiers.vctest(m0, m1,
  method="bootstrap")`` gives an exact one when the fixed effects are the same.
"""

from __future__ import annotations

from tiers._lazy import stats
from tiers.errors import ComparisonError
from tiers.fitting import refit as refit_fit
from tiers.inference.residuals import with_residual_difference
from tiers.inference.vctest import (
    VarianceDifference,
    lr_statistic,
    mixture_p,
    mixture_reason,
    variance_difference,
)
from tiers.inference.weighted import check_likelihood_based
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
    """LR test of ``m0`` (the smaller model) against ``m1``, term by term.

    Parameters
    ----------
    m0, m1 : FitResult
        Fitted to the same rows; ``m0`` nested in ``m1`` (its fixed effects among m1's, each of its
        random-effects terms part of one of m1's; the order of the two does not matter).
    refit : bool
        When both are REML fits whose fixed effects differ, refit both by ML instead of refusing.

    Returns
    -------
    LRTest
        ``test`` names the reference distribution, ``reason`` says what differs between the models
        and why that reference; ``conservative`` marks a chi2 p-value that is an upper bound
        (several variances tested on the boundary). A negative statistic (the larger model fits
        worse: it did not reach its optimum) is set to 0 with a note in ``reason`` and a
        `ConvergenceWarning`.

    Raises
    ------
    ComparisonError
        Different rows; different criteria (REML vs ML); REML fits with different fixed effects
        (unless ``refit``); ``m0`` not nested in ``m1``.
    """
    if not isinstance(m0, FitResult) or not isinstance(m1, FitResult):
        raise ComparisonError("lrtest compares two mixed-model fits from tiers.fit")
    for m in (m0, m1):
        check_likelihood_based(m, "a likelihood-ratio test")
    _same_rows(m0, m1)
    if m0.reml != m1.reml:
        raise ComparisonError(
            "one model was fitted by REML and the other by ML: their likelihoods are different "
            "criteria; refit both the same way (refit(reml=False) for both)"
        )
    fixed_differ = set(m0.xnames) != set(m1.xnames)
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
    if not set(m0.xnames) <= set(m1.xnames):
        raise ComparisonError(
            "the models are not nested: every fixed effect of the smaller model must be in the "
            f"larger one (missing: {', '.join(sorted(set(m0.xnames) - set(m1.xnames)))})"
        )
    var = with_residual_difference(variance_difference(m0, m1), m0, m1)
    df = m1.n_params - m0.n_params
    if df <= 0:
        raise ComparisonError("the two models have the same number of parameters: nothing to test")
    k_fixed = len(m1.xnames) - len(m0.xnames)
    chi2, note = lr_statistic(m0, m1)
    test, p, reason, conservative = _reference(chi2, df, k_fixed, var)
    if note:
        reason = f"{reason} {note}"
    method = "ML" if not m0.reml else "REML"
    return LRTest(
        float(chi2),
        int(df),
        float(p),
        test,
        reason,
        method,
        m0.loglik,
        m1.loglik,
        refitted,
        conservative,
    )


def _reference(
    chi2: float, df: int, k_fixed: int, var: VarianceDifference
) -> tuple[str, float, str, bool]:
    """The reference distribution: its name, the p-value, why, and whether it is conservative."""
    fixed = f"{k_fixed} fixed effect(s)" if k_fixed else ""
    if var.same:
        return (
            f"chi2({df})",
            float(stats.chi2.sf(chi2, df)),
            f"Only fixed effects differ ({fixed} added; the random effects are the same): the "
            f"usual chi2({df}) reference distribution applies.",
            False,
        )
    tested = "; ".join(x for x in (fixed, var.described) if x)
    if var.n_boundary == 0:
        return (
            f"chi2({df})",
            float(stats.chi2.sf(chi2, df)),
            f"Tested: {tested}. No variance is tested at zero (every parameter tested is inside "
            f"its range): the usual chi2({df}) reference distribution applies.",
            False,
        )
    if var.n_boundary == 1 and not var.unknown:
        test = "chibar2(01)" if df == 1 else f"0.5 chi2({df - 1}) + 0.5 chi2({df})"
        return (
            test,
            mixture_p(chi2, df),
            f"Tested: {tested}. The variance is on the boundary: {mixture_reason(df)}.",
            False,
        )
    exact = (
        "for an exact p-value use tiers.vctest(m0, m1, method='bootstrap') (a parametric bootstrap)"
        if not k_fixed
        else "for exact tests compare the random parts with the same fixed effects "
        "(tiers.vctest(m0, m1, method='bootstrap')) and the fixed effects with the same random part"
    )
    return (
        f"chi2({df})",
        float(stats.chi2.sf(chi2, df)),
        f"Tested: {tested}. {var.n_boundary} variance(s) tested at zero, on the boundary of "
        f"their range, where the weights of the chi-bar-square mixture are not known in closed "
        f"form ({var.unknown}): the chi2({df}) p-value is conservative (too large), as Stata "
        f"notes; {exact}.",
        True,
    )
