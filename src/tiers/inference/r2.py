"""Marginal and conditional R-squared of a linear mixed model.

Nakagawa & Schielzeth (2013, Methods Ecol. Evol. 4:133, eqs. 26-27) split the variance of the
response into the fixed part, the random effects and the residual:

* ``var_fixed = var(X beta)`` over the rows used (denominator ``n - 1``, as R's ``var``);
* ``var_random``: for random intercepts the sum of their variances; with random slopes the
  variance a term adds depends on the covariates, and Johnson (2014, Methods Ecol. Evol. 5:944,
  eq. 10) averages it over the rows: ``mean_i z_i' Sigma_k z_i`` summed over the terms ``k``,
  where ``z_i`` is row i of the term's model matrix and ``Sigma_k`` its covariance;
* ``var_residual = sigma^2``.

``R2_marginal = var_fixed / total`` (the fixed effects' share) and ``R2_conditional =
(var_fixed + var_random) / total`` (fixed and random effects together), with ``total`` the sum of
the three (Nakagawa, Johnson & Schielzeth 2017, J. R. Soc. Interface 14:20170213, eqs. 2.4-2.5 for
the Gaussian case). These are the numbers of R's ``performance::r2_nakagawa``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiers.design.terms import split_theta
from tiers.errors import InferenceError
from tiers.results.result import FitResult


@dataclass(frozen=True, slots=True)
class R2:
    """R-squared of a mixed model and the variances it is made of.

    Attributes
    ----------
    marginal : float
        Variance explained by the fixed effects alone.
    conditional : float
        Variance explained by the fixed and random effects together.
    var_fixed, var_random, var_residual : float
        The three parts of the total variance (see the module's docstring).
    """

    marginal: float
    conditional: float
    var_fixed: float
    var_random: float
    var_residual: float

    def to_dict(self) -> dict[str, float]:
        """``{"marginal": ..., "conditional": ...}``, the ``r2`` entry of the JSON document."""
        return {"marginal": self.marginal, "conditional": self.conditional}

    def __str__(self) -> str:
        return (
            f"R2 marginal {self.marginal:.4f}, conditional {self.conditional:.4f} "
            "(Nakagawa & Schielzeth)"
        )


def random_variance(res: FitResult) -> float:
    """Variance of the random effects averaged over the rows used (Johnson 2014, eq. 10).

    For a random intercept this is its variance; for a term with slopes ``mean_i z_i' Sigma z_i``.
    """
    terms = res.design.terms
    sigma2 = res.sigma**2
    total = 0.0
    for term, th in zip(terms, split_theta(terms, np.asarray(res.theta)), strict=True):
        cov = sigma2 * term.cov.covariance(th)
        total += float(np.einsum("ij,jk,ik->", term.Z, cov, term.Z)) / term.Z.shape[0]
    return total


def _one_variance(res: FitResult, what: str) -> None:
    if not res.one_residual_variance:
        raise InferenceError(
            f"{what} is not defined for this model: its residual variance differs by stratum "
            f"({res.design.residuals.spec.describe()}), so the unexplained variance has one "  # type: ignore[union-attr]
            "decomposition per stratum; fit without by() for a single one"
        )


def r2(res: FitResult) -> R2:
    """Marginal and conditional R-squared of a fit (``performance::r2_nakagawa``)."""
    _one_variance(res, "R-squared")
    fitted_fixed = np.asarray(res.X) @ np.asarray(res.beta)
    var_fixed = float(np.var(fitted_fixed, ddof=1)) if fitted_fixed.size > 1 else 0.0
    var_random = random_variance(res)
    var_residual = float(res.sigma**2)
    total = var_fixed + var_random + var_residual
    return R2(
        marginal=var_fixed / total,
        conditional=(var_fixed + var_random) / total,
        var_fixed=var_fixed,
        var_random=var_random,
        var_residual=var_residual,
    )
