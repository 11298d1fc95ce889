"""Cluster-robust (sandwich) covariance of all the parameters of a nested LMM fitted by (pseudo-)ML.

The (pseudo) log-likelihood is a sum over the top-level clusters, ``l = sum_c l_c(psi)``
(`tiers.engine.pseudo.PseudoTreeProblem.cluster_loglik`), with ``psi`` = (beta, then phi: the log
SDs and atanh correlations of every term and log sigma, the scale Stata reports ``vce(robust)``
on). The sandwich estimator (Huber 1967; White 1982; for multilevel pseudo-likelihood
Rabe-Hesketh and Skrondal 2006) is

    cov(psi) = H^-1 J H^-1,   H = -d^2 l / d psi^2,   J = G / (G - 1) sum_c s_c s_c',

with ``s_c = d l_c / d psi`` and G clusters; the factor ``G / (G - 1)`` is Stata's small-sample
adjustment for clustered sandwich estimators. Both derivatives are central differences of
``l_c`` (one pass over the tree per evaluation); ``l`` is exactly quadratic in beta, so those
differences are exact up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.design.terms import TermSpec
from tiers.engine.pseudo import PseudoTreeProblem
from tiers.variance.information import CorrInference, SdInference, layout, summarise, theta_at

FloatArray = NDArray[np.float64]

#: Step of the central differences in phi (log SDs, atanh correlations): truncation ~1e-8
#: relative, rounding ~1e-16 |l| / step^2 on the Hessian, small next to its entries.
PHI_STEP = 1e-4


@dataclass(frozen=True)
class RobustVcov:
    """A cluster-robust covariance of a fit's estimates.

    Attributes
    ----------
    kind : {"robust", "cr2"}
        The sandwich of every parameter (Stata's ``vce(robust)``), or the fixed effects' CR2
        (`tiers.variance.cr2`).
    cluster : str
        The clustering level.
    n_clusters : int
    vcov : array (p, p)
        Covariance of the fixed effects, on the data's scale.
    df : array (p,) or None
        Satterthwaite degrees of freedom of each fixed effect (CR2 only).
    variance : (SdInference, CorrInference) or None
        The random effects' SDs and correlations with robust SEs and 95% intervals (``robust``
        only; CR2 leaves them model-based).
    cov_phi : array or None
        The sandwich covariance of phi (log SDs, atanh correlations, log sigma), for intervals at
        other levels (`variance_at`).
    """

    kind: str
    cluster: str
    n_clusters: int
    vcov: FloatArray
    df: FloatArray | None = None
    variance: tuple[SdInference, CorrInference] | None = None
    cov_phi: FloatArray | None = None

    def variance_at(
        self, specs: list[TermSpec], theta: FloatArray, sigma: float, level: float
    ) -> tuple[SdInference, CorrInference] | None:
        """The variance parameters with robust SEs and intervals at ``level`` (None for CR2)."""
        if self.cov_phi is None:
            return None
        return summarise(layout(specs, np.asarray(theta), sigma), self.cov_phi, level)

    @property
    def label(self) -> str:
        """How the standard errors are described in a summary."""
        if self.kind == "cr2":
            return (
                f"CR2 cluster-robust (Bell-McCaffrey), {self.n_clusters:,} clusters in "
                f"{self.cluster}, Satterthwaite df"
            )
        return f"Robust: adjusted for {self.n_clusters:,} clusters in {self.cluster}"


def sandwich(
    engine: PseudoTreeProblem,
    specs: list[TermSpec],
    theta: FloatArray,
    sigma: float,
    cluster: str,
    *,
    level: float = 0.95,
) -> RobustVcov:
    """The sandwich covariance at the (pseudo-)ML estimates ``theta``, ``sigma``.

    Parameters
    ----------
    engine : PseudoTreeProblem
        The fit's pseudo-likelihood (unit weights for an unweighted ML fit).
    specs : list of TermSpec
        The random-effects terms in theta order.
    theta, sigma
        The estimates (beta is read off the engine at ``theta``).
    cluster : str
        The top level's name (for the summary).
    level : float
        Confidence level of the variance parameters' Wald intervals.
    """
    theta = np.asarray(theta, dtype=np.float64)
    beta_c = engine.evaluate(theta).beta
    lay = layout(specs, theta, sigma)
    free = lay.free
    p = beta_c.size
    x0 = np.concatenate([beta_c, lay.phi[free]])
    scale = np.concatenate([1e-3 * (1.0 + np.abs(beta_c)), np.full(int(free.sum()), PHI_STEP)])

    def contributions(x: FloatArray) -> FloatArray:
        phi = lay.phi.copy()
        phi[free] = x[p:]
        th, s = theta_at(lay, phi, theta.size)
        return engine.cluster_loglik(th, x[:p], s)

    m = x0.size
    G = engine.sizes[0]
    scores = np.empty((G, m))
    plus, minus = [], []
    for j in range(m):
        e = np.zeros(m)
        e[j] = scale[j]
        plus.append(contributions(x0 + e))
        minus.append(contributions(x0 - e))
        scores[:, j] = (plus[j] - minus[j]) / (2.0 * scale[j])
    f0 = float(contributions(x0).sum())
    H = np.empty((m, m))
    for j in range(m):
        H[j, j] = (plus[j].sum() - 2.0 * f0 + minus[j].sum()) / scale[j] ** 2
        for k in range(j):
            ej, ek = np.zeros(m), np.zeros(m)
            ej[j], ek[k] = scale[j], scale[k]
            fpp = contributions(x0 + ej + ek).sum()
            fmm = contributions(x0 - ej - ek).sum()
            # f(x+ej+ek) + f(x-ej-ek) = 2 f0 + h_j^2 H_jj + h_k^2 H_kk + 2 h_j h_k H_jk + O(h^4)
            H[j, k] = H[k, j] = (
                fpp + fmm - 2.0 * f0 - scale[j] ** 2 * H[j, j] - scale[k] ** 2 * H[k, k]
            ) / (2.0 * scale[j] * scale[k])
    bread = np.linalg.inv(-H)
    meat = G / (G - 1.0) * scores.T @ scores
    cov = bread @ meat @ bread
    T = np.eye(p)
    if engine.intercept is not None:
        T[engine.intercept] -= engine.shift[:p]
        T[engine.intercept, engine.intercept] = 1.0
    vcov = T @ cov[:p, :p] @ T.T
    cov_phi = np.full((lay.phi.size, lay.phi.size), np.nan)
    idx = np.flatnonzero(free)
    cov_phi[np.ix_(idx, idx)] = cov[p:, p:]
    return RobustVcov("robust", cluster, G, vcov, None, summarise(lay, cov_phi, level), cov_phi)
