"""Standard errors and Wald intervals for the SDs, and the LR test against linear regression.

Stata's ``mixed`` reports each SD with a standard error from the observed information and a 95%
interval computed on the log scale: ``exp(log sd +- z se(log sd))``. Here the information is the
finite-difference Hessian (of the analytic gradient) of ``-2 log L`` in ``phi = (log sigma_k...,
log sigma)``, with beta profiled out. For ML that gives the variance block of the full inverse
information (the Schur complement identity); for REML beta is not a parameter of the criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.nested_scalar import NestedProblem
from tiers.optimize.minimize import fd_hessian

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SdInference:
    """SD estimates (levels outermost first, then the residual) with SEs and log-scale intervals.

    SEs and intervals are NaN for components estimated at zero (log scale undefined there; the
    profile interval of a later issue starts at 0). ``cov_log_sd`` is the covariance of the log SDs
    (NaN rows for zero components), used by the delta method for variance shares. ``names`` gives
    (group, term) of each SD, the residual last as ("Residual", "").
    """

    sd: FloatArray
    se: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    cov_log_sd: FloatArray
    names: tuple[tuple[str, str], ...] = ()


def _phi_gradient(problem: NestedProblem, phi: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
    """Gradient of the non-profiled -2 log L in phi = (log sigma_k, log sigma).

    Components that are not ``free`` are held at zero and get a zero gradient.
    """

    sigma2 = np.exp(2.0 * phi[-1])
    theta = np.where(free[:-1], np.exp(phi[:-1] - phi[-1]), 0.0)
    ev = problem.evaluate(theta, gradient=True)
    assert ev.parts_t is not None
    dld, dpw, dldrx = ev.parts_t
    nu = problem.n - problem.p if problem.reml else problem.n
    df_dt = dld + dpw / sigma2 + (dldrx if problem.reml else 0.0)
    chain = 2.0 * theta**2 * df_dt  # dt/dphi_k = 2t, dt/dphi_e = -2t
    g = np.zeros_like(phi)
    g[:-1] = np.where(free[:-1], chain, 0.0)
    g[-1] = -np.sum(chain) + 2.0 * sigma2 * (nu / sigma2 - ev.pwrss / sigma2**2)
    return g


def sd_inference(
    problem: NestedProblem,
    theta: FloatArray,
    sigma: float,
    *,
    level: float = 0.95,
    names: tuple[tuple[str, str], ...] = (),
) -> SdInference:
    """Observed-information SEs of the SDs and Wald intervals on the log scale (Stata's)."""
    from scipy import stats

    K = theta.size
    sd = np.append(theta * sigma, sigma)
    se = np.full(K + 1, np.nan)
    lo = np.full(K + 1, np.nan)
    hi = np.full(K + 1, np.nan)
    free = np.append(theta > 0, True)
    phi = np.log(np.where(free, sd, 1.0))
    # Only the free coordinates enter; zero components are held at zero.
    idx = np.flatnonzero(free)

    H = fd_hessian(lambda x: _phi_gradient(problem, x, free), phi, free)
    full_cov = np.full((K + 1, K + 1), np.nan)
    try:
        cov = np.linalg.inv(0.5 * H)  # information of log L is half the Hessian of -2 log L
    except np.linalg.LinAlgError:
        return SdInference(sd, se, lo, hi, level, full_cov, names)
    full_cov[np.ix_(idx, idx)] = cov
    var = np.diag(cov)
    z = stats.norm.ppf(0.5 + level / 2.0)
    ok = var > 0
    se_log = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), np.nan)
    with np.errstate(over="ignore"):  # a non-identified SD has an infinite upper bound
        se[idx] = sd[idx] * se_log
        lo[idx] = np.exp(phi[idx] - z * se_log)
        hi[idx] = np.exp(phi[idx] + z * se_log)
    return SdInference(sd, se, lo, hi, level, full_cov, names)


@dataclass(frozen=True, slots=True)
class LinearLRTest:
    """LR test of the mixed model against the linear model without random effects.

    ``kind`` is ``"chibar2(01)"`` for one variance component (half the chi2(1) tail: Self and Liang
    1987) and ``"chi2(k)"`` otherwise, which is conservative (Stata's note).
    """

    chi2: float
    df: int
    p_value: float
    kind: str
    conservative: bool


def lr_vs_linear(problem: ProfiledProblem, deviance: float, n_theta: int) -> LinearLRTest:
    """Compare with theta = 0 (no random effects) under the same criterion (REML vs REML, ML vs
    ML)."""
    from scipy import stats

    dev0 = problem.deviance(np.zeros(n_theta))
    chi2 = max(dev0 - deviance, 0.0)
    if n_theta == 1:
        return LinearLRTest(chi2, 1, float(0.5 * stats.chi2.sf(chi2, 1)), "chibar2(01)", False)
    k = n_theta
    return LinearLRTest(chi2, k, float(stats.chi2.sf(chi2, k)), f"chi2({k})", True)
