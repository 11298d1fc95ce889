"""The observed information of the variance parameters.

SDs and correlations with standard errors and Wald intervals, as Stata's ``mixed`` reports them (log
scale for SDs, Fisher's z for correlations).

The parameters ``phi`` are, term by term, the log SDs of the term's effects and the atanh of their
correlations (those the structure has), then ``log sigma``. The criterion with beta profiled out
and sigma free (`tiers.engine.gaussian.criterion_value`) is differentiated twice and
``cov(phi) = 2 H^-1`` (the information of log L is half the Hessian of -2 log L; profiling beta
out leaves the variance block of the inverse information unchanged, by the Schur complement
identity). Two routes to ``H``, one result:

* engines whose evaluation carries the derivatives of (ldL2, pwrss, ldRX2) in ``t = theta^2``
  (``Evaluation.parts_t``: nested or crossed random intercepts) give the criterion's analytic
  gradient in
  ``phi``; ``H`` is its central difference (accurate to ~1e-10);
* otherwise ``H`` is the second difference of the criterion's values.

Components estimated at zero are held there (their log is -inf): their SE and interval are
reported as missing, and so are correlations of a term with a zero SD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tiers._tails import normal_quantile
from tiers.design.terms import TermSpec
from tiers.engine.contract import Engine
from tiers.engine.gaussian import criterion_value, residual_df
from tiers.optimize.derivatives import gradient_hessian, value_hessian
from tiers.variance.scale import corr_pairs, n_sd, sd_corr, theta_from

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SdInference:
    """SD estimates (terms in theta order, then the residual) with SEs and log-scale intervals.

    SEs and intervals are NaN for components estimated at zero. ``cov_log_sd`` is the covariance
    of the log SDs (NaN rows for zero components), used by the delta method for variance shares.
    ``names`` gives (group, term) of each SD, the residual last as ("Residual", "").
    """

    sd: FloatArray
    se: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    cov_log_sd: FloatArray
    names: tuple[tuple[str, str], ...] = ()

    def variance_scale(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Variances with their SEs and intervals, as Stata's ``var()`` rows.

        The same observed information: ``se(var) = 2 sd se(sd)`` (delta method) and the interval
        on the log scale, ``exp(2 * bounds of log sd)`` (the SD bounds squared).
        """
        return self.sd**2, 2.0 * self.sd * self.se, self.lower**2, self.upper**2


def _empty() -> FloatArray:
    return np.empty(0)


@dataclass(frozen=True, slots=True)
class CorrInference:
    """Correlations between a term's effects, with SEs and Fisher-z intervals.

    ``cov`` are the matching covariances ``r sd1 sd2`` with delta-method SEs from the covariance
    of (log sd1, log sd2, atanh r) and symmetric Wald intervals (Stata's ``cov()`` rows).
    """

    names: tuple[tuple[str, str, str], ...]  # (group, term1, term2)
    estimate: FloatArray
    se: FloatArray
    lower: FloatArray
    upper: FloatArray
    cov: FloatArray = field(default_factory=_empty)
    cov_se: FloatArray = field(default_factory=_empty)
    cov_lower: FloatArray = field(default_factory=_empty)
    cov_upper: FloatArray = field(default_factory=_empty)


@dataclass(frozen=True)
class Layout:
    """Where each term's SDs and correlations sit in ``phi``."""

    blocks: tuple[tuple[TermSpec, slice, int, int, int], ...]  # spec, theta slice, start, nsd, ncor
    sd_rows: tuple[tuple[str, str], ...]
    corr_rows: tuple[tuple[str, str, str], ...]
    phi: FloatArray
    is_sd: BoolArray
    free: BoolArray


