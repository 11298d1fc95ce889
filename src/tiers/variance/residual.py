"""Observed information with a residual structure: random-effects SDs and residual parameters.

The parameters ``phi`` are those of `tiers.variance.information` (log SDs and atanh correlations of
the random effects, then ``log sigma``) with the residual structure's unconstrained ``rho``
(`tiers.design.residual_params`) placed before ``log sigma``. ``cov(phi) = 2 H^-1`` from second
differences of the criterion (beta profiled out, sigma free), as in nlme's ``apVar``. The residual
parameters' Wald intervals are formed on the unconstrained scale and mapped back (nlme's
``intervals``); the correlations of unstructured residuals, which depend on several ``rho``, get
delta-method SEs and Fisher-z intervals (Stata's); so do Toeplitz and MA lag correlations.

Where the likelihood is nearly flat in one direction (an SD near zero tied to phi), nlme's
``apVar`` (``fdHess`` with relStep ``eps^(1/3)``, about 6e-6) is dominated by rounding and its
intervals differ from these (AR(1) with gaps: phi 0.339-0.725 against 0.394-0.694); nlme's own
function differentiated accurately (Richardson extrapolation) gives tiers' intervals
(``tests/data/rside/make_rside_hessian.R``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tiers.design.residual_params import ResidualParams
from tiers.design.terms import TermSpec
from tiers.engine.contract import Engine
from tiers.engine.gaussian import criterion_value, residual_df
from tiers.optimize.derivatives import value_hessian
from tiers.variance.information import (
    CorrInference,
    SdInference,
    _covariances,
    layout,
    theta_at,
)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ResidualInference:
    """The residual structure's parameters on their natural scale, with SEs and Wald intervals.

    Attributes
    ----------
    structure : str
        The structure in words (``AR(1), in wave``).
    names : tuple of str
        ``phi``, ``rho``, ``corr(1,2)``, ``sd ratio mode=b``, ...
    estimate, se, lower, upper : arrays
    unconstrained : array
        The optimizer's ``rho``.
    level : float
    reference : str or None
        The stratum (or occasion) whose SD ratio is 1: sigma is its residual SD.
    unconstrained_se : array
        The SEs of ``rho`` on the optimizer's scale.
    """

    structure: str
    names: tuple[str, ...]
    estimate: FloatArray
    se: FloatArray
    lower: FloatArray
    upper: FloatArray
    unconstrained: FloatArray
    level: float
    reference: str | None = None
    unconstrained_se: FloatArray = field(default_factory=lambda: np.zeros(0))


def residual_inference(
    engine: Engine,
    params: ResidualParams,
    specs: list[TermSpec],
    theta: FloatArray,
    sigma: float,
    *,
    level: float = 0.95,
) -> tuple[SdInference, CorrInference, ResidualInference]:
    """SDs, correlations and the residual parameters with observed-information intervals.

    Parameters
    ----------
    engine : Engine
        The fit's engine (parameters ``(theta, rho)``).
    params : ResidualParams
    specs : list of TermSpec
        The random-effects terms in theta order.
    theta : array
        ``(theta, rho)`` at the estimates.
    sigma : float
    level : float
    """
    from scipy import stats

    full = np.asarray(theta, dtype=np.float64)
    n_rho = params.n_rho
    n_re = full.size - n_rho
    th, rho = full[:n_re], full[n_re:]
    lay = layout(specs, th, sigma)
    m_re = lay.phi.size - 1  # the layout's parameters before log sigma
    phi = np.concatenate([lay.phi[:-1], rho, lay.phi[-1:]])
    free = np.concatenate([lay.free[:-1], np.ones(n_rho, dtype=bool), lay.free[-1:]])
    is_sd = np.concatenate([lay.is_sd[:-1], np.zeros(n_rho, dtype=bool), lay.is_sd[-1:]])
    nu = residual_df(engine.n, engine.p, engine.reml)

    def criterion(x: FloatArray) -> float:
        x = np.where(free, x, phi)
        re = np.concatenate([x[:m_re], x[-1:]])
        t_re, s = theta_at(lay, re, n_re)
        ev = engine.evaluate(np.concatenate([t_re, x[m_re : m_re + n_rho]]))
        return criterion_value(ev.ldL2, ev.ldRX2, ev.pwrss, nu, engine.reml, s)

    m = phi.size
    cov_phi = np.full((m, m), np.nan)
    idx = np.flatnonzero(free)
    x0 = np.where(free, phi, 0.0)
    try:
        H = value_hessian(criterion, x0, free)
        cov_phi[np.ix_(idx, idx)] = np.linalg.inv(0.5 * H)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        pass
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    var = np.diag(cov_phi)
    se_phi = np.where(var > 0, np.sqrt(np.where(var > 0, var, 1.0)), np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        est = np.where(is_sd, np.exp(phi), np.tanh(phi))
        se = np.where(is_sd, est * se_phi, (1 - est**2) * se_phi)
        lo = np.where(is_sd, np.exp(phi - z * se_phi), np.tanh(phi - z * se_phi))
        hi = np.where(is_sd, np.exp(phi + z * se_phi), np.tanh(phi + z * se_phi))
    keep = np.r_[0:m_re, m - 1]  # the random effects' rows and log sigma
    kis = is_sd[keep]
    sd_idx, corr_idx = keep[kis], keep[~kis]
    sdi = SdInference(
        est[sd_idx],
        se[sd_idx],
        lo[sd_idx],
        hi[sd_idx],
        level,
        cov_phi[np.ix_(sd_idx, sd_idx)],
        lay.sd_rows + (("Residual", ""),),
    )
    sub = cov_phi[np.ix_(keep, keep)]
    cov, cov_se = _covariances(lay, est[keep], sub)
    ci = CorrInference(
        lay.corr_rows,
        est[corr_idx],
        se[corr_idx],
        lo[corr_idx],
        hi[corr_idx],
        cov,
        cov_se,
        cov - z * cov_se,
        cov + z * cov_se,
    )
    rows = slice(m_re, m_re + n_rho)
    rinf = _residual_rows(params, rho, cov_phi[rows, rows], z, level)
    return sdi, ci, rinf


def _residual_rows(
    params: ResidualParams, rho: FloatArray, cov_rho: FloatArray, z: float, level: float
) -> ResidualInference:
    """Natural-scale estimates, delta-method SEs and back-mapped Wald intervals."""
    est = params.natural(rho)
    n = rho.size
    J = np.empty((n, n))
    for j in range(n):
        h = 1e-6 * max(1.0, abs(rho[j]))
        up, dn = rho.copy(), rho.copy()
        up[j] += h
        dn[j] -= h
        J[:, j] = (params.natural(up) - params.natural(dn)) / (2.0 * h)
    with np.errstate(invalid="ignore"):
        var_nat = np.einsum("ij,jk,ik->i", J, cov_rho, J)
        se = np.where(var_nat >= 0, np.sqrt(np.abs(var_nat)), np.nan)
        se_rho = np.sqrt(np.where(np.diag(cov_rho) >= 0, np.diag(cov_rho), np.nan))
        if params.spec.kind in ("unstructured", "banded", "toeplitz", "ma"):
            # each correlation depends on several rho: Fisher's z with the delta-method SE
            k = params.n_corr
            r = est[:k]
            zse = se[:k] / (1.0 - r**2)
            lo_c, hi_c = np.tanh(np.arctanh(r) - z * zse), np.tanh(np.arctanh(r) + z * zse)
            lo_r = np.exp(rho[k:] - z * se_rho[k:])
            hi_r = np.exp(rho[k:] + z * se_rho[k:])
            lower, upper = np.concatenate([lo_c, lo_r]), np.concatenate([hi_c, hi_r])
        else:
            # elementwise increasing maps: the interval's ends map to the ends
            lower = params.natural(rho - z * se_rho)
            upper = params.natural(rho + z * se_rho)
    return ResidualInference(
        params.spec.describe(),
        params.names,
        est,
        se,
        lower,
        upper,
        rho.copy(),
        level,
        params.ratio_reference,
        se_rho,
    )
