"""`fit_moments`: the moment method from formula and data (see `tiers.moments.estimate`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tiers._threads import single_thread_blas
from tiers.design.design import build_design
from tiers.formula.types import Formula
from tiers.moments.estimate import backfit, two_crossed_intercepts, variance_components
from tiers.moments.result import MomentsResult


def fit_moments(formula: str | Formula, data: Any) -> MomentsResult:
    """Fit ``y ~ X + (1 | a) + (1 | b)`` by moments, for crossed designs too large to factor.

    The variance components are Gao and Owen's (2017) unbiased moment estimates from the OLS
    residuals; the fixed effects are GLS under them, computed by backfitting (Ghosh, Hastie and
    Owen 2022), with their standard errors. Time and memory are linear in the rows.

    Parameters
    ----------
    formula : str or Formula
        lme4 syntax with exactly two random intercepts, e.g. ``y ~ x + (1 | user) + (1 | item)``.
    data : pandas.DataFrame

    Returns
    -------
    MomentsResult

    Raises
    ------
    FormulaError, DataError
        Another random part, a nested pair of factors, or what `tiers.fit` refuses in the data.
    """
    start = time.perf_counter()
    design = build_design(formula, data)
    ia, ib = two_crossed_intercepts(design)
    ta, tb = design.terms[ia], design.terms[ib]
    y, X = design.frame.y, design.frame.X
    with single_thread_blas():
        beta_ols = np.linalg.lstsq(X, y, rcond=None)[0]
        variances, raw = variance_components(y - X @ beta_ols, ta.codes, tb.codes)
        s_a, s_b, s_e = (float(v) for v in variances)
        notes = [
            f"the moment estimate of the {name} variance was negative ({v:.3g}) and is set to 0"
            for name, v in zip((ta.name, tb.name, "residual"), raw, strict=True)
            if v < 0
        ]
        if s_e <= 0.0:
            s_e = float(np.var(y - X @ beta_ols))
        lam = (s_e / s_a if s_a > 0 else np.inf, s_e / s_b if s_b > 0 else np.inf)
        R, sweeps = backfit(
            np.column_stack([X, y]), ta.codes, ta.nlevels, tb.codes, tb.nlevels, lam
        )
        p = X.shape[1]
        xtvx = X.T @ R[:, :p] / s_e
        xtvy = X.T @ R[:, p] / s_e
        vcov = np.asarray(np.linalg.inv(0.5 * (xtvx + xtvx.T)), dtype=np.float64)
        beta = vcov @ xtvy
    notes.append(
        "standard errors of the fixed effects treat the variance components as known; the "
        "components themselves are reported without standard errors"
    )
    return MomentsResult(
        formula=str(formula),
        nobs=int(y.size),
        xnames=tuple(design.frame.xnames),
        beta=beta,
        vcov_beta=vcov,
        groups=(ta.name, tb.name),
        nlevels=(ta.nlevels, tb.nlevels),
        variances=np.array([s_a, s_b, s_e]),
        sweeps=sweeps,
        seconds=time.perf_counter() - start,
        notes=tuple(notes),
    )