def layout(specs: list[TermSpec], theta: FloatArray, sigma: float) -> Layout:
    """Where each term's SDs and correlations sit in ``phi``, and ``phi`` at the estimates."""
    sd_rows: list[tuple[str, str]] = []
    corr_rows: list[tuple[str, str, str]] = []
    phi: list[float] = []
    kinds: list[bool] = []
    blocks = []
    at = 0
    for t in specs:
        cov = t.cov
        sl = slice(at, at + cov.n_theta)
        at += cov.n_theta
        sd, R = sd_corr(cov, theta[sl], sigma)
        nsd = n_sd(cov)
        pairs = corr_pairs(cov)
        start = len(phi)
        for k in range(nsd):
            sd_rows.append((t.name, t.znames[k] if nsd == cov.q else "(all)"))
            phi.append(float(np.log(sd[k])) if sd[k] > 0 else -np.inf)
            kinds.append(True)
        for i, j in pairs:
            corr_rows.append((t.name, t.znames[i], t.znames[j]))
            phi.append(float(np.arctanh(np.clip(R[i, j], -1 + 1e-12, 1 - 1e-12))))
            kinds.append(False)
        blocks.append((t, sl, start, nsd, len(pairs)))
    phi.append(float(np.log(sigma)))
    kinds.append(True)
    phi_arr = np.array(phi)
    free = np.isfinite(phi_arr)
    for _t, _sl, start, nsd, ncor in blocks:
        if not np.all(free[start : start + nsd]):
            free[start + nsd : start + nsd + ncor] = False
    return Layout(tuple(blocks), tuple(sd_rows), tuple(corr_rows), phi_arr, np.array(kinds), free)


def theta_at(lay: Layout, x: FloatArray, n_theta: int) -> tuple[FloatArray, float]:
    """Theta and sigma at the parameters ``x`` (log SDs, atanh correlations, log sigma)."""
    s = float(np.exp(x[-1]))
    th = np.empty(n_theta)
    for t, sl, start, nsd, ncor in lay.blocks:
        logs = x[start : start + nsd]
        sds = np.where(np.isfinite(logs), np.exp(logs), 0.0)
        corrs = np.tanh(x[start + nsd : start + nsd + ncor])
        th[sl] = theta_from(t.cov, sds, corrs, s)
    return th, s


def _phi_gradient(engine: Engine, x: FloatArray, free: BoolArray) -> FloatArray:
    """Analytic gradient of the criterion in phi = (log sd_k, log sigma), scalar terms only.

    With ``t_k = theta_k^2 = exp(2 (phi_k - phi_e))``, ``df/dphi_k = 2 t_k df/dt_k`` and
    ``df/dphi_e = -sum_k 2 t_k df/dt_k + 2 (nu - pwrss / sigma^2)``.
    """
    sigma2 = float(np.exp(2.0 * x[-1]))
    theta = np.where(free[:-1], np.exp(x[:-1] - x[-1]), 0.0)
    ev = engine.evaluate(theta, gradient=True)
    if ev.parts_t is None:  # pragma: no cover - only called when the engine fills parts_t
        raise RuntimeError(f"the {engine.label} engine gives no derivative parts")
    dld, dpw, dldrx = ev.parts_t
    nu = residual_df(engine.n, engine.p, engine.reml)
    df_dt = dld + dpw / sigma2 + (dldrx if engine.reml else 0.0)
    chain = 2.0 * theta**2 * df_dt
    g = np.zeros_like(x)
    g[:-1] = np.where(free[:-1], chain, 0.0)
    g[-1] = -np.sum(chain) + 2.0 * (nu - ev.pwrss / sigma2)
    return g


