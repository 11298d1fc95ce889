"""Variance parameters on Stata's scales, for any covariance structure: SDs and correlations, their
standard errors from the observed information, and Wald intervals (log scale for SDs, Fisher's z
for correlations), as Stata's ``mixed`` reports them.

The parameters ``phi`` are, term by term, the log SDs of the term's effects and the atanh of their
correlations (those the structure has), then ``log sigma``. The non-profiled criterion

    f(phi) = ldL2(theta) + [ldRX2(theta)] + nu log(2 pi sigma^2) + pwrss(theta) / sigma^2

(beta profiled out, which leaves the variance block of the inverse information unchanged) is
differentiated twice by finite differences; ``cov(phi) = 2 H^-1``. Components estimated at zero are
held there (their log is -inf): their SE and interval are reported as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.design.covariance import CovStructure
from tiers.engine.gaussian import ProfiledProblem
from tiers.optimize.minimize import value_hessian

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CorrInference:
    """Correlations between a term's effects, with SEs and Fisher-z intervals."""

    names: tuple[tuple[str, str, str], ...]  # (group, term1, term2)
    estimate: FloatArray
    se: FloatArray
    lower: FloatArray
    upper: FloatArray


def sd_corr(cov: CovStructure, theta_t: FloatArray, sigma: float) -> tuple[FloatArray, FloatArray]:
    """SDs (q,) and correlation matrix (q, q) of a term's effects on the data scale."""
    S = cov.covariance(theta_t) * sigma**2
    sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        R = S / np.outer(sd, sd)
    R[~np.isfinite(R)] = 0.0
    np.fill_diagonal(R, 1.0)
    return sd, R


def _corr_pairs(cov: CovStructure) -> list[tuple[int, int]]:
    if cov.kind == "unstructured":
        return [(i, j) for j in range(cov.q) for i in range(j + 1, cov.q)]
    if cov.kind == "exchangeable" and cov.q > 1:
        return [(1, 0)]  # one common correlation
    return []


def _n_sd(cov: CovStructure) -> int:
    return 1 if cov.kind in ("identity", "exchangeable") else cov.q


def _theta_from(cov: CovStructure, sds: FloatArray, corrs: FloatArray, sigma: float) -> FloatArray:
    """theta of one term from its SDs and correlations on the data scale."""
    q = cov.q
    if cov.kind == "identity":
        return np.array([sds[0] / sigma])
    if cov.kind == "independent":
        return sds / sigma
    if cov.kind == "exchangeable":
        return np.array([sds[0] / sigma, corrs[0]]) if q > 1 else np.array([sds[0] / sigma])
    R = np.eye(q)
    for (i, j), r in zip(_corr_pairs(cov), corrs, strict=True):
        R[i, j] = R[j, i] = r
    S = np.outer(sds, sds) * R / sigma**2
    try:
        T = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(S)
        _, T = np.linalg.qr((V * np.sqrt(np.clip(w, 0.0, None))).T)
        T = T.T
        T *= np.sign(np.diag(T) + (np.diag(T) == 0))
    return np.array([T[i, j] for j in range(q) for i in range(j, q)])


def var_inference(
    problem: ProfiledProblem,
    covs: list[CovStructure],
    groups: list[str],
    znames: list[tuple[str, ...]],
    slices: list[slice],
    theta: FloatArray,
    sigma: float,
    *,
    level: float = 0.95,
) -> tuple[object, CorrInference]:
    """SDs (then the residual) and correlations with observed-information SEs and intervals."""
    from scipy import stats

    from tiers.variance.sd import SdInference

    sd_rows, corr_rows, phi, kinds = [], [], [], []
    blocks = []
    for cov, group, names, sl in zip(covs, groups, znames, slices, strict=True):
        sd, R = sd_corr(cov, theta[sl], sigma)
        n_sd = _n_sd(cov)
        sds = sd[:n_sd]
        pairs = _corr_pairs(cov)
        corrs = np.array([R[i, j] for i, j in pairs])
        start = len(phi)
        for k in range(n_sd):
            sd_rows.append((group, names[k] if n_sd == cov.q else "(all)"))
            phi.append(np.log(sds[k]) if sds[k] > 0 else -np.inf)
            kinds.append("sd")
        for (i, j), r in zip(pairs, corrs, strict=True):
            corr_rows.append((group, names[i], names[j]))
            phi.append(np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12)))
            kinds.append("corr")
        blocks.append((cov, sl, start, n_sd, len(pairs)))
    phi.append(np.log(sigma))
    kinds.append("sd")
    phi_arr = np.array(phi)
    free = np.isfinite(phi_arr)
    # correlations of a term with a zero SD are not identified: hold them too
    for _cov, _sl, start, n_sd, n_corr in blocks:
        if not np.all(free[start : start + n_sd]):
            free[start + n_sd : start + n_sd + n_corr] = False
    nu = problem.n - problem.p if problem.reml else problem.n

    def criterion(x: FloatArray) -> float:

        s = float(np.exp(x[-1]))
        th = np.empty_like(theta)
        for cov, sl, start, n_sd, n_corr in blocks:
            sds = np.where(
                np.isfinite(x[start : start + n_sd]), np.exp(x[start : start + n_sd]), 0.0
            )
            corrs = np.tanh(x[start + n_sd : start + n_sd + n_corr])
            th[sl] = _theta_from(cov, sds, corrs, s)
        ev = problem.evaluate(th)
        f = ev.ldL2 + nu * np.log(2.0 * np.pi * s * s) + ev.pwrss / (s * s)
        return float(f + (ev.ldRX2 if problem.reml else 0.0))

    m = phi_arr.size
    cov_phi = np.full((m, m), np.nan)
    x0 = np.where(free, phi_arr, phi_arr)
    try:
        H = value_hessian(criterion, x0, free)
        idx = np.flatnonzero(free)
        cov_phi[np.ix_(idx, idx)] = np.linalg.inv(0.5 * H)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        pass
    z = stats.norm.ppf(0.5 + level / 2.0)
    var = np.diag(cov_phi)
    se_phi = np.where(var > 0, np.sqrt(np.where(var > 0, var, 1.0)), np.nan)
    kinds_arr = np.array(kinds)
    is_sd = kinds_arr == "sd"
    with np.errstate(over="ignore", invalid="ignore"):
        est = np.where(is_sd, np.exp(phi_arr), np.tanh(phi_arr))
        se = np.where(is_sd, est * se_phi, (1 - est**2) * se_phi)
        lo = np.where(is_sd, np.exp(phi_arr - z * se_phi), np.tanh(phi_arr - z * se_phi))
        hi = np.where(is_sd, np.exp(phi_arr + z * se_phi), np.tanh(phi_arr + z * se_phi))
    sd_idx = np.flatnonzero(is_sd)
    corr_idx = np.flatnonzero(~is_sd)
    sdi = SdInference(
        est[sd_idx],
        se[sd_idx],
        lo[sd_idx],
        hi[sd_idx],
        level,
        cov_phi[np.ix_(sd_idx, sd_idx)],
        tuple(sd_rows) + (("Residual", ""),),
    )
    ci = CorrInference(tuple(corr_rows), est[corr_idx], se[corr_idx], lo[corr_idx], hi[corr_idx])
    return sdi, ci
