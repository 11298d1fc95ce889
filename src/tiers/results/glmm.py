"""The frozen value of a fitted GLMM: estimates, their covariance and what was read off the fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.optimize.minimize import OptSummary

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class GlmmTerm:
    """One random-effects term at the optimum.

    Attributes
    ----------
    group : str
    znames : tuple of str
    covariance : array (q, q)
        The effects' covariance on the linear predictor's scale (``T T'``: no sigma in a GLMM).
    b : array (nlevels, q)
        Conditional modes (lme4's ``ranef``).
    cond_var : array (nlevels, q, q)
        Conditional covariances of the modes (lme4's ``condVar``).
    levels : tuple of str
        The groups' labels.
    """

    group: str
    znames: tuple[str, ...]
    covariance: FloatArray
    b: FloatArray
    cond_var: FloatArray
    levels: tuple[str, ...]

    @property
    def sd(self) -> FloatArray:
        """Standard deviations of the effects."""
        return np.sqrt(np.diag(self.covariance))

    @property
    def corr(self) -> FloatArray:
        """Correlations of the effects (identity for q = 1, NaN rows for a zero SD)."""
        sd = self.sd
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.covariance / np.outer(sd, sd)


@dataclass(frozen=True)
class GlmmFit:
    """A fitted generalized linear mixed model.

    Attributes
    ----------
    formula : str
    family, link : str
    nagq : int
        Quadrature points (1: Laplace).
    nobs : int
    xnames : tuple of str
    beta : array (p,)
    vcov : array (p, p)
        Twice the inverse of the deviance's Hessian over (theta, beta), restricted to beta
        (lme4's ``vcov`` with ``use.hessian = TRUE``).
    theta : array
    theta_names : tuple of str
    theta_se : array
        Wald standard errors of theta from the same Hessian (NaN at a bound).
    terms : tuple of GlmmTerm
    deviance : float
        Minus twice the approximate log-likelihood (with the binomial coefficients / ``log y!``).
    saturated : float
        Minus twice the saturated model's log-likelihood; lme4's ``-2 logLik`` for ``nAGQ > 1`` is
        ``deviance - saturated``.
    eta, mu : arrays (nobs,)
        Conditional linear predictor and mean at the modes.
    offset : array (nobs,)
    offset_terms : tuple of str
        The offset's expressions (``log(exposure)``), evaluated again on new data.
    ngroups : dict
    opt : OptSummary
        Over ``(theta, beta)`` stacked.
    exponentiate : bool
        Report exponentiated coefficients (Stata's ``or``/``irr``).
    warnings, notes : tuple of str
    seconds : float
    """

    formula: str
    family: str
    link: str
    nagq: int
    nobs: int
    xnames: tuple[str, ...]
    beta: FloatArray
    vcov: FloatArray
    theta: FloatArray
    theta_names: tuple[str, ...]
    theta_se: FloatArray
    terms: tuple[GlmmTerm, ...]
    deviance: float
    saturated: float
    eta: FloatArray
    mu: FloatArray
    offset: FloatArray
    offset_terms: tuple[str, ...]
    ngroups: dict[str, int]
    opt: OptSummary
    exponentiate: bool
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float

    @property
    def loglik(self) -> float:
        """The approximate log-likelihood."""
        return -0.5 * self.deviance

    @property
    def df(self) -> int:
        """Parameters: theta and beta."""
        return int(self.theta.size + self.beta.size)

    @property
    def aic(self) -> float:
        """Akaike's criterion."""
        return self.deviance + 2.0 * self.df

    @property
    def bic(self) -> float:
        """Schwarz's criterion."""
        return self.deviance + np.log(self.nobs) * self.df

    @property
    def se(self) -> FloatArray:
        """Standard errors of beta (NaN where the covariance is not available)."""
        d = np.diag(self.vcov)
        return np.sqrt(np.where(d >= 0, d, np.nan))

    @property
    def is_singular(self) -> bool:
        """Some variance parameter is at its bound (an SD of zero)."""
        return bool(any(self.opt.at_bound[: self.theta.size]))