def variance_inference(
    engine: Engine,
    specs: list[TermSpec],
    theta: FloatArray,
    sigma: float,
    *,
    level: float = 0.95,
) -> tuple[SdInference, CorrInference]:
    """SDs (then the residual) and correlations with observed-information SEs and intervals.

    Parameters
    ----------
    engine : Engine
        The fit's engine (same criterion, REML or ML).
    specs : list of TermSpec
        The random-effects terms in theta order.
    theta, sigma
        The estimates.
    level : float
        Confidence level of the Wald intervals.
    """
    theta = np.asarray(theta, dtype=np.float64)
    lay = layout(specs, theta, sigma)
    phi, free = lay.phi, lay.free
    m = phi.size
    cov_phi = np.full((m, m), np.nan)
    analytic = engine.has_gradient and all(t.q == 1 for t in specs)
    if analytic:
        analytic = engine.evaluate(theta, gradient=True).parts_t is not None
    x0 = np.where(free, phi, 0.0)
    idx = np.flatnonzero(free)
    try:
        if analytic:
            H = gradient_hessian(lambda x: _phi_gradient(engine, x, free), x0, free)
        else:

            def criterion(x: FloatArray) -> float:
                th, s = theta_at(lay, np.where(free, x, phi), theta.size)
                ev = engine.evaluate(th)
                return criterion_value(
                    ev.ldL2,
                    ev.ldRX2,
                    ev.pwrss,
                    residual_df(engine.n, engine.p, engine.reml),
                    engine.reml,
                    s,
                )

            H = value_hessian(criterion, x0, free)
        cov_phi[np.ix_(idx, idx)] = np.linalg.inv(0.5 * H)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        pass
    return summarise(lay, cov_phi, level)


def summarise(lay: Layout, cov_phi: FloatArray, level: float) -> tuple[SdInference, CorrInference]:
    """SDs and correlations with SEs and Wald intervals from a covariance of ``phi``.

    The observed information's (`variance_inference`) or a sandwich's (`tiers.variance.robust`).
    """
    phi, is_sd = lay.phi, lay.is_sd
    z = normal_quantile(0.5 + level / 2.0)
    var = np.diag(cov_phi)
    se_phi = np.where(var > 0, np.sqrt(np.where(var > 0, var, 1.0)), np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        est = np.where(is_sd, np.exp(phi), np.tanh(phi))
        se = np.where(is_sd, est * se_phi, (1 - est**2) * se_phi)
        lo = np.where(is_sd, np.exp(phi - z * se_phi), np.tanh(phi - z * se_phi))
        hi = np.where(is_sd, np.exp(phi + z * se_phi), np.tanh(phi + z * se_phi))
    sd_idx = np.flatnonzero(is_sd)
    corr_idx = np.flatnonzero(~is_sd)
    sdi = SdInference(
        est[sd_idx],
        se[sd_idx],
        lo[sd_idx],
        hi[sd_idx],
        level,
        cov_phi[np.ix_(sd_idx, sd_idx)],
        lay.sd_rows + (("Residual", ""),),
    )
    cov, cov_se = _covariances(lay, est, cov_phi)
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
    return sdi, ci


def _covariances(
    lay: Layout, est: FloatArray, cov_phi: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Covariances ``r sd_i sd_j`` of each correlation's pair, with delta-method SEs.

    The gradient of ``r sd_i sd_j`` in (log sd_i, log sd_j, atanh r) is
    ``(cov, cov, sd_i sd_j (1 - r^2))``; an exchangeable term's one SD gets both log-SD terms.
    """
    cov, cov_se = [], []
    for t, _sl, start, nsd, _ncor in lay.blocks:
        for k, (i, j) in enumerate(corr_pairs(t.cov)):
            a, b, c = start + min(i, nsd - 1), start + min(j, nsd - 1), start + nsd + k
            value = est[c] * est[a] * est[b]
            grad = {a: 0.0, b: 0.0, c: est[a] * est[b] * (1.0 - est[c] ** 2)}
            grad[a] += value
            grad[b] += value
            idx = list(grad)
            g = np.array([grad[p] for p in idx])
            var = float(g @ cov_phi[np.ix_(idx, idx)] @ g)
            cov.append(value)
            cov_se.append(np.sqrt(var) if var >= 0 else np.nan)
    return np.array(cov), np.array(cov_se)
