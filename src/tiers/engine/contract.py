"""The engine contract: what every likelihood engine offers, and all that the rest of tiers asks.

An engine is the model's objective as a function of theta (``../shared/STYLE.md`` section 2): it
is built once from a `tiers.design.design.Design` (by `tiers.engine.registry.build_engine`) and then
answers, for any theta,

* the objective: ``deviance(theta)`` (the REML criterion or the ML deviance, beta and sigma
  profiled out) and, where ``has_gradient``, ``deviance_and_gradient(theta)``;
* the read-off at the optimum: ``solve(theta)`` gives beta, sigma and the unscaled covariance of
  beta; ``conditional_modes(theta, beta, sigma)`` the random effects' conditional modes and their
  conditional covariance blocks (lme4's ``ranef(condVar = TRUE)``);
* the parts ``evaluate(theta)`` for inference (log-determinants, penalised RSS): the information
  matrix, profiles and Satterthwaite's df use them through `tiers.engine.gaussian`.

Optimisers, inference and reports use nothing else: no ``isinstance`` or ``hasattr`` on engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything read off the eliminated system at one theta.

    ``parts_t`` (nested engine only) stacks the derivatives in ``t = theta^2`` of (ldL2, pwrss,
    ldRX2), from which the non-profiled likelihood's gradient is assembled for standard errors.
    ``beta``/``xtvx`` are on the centred scale; `ProfiledProblem.beta` undoes it.
    ``information`` (crossed engine, random intercepts, with the gradient) is an approximate
    Hessian of the criterion in ``log theta`` (average information,
    `tiers.engine.crossed_information`), for Newton steps that need no difference Hessian.
    """

    theta: FloatArray
    deviance: float
    gradient: FloatArray | None
    gradient_t: FloatArray | None
    parts_t: FloatArray | None
    ldL2: float
    ldRX2: float
    pwrss: float
    beta: FloatArray
    xtvx: FloatArray
    information: FloatArray | None = None


@dataclass(frozen=True)
class TermModes:
    """One term's conditional modes and their conditional covariances.

    Attributes
    ----------
    b : array (nlevels, q)
        Conditional modes on the data scale (lme4's ``ranef``).
    cov : array (nlevels, q, q) or None
        Conditional covariance blocks on the data scale (sigma^2 included); None when not asked
        for. Engines that can only give conditional SDs put them on the diagonal.
    """

    b: FloatArray
    cov: FloatArray | None


@dataclass(frozen=True)
class Solution:
    """What is read off the eliminated system at one theta.

    Attributes
    ----------
    theta : array
    deviance : float
        The engine's criterion (REML or ML) at ``theta``.
    beta : array (p,)
        Fixed effects on the data's scale.
    sigma : float
        Residual SD (``sqrt(pwrss / nu)``, ``nu = n - p`` for REML, ``n`` for ML).
    unscaled_vcov : array (p, p)
        ``(X' V^-1 X)^-1``; times ``sigma^2`` it is the covariance of beta.
    evaluation : Evaluation
        The parts of the criterion (log-determinants, penalised RSS).
    """

    theta: FloatArray
    deviance: float
    beta: FloatArray
    sigma: float
    unscaled_vcov: FloatArray
    evaluation: Evaluation


@runtime_checkable
class Engine(Protocol):
    """A likelihood engine: the profiled criterion of one design as a function of theta.

    Attributes
    ----------
    label : str
        ``nested``, ``tree`` or ``crossed`` (the registry key, reported as ``result.engine``).
    n, p : int
        Observations and fixed-effect columns.
    reml : bool
        REML criterion (True) or ML deviance (False).
    n_theta : int
    theta_start, theta_lower, theta_upper : arrays (n_theta,)
        lme4's start and the bounds of theta (lower 0 for diagonal entries of a relative factor,
        -inf elsewhere; upper inf, or 1 for an exchangeable correlation).
    has_gradient : bool
        ``deviance_and_gradient`` is analytic; when False callers differentiate ``deviance``
        numerically (`tiers.optimize.derivatives`).
    theta_null : array (n_theta,)
        The parameters of the linear model (no random effects, independent residuals of one
        variance): zeros, except where a residual structure says otherwise.
    """

    label: str
    n: int
    p: int
    reml: bool
    n_theta: int
    theta_start: FloatArray
    theta_lower: FloatArray
    theta_upper: FloatArray
    has_gradient: bool

    @property
    def theta_null(self) -> FloatArray:
        """The linear model's parameters (see the class docstring)."""
        ...

    def evaluate(self, theta: FloatArray, *, gradient: bool = False) -> Evaluation:
        """The criterion's parts at ``theta`` (and its gradient where ``has_gradient``)."""
        ...

    def deviance(self, theta: FloatArray) -> float:
        """REML criterion or ML deviance at ``theta`` (lme4's ``devfun``)."""
        ...

    def deviance_and_gradient(self, theta: FloatArray) -> tuple[float, FloatArray]:
        """The criterion and its analytic gradient (only where ``has_gradient``)."""
        ...

    def criterion(self, theta: FloatArray, sigma: float) -> float:
        """The criterion at ``(theta, sigma)``: beta profiled out, sigma not."""
        ...

    def criterion_fixed(self, theta: FloatArray, j: int, value: float) -> float:
        """The criterion at ``theta`` with ``beta_j`` held at ``value``, sigma profiled out."""
        ...

    def solve(self, theta: FloatArray) -> Solution:
        """beta, sigma and the unscaled covariance of beta at ``theta``."""
        ...

    def conditional_modes(
        self, theta: FloatArray, beta: FloatArray, sigma: float, *, cond_var: bool = True
    ) -> list[TermModes]:
        """Conditional modes (and covariance blocks) of every term, in theta order."""
        ...

    def with_reml(self, reml: bool) -> Engine:
        """The same data and structure under the other criterion."""
        ...
