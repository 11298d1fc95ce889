"""Marginal and conditional R-squared of a GLMM on the latent (link) scale.

Nakagawa, Johnson & Schielzeth (2017, J. R. Soc. Interface 14:20170213, eqs. 2.4-2.5) replace the
residual variance of the linear case by a distribution-specific variance on the link scale:

* binomial: the variance of the latent error, pi^2/3 (logit), 1 (probit), pi^2/6 (cloglog)
  (their Table 1);
* Poisson, log link: the lognormal approximation ``ln(1 + 1/lambda)`` (their eq. 3.5 and Table 2),
  with ``lambda`` the expected count. As R's ``performance::r2_nakagawa`` (``insight::get_variance``)
  does by default, ``lambda = exp(beta_0)`` of the null model: the same random part, no
  covariates, refitted here.

A random intercept whose factor has one level per observation (an observation-level random
effect for overdispersion, their sec. 3) is counted with the residual, not the random part.
``var_fixed = var(X beta)`` (denominator ``n - 1``, the offset left out) and the random part is the
mean over rows of ``z_i' Sigma z_i`` (Johnson 2014, eq. 10), as for linear models.
"""

from __future__ import annotations

import numpy as np

from tiers.design.design import Design
from tiers.engine.glmm_sparse import RandomSystem, SparseSystem
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm
from tiers.errors import DataError
from tiers.inference.r2 import R2
from tiers.optimize.glmm import optimize_glmm
from tiers.results.glmm import GlmmFit


def null_intercept(design: Design, problem: Glmm, nagq: int) -> float:
    """The intercept of the model with the fit's random part and offset but no covariates."""
    system: RandomSystem
    if design.engine == "nested" and design.nesting is not None:
        system = TreeSystem(design.terms, design.nesting.tree)
    else:
        system = SparseSystem(design.terms, design.frame.nobs)
    ones = np.ones((problem.n, 1))
    null = Glmm(problem.y, problem.wt, problem.offset, ones, system, problem.family)
    opt, _ = optimize_glmm(null, nagq)
    return float(opt.theta[null.n_theta])


def distribution_variance(design: Design, problem: Glmm, nagq: int) -> float:
    """The distribution-specific variance on the link scale (Nakagawa et al. 2017, Table 1)."""
    fam = problem.family
    latent = fam.latent_variance
    if latent is not None:
        return float(latent)
    if fam.name == "poisson" and fam.link == "log":
        lam = float(np.exp(null_intercept(design, problem, nagq)))
        return float(np.log1p(1.0 / lam))
    raise DataError(
        f"R-squared is defined here for binomial (logit, probit, cloglog) and Poisson (log) "
        f"GLMMs; not for {fam.name}/{fam.link}"
    )


def glmm_r2(fit: GlmmFit, design: Design, problem: Glmm) -> R2:
    """Marginal and conditional R-squared of a GLMM (``performance::r2_nakagawa``)."""
    fixed = np.asarray(design.frame.X) @ np.asarray(fit.beta)
    var_fixed = float(np.var(fixed, ddof=1)) if fixed.size > 1 else 0.0
    var_random = 0.0
    var_olre = 0.0
    nobs = design.frame.nobs
    for spec, term in zip(design.terms, fit.terms, strict=True):
        if spec.intercept_only:
            v = float(term.covariance[0, 0])
            if term.b.shape[0] == nobs:  # one level per row: overdispersion, not a group effect
                var_olre += v
            else:
                var_random += v
        else:
            Z = np.asarray(spec.Z)
            var_random += float(np.einsum("ni,ij,nj->", Z, term.covariance, Z)) / nobs
    var_residual = distribution_variance(design, problem, fit.nagq) + var_olre
    total = var_fixed + var_random + var_residual
    return R2(
        marginal=var_fixed / total,
        conditional=(var_fixed + var_random) / total,
        var_fixed=var_fixed,
        var_random=var_random,
        var_residual=var_residual,
    )
