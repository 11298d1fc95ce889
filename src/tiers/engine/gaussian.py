"""What every likelihood engine shares: the profiled deviance read off an eliminated system.

An engine eliminates the random effects at a given theta and hands over ``A``, the downdated
cross-product of ``[X y]`` (``[X y]' V^-1 [X y]`` up to sigma^2), and ``ldL2 = log det(L)^2``.
Profiling beta and sigma out (Bates et al. 2015, JSS 67(1), eqs. 34 and 41) gives

    ML:   ldL2 + n (1 + log(2 pi pwrss / n))
    REML: ldL2 + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p)))

with ``beta = A_xx^-1 A_xy``, ``pwrss = A_yy - A_xy' beta`` and ``ldRX2 = log det A_xx``. Both
are the minimum over sigma of the one Gaussian criterion `criterion_value`,

    f(theta, sigma) = ldL2 + [ldRX2] + nu log(2 pi sigma^2) + pwrss / sigma^2,   nu = n [- p],

which profiles, intervals, Satterthwaite's df and the information matrix use with sigma free.
Engines work on centred columns (X without the intercept, and y, minus their means) when an
intercept is present: a unit-triangular change of basis of X that leaves the deviance unchanged and
loses less precision to cancellation; `ProfiledProblem.beta` and `unscaled_vcov` undo it.

Precision weights (lme4's ``weights=``: the residual variance of row i is ``sigma^2 / w_i``) enter
as the rows of ``X``, ``y`` and ``Z`` scaled by ``sqrt(w_i)``: the model of the scaled rows has
i.i.d. residuals, and the density of ``y`` is that of the scaled rows times the Jacobian
``prod sqrt(w_i)``, so the criterion is the scaled model's minus ``ldW = sum log w_i`` (lme4's
``ldW``). Frequency weights scale the rows the same way (``w_i`` copies of a row add ``w_i`` to
every cross-product) with ``n = sum w_i`` and no Jacobian: the criterion of the expanded data.
"""

from __future__ import annotations

import copy
from typing import Self, cast

import numpy as np
from numpy.typing import NDArray

from tiers.engine.contract import Evaluation, Solution

FloatArray = NDArray[np.float64]

_LOG_2PI = float(np.log(2.0 * np.pi))


def residual_df(n: int, p: int, reml: bool) -> int:
    """Degrees of freedom of the penalised RSS: ``n - p`` (REML) or ``n`` (ML).

    With frequency weights ``n`` is their sum (the rows of the expanded data).
    """
    return n - p if reml else n


def criterion_value(
    ldL2: float, ldRX2: float, pwrss: float, nu: int, reml: bool, sigma: float | None = None
) -> float:
    """The Gaussian criterion (-2 log L, or the REML criterion) at ``sigma``, beta profiled out.

    With ``sigma=None`` sigma is profiled out too (``sigma^2 = pwrss / nu``): the criterion the
    engines minimise (Bates et al. 2015, eqs. 34 and 41).
    """
    s2 = pwrss / nu if sigma is None else sigma * sigma
    f = ldL2 + nu * (_LOG_2PI + np.log(s2)) + pwrss / s2
    return float(f + ldRX2) if reml else float(f)


