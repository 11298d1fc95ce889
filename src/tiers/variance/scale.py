"""The variance parameters on the data scale, as lme4 names and orders them: per term its SDs and
correlations (lme4's ``"sdcor"`` scale), then the residual SD ``sigma``.

Profile and bootstrap intervals are reported on this scale; `SdCor` maps it to and from
``(theta, sigma)``, and `criterion` is the objective as a function of ``(theta, sigma)`` with beta
profiled out but sigma not:

    f(theta, sigma) = ldL2 + [ldRX2] + nu log(2 pi sigma^2) + pwrss / sigma^2,   nu = n [- p]

(the REML criterion for REML fits, the ML deviance for ML fits). Minimising over sigma gives the
profiled deviance the fit minimised, so ``f`` at the estimates equals the fitted criterion.

Names are lme4's (``confint(fit, oldNames = FALSE)``): ``sd_(Intercept)|Subject``,
``cor_Days.(Intercept)|Subject``, ``sigma``. Within a term the order is lme4's, column-major over
the lower triangle: ``sd_1, cor_21, ..., sd_2, ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.design.covariance import CovStructure
from tiers.engine.gaussian import ProfiledProblem
from tiers.variance.information import _corr_pairs, _n_sd, _theta_from, sd_corr

FloatArray = NDArray[np.float64]

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class _Block:
    cov: CovStructure
    theta: slice
    sd_at: tuple[int, ...]  # positions in p of the term's SDs (effect order)
    cor_at: tuple[int, ...]  # positions of its correlations (varparams' pair order)


@dataclass(frozen=True)
class SdCor:
    """The map between ``(theta, sigma)`` and the named SD/correlation vector ``p``.

    Attributes
    ----------
    names : tuple of str
        lme4's names, ``sigma`` last.
    kinds : tuple of str
        ``"sd"``, ``"cor"`` or ``"sigma"`` per entry.
    groups : tuple of str
        The grouping factor of each entry (``"Residual"`` for sigma).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    groups: tuple[str, ...]
    blocks: tuple[_Block, ...]
    n_theta: int

    @classmethod
    def from_terms(cls, terms: Sequence) -> SdCor:
        """From `tiers.results.TermInfo` values (theta order)."""
        names: list[str] = []
        kinds: list[str] = []
        groups: list[str] = []
        blocks = []
        n_theta = 0
        for t in terms:
            cov = CovStructure(t.covariance, t.q)
            n_sd = _n_sd(cov)
            pairs = _corr_pairs(cov)
            z = list(t.znames) if n_sd == cov.q else ["(all)"] * cov.q
            sd_at = [0] * n_sd
            cor_at = [0] * len(pairs)
            # lme4's order: column-major over the lower triangle of the SD/correlation matrix
            for j in range(cov.q):
                for i in range(j, cov.q):
                    if i == j and j < n_sd:
                        sd_at[j] = len(names)
                        names.append(f"sd_{z[j]}|{t.group}")
                        kinds.append("sd")
                        groups.append(t.group)
                    elif (i, j) in pairs:
                        cor_at[pairs.index((i, j))] = len(names)
                        label = f"{z[i]}.{z[j]}" if n_sd == cov.q else "(all)"
                        names.append(f"cor_{label}|{t.group}")
                        kinds.append("cor")
                        groups.append(t.group)
            blocks.append(_Block(cov, slice(t.start, t.stop), tuple(sd_at), tuple(cor_at)))
            n_theta = max(n_theta, t.stop)
        names.append("sigma")
        kinds.append("sigma")
        groups.append("Residual")
        return cls(tuple(names), tuple(kinds), tuple(groups), tuple(blocks), n_theta)

    @property
    def size(self) -> int:
        """Number of variance parameters (sigma included)."""
        return len(self.names)

    def from_theta(self, theta: FloatArray, sigma: float) -> FloatArray:
        """``p`` at ``(theta, sigma)``."""
        p = np.empty(self.size)
        for b in self.blocks:
            sd, R = sd_corr(b.cov, np.asarray(theta[b.theta]), sigma)
            p[list(b.sd_at)] = sd[: len(b.sd_at)]
            for k, (i, j) in enumerate(_corr_pairs(b.cov)):
                p[b.cor_at[k]] = R[i, j]
        p[-1] = sigma
        return p

    def to_theta(self, p: FloatArray) -> tuple[FloatArray, float]:
        """``(theta, sigma)`` at ``p``."""
        sigma = float(p[-1])
        theta = np.empty(self.n_theta)
        for b in self.blocks:
            sds = np.asarray(p[list(b.sd_at)], dtype=np.float64)
            cors = np.clip(np.asarray(p[list(b.cor_at)], dtype=np.float64), -1.0, 1.0)
            theta[b.theta] = _theta_from(b.cov, sds, cors, sigma)
        return theta, sigma

    def theta_bounds(self) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds of theta."""
        lo = np.concatenate([b.cov.lower() for b in self.blocks])
        hi = np.concatenate([b.cov.upper() for b in self.blocks])
        return lo, hi


def nu(problem: ProfiledProblem) -> int:
    """Degrees of freedom of the residual sum of squares: n - p (REML) or n (ML)."""
    return problem.n - problem.p if problem.reml else problem.n


def criterion(problem: ProfiledProblem, theta: FloatArray, sigma: float) -> float:
    """The REML criterion or ML deviance at ``(theta, sigma)``, beta profiled out, sigma not."""
    ev = problem.evaluate(theta)
    s2 = sigma * sigma
    f = ev.ldL2 + nu(problem) * (_LOG_2PI + np.log(s2)) + ev.pwrss / s2
    return float(f + (ev.ldRX2 if problem.reml else 0.0))


def fixed_criterion(problem: ProfiledProblem, theta: FloatArray, j: int, value: float) -> float:
    """The criterion at ``theta`` with ``beta_j`` held at ``value`` and sigma profiled out.

    Holding ``beta_j`` raises the penalised RSS by ``(value - beta_j(theta))^2 / U_jj(theta)``
    (``U = (X'V^-1X)^-1``); for REML fits this is the REML criterion extended by the fixed effects
    (``-2 log L(beta, theta, sigma) + log det(X'V^-1X / sigma^2)``), whose minimum over beta is
    the REML criterion itself.
    """
    ev = problem.evaluate(theta)
    beta = problem.beta(ev)
    U = problem.unscaled_vcov(ev)
    pwrss = ev.pwrss + (value - beta[j]) ** 2 / U[j, j]
    n_ = nu(problem)
    f = ev.ldL2 + n_ * (1.0 + _LOG_2PI + np.log(pwrss / n_))
    return float(f + (ev.ldRX2 if problem.reml else 0.0))