class ProfiledProblem:
    """Base of the engines: data scale, the read-off at the optimum, REML/ML switching.

    Subclasses implement `evaluate` and `conditional_modes` and set the attributes of
    `tiers.engine.contract.Engine`.
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
    intercept: int | None
    shift: FloatArray
    #: ``sum log w_i`` of precision weights (0 without them, and for frequency weights).
    ldw: float = 0.0

    def _weigh(self, weights: FloatArray | None, *, frequency: bool) -> FloatArray | None:
        """``sqrt(w_i)`` per row (None unweighted); sets ``ldw`` and, for frequency weights, ``n``.

        Called after `_centred`: centring is a change of basis of the unscaled columns, which the
        row scaling leaves a change of basis.
        """
        if weights is None:
            self.ldw = 0.0
            return None
        w = np.asarray(weights, dtype=np.float64)
        self.ldw = 0.0 if frequency else float(np.log(w).sum())
        if frequency:
            self.n = int(round(float(w.sum())))
        return np.sqrt(w)

    @property
    def theta_null(self) -> FloatArray:
        """The parameters of the linear model (no random effects): theta = 0."""
        return np.zeros(self.n_theta)

    @property
    def nu(self) -> int:
        """Degrees of freedom of the penalised RSS under this criterion."""
        return residual_df(self.n, self.p, self.reml)

    def _centred(self, y: FloatArray, X: FloatArray) -> FloatArray:
        """``[X y]`` in column-major order, centred when X has an all-ones column."""
        self.n, self.p = X.shape
        ones = [j for j in np.flatnonzero(X[0] == 1.0) if np.all(X[:, j] == 1.0)]
        self.intercept = int(ones[0]) if ones else None
        D = np.empty((self.n, self.p + 1), order="F")
        D[:, : self.p] = X
        D[:, self.p] = y
        self.shift = np.zeros(self.p + 1)
        if self.intercept is not None:
            self.shift = np.ones(self.n) @ D / self.n
            self.shift[self.intercept] = 0.0
            D -= self.shift
        return D

    def evaluate(self, theta: FloatArray, *, gradient: bool = False) -> Evaluation:
        """Eliminate at ``theta`` (implemented by each engine)."""
        raise NotImplementedError

    def finish(self, theta: FloatArray, A: FloatArray, ld: float) -> Evaluation:
        """The profiled deviance from the downdated ``[X y]`` cross-product ``A`` and ``ldL2``."""
        p = self.p
        xtvx = A[:p, :p]
        xtvy = A[:p, p]
        L = np.linalg.cholesky(xtvx)
        beta = cast(FloatArray, np.linalg.solve(xtvx, xtvy))
        pwrss = float(A[p, p] - xtvy @ beta)
        ldRX2 = 2.0 * float(np.log(np.diagonal(L)).sum())
        dev = criterion_value(ld, ldRX2, pwrss, self.nu, self.reml) - self.ldw
        return Evaluation(theta, dev, None, None, None, float(ld), ldRX2, pwrss, beta, xtvx)

    def gradient_parts(
        self, ev: Evaluation, dA: FloatArray, dld: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Gradient of the profiled deviance, from the derivatives of ``A`` and ``ldL2``.

        The derivatives are along each parameter; also returns the stacked derivatives of (ldL2,
        pwrss, ldRX2).

        pwrss = a_yy - a_xy' beta with beta = A_xx^-1 a_xy, so d pwrss = da_yy - 2 beta' da_xy +
        beta' dA_xx beta; d ldRX2 = tr(A_xx^-1 dA_xx).
        """
        p, beta, nu = self.p, ev.beta, self.nu
        dpw = dA[:, p, p] - 2.0 * dA[:, :p, p] @ beta + (dA[:, :p, :p] @ beta) @ beta
        if self.reml:
            k = dA.shape[0]
            dldrx = (dA[:, :p, :p] * np.linalg.inv(ev.xtvx)).reshape(k, p * p).sum(axis=1)
        else:
            dldrx = np.zeros_like(dld)
        # np.array, not np.stack: the same rows, without stack's checks (~2 us an evaluation)
        return dld + nu * dpw / ev.pwrss + dldrx, np.array([dld, dpw, dldrx])

    def deviance(self, theta: FloatArray) -> float:
        """REML criterion or ML deviance at ``theta`` (lme4's ``devfun``)."""
        return self.evaluate(theta).deviance

    def deviance_and_gradient(self, theta: FloatArray) -> tuple[float, FloatArray]:
        """The objective and its analytic gradient in theta (engines with ``has_gradient``)."""
        if not self.has_gradient:
            raise NotImplementedError(
                f"the {self.label} engine has no analytic gradient for these terms; use "
                "tiers.optimize.derivatives.fd_gradient"
            )
        ev = self.evaluate(theta, gradient=True)
        if ev.gradient is None:  # pragma: no cover - engines fill it when has_gradient
            raise RuntimeError(f"the {self.label} engine returned no gradient")
        return ev.deviance, ev.gradient

    def criterion(self, theta: FloatArray, sigma: float) -> float:
        """The criterion at ``(theta, sigma)``: beta profiled out, sigma not."""
        ev = self.evaluate(theta)
        return criterion_value(ev.ldL2, ev.ldRX2, ev.pwrss, self.nu, self.reml, sigma) - self.ldw

    def criterion_fixed(self, theta: FloatArray, j: int, value: float) -> float:
        """The criterion at ``theta`` with ``beta_j`` held at ``value``, sigma profiled out.

        Holding ``beta_j`` raises the penalised RSS by ``(value - beta_j(theta))^2 / U_jj(theta)``
        (``U = (X'V^-1X)^-1``); for REML fits this is the REML criterion extended by the fixed
        effects, whose minimum over beta is the REML criterion itself.
        """
        ev = self.evaluate(theta)
        beta = self.beta(ev)
        U = self.unscaled_vcov(ev)
        pwrss = ev.pwrss + (value - beta[j]) ** 2 / U[j, j]
        return criterion_value(ev.ldL2, ev.ldRX2, pwrss, self.nu, self.reml) - self.ldw

    def solve(self, theta: FloatArray) -> Solution:
        """beta, sigma and the unscaled covariance of beta at ``theta``."""
        theta = np.asarray(theta, dtype=np.float64)
        ev = self.evaluate(theta)
        return Solution(
            theta, ev.deviance, self.beta(ev), self.sigma(ev), self.unscaled_vcov(ev), ev
        )

    def beta(self, ev: Evaluation) -> FloatArray:
        """Fixed effects on the original (uncentred) scale."""
        beta = ev.beta.copy()
        if self.intercept is not None:
            beta[self.intercept] += self.shift[self.p] - self.shift[: self.p] @ ev.beta
        return beta

    def unscaled_vcov(self, ev: Evaluation) -> FloatArray:
        """``(X' V^-1 X)^-1`` on the original scale; times sigma^2 it is vcov(beta)."""
        inv = cast(FloatArray, np.linalg.inv(ev.xtvx))
        if self.intercept is None:
            return inv
        T = np.eye(self.p)
        T[self.intercept] -= self.shift[: self.p]
        T[self.intercept, self.intercept] = 1.0
        return T @ inv @ T.T

    def sigma(self, ev: Evaluation) -> float:
        """Residual SD at this theta: sqrt(pwrss / n) (ML) or sqrt(pwrss / (n - p)) (REML)."""
        return float(np.sqrt(ev.pwrss / self.nu))

    def with_reml(self, reml: bool) -> Self:
        """The same data and structure under the other criterion (a shallow copy)."""
        other = copy.copy(self)
        other.reml = reml
        return other
