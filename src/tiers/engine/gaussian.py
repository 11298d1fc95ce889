"""What every likelihood engine shares: the profiled deviance read off an eliminated system.

An engine eliminates the random effects at a given theta and hands over ``A``, the downdated
cross-product of ``[X y]`` (``[X y]' V^-1 [X y]`` up to sigma^2), and ``ldL2 = log det(L)^2``.
Profiling beta and sigma out (Bates et al. 2015, JSS 67(1), eqs. 34 and 41) gives

    ML:   ldL2 + n (1 + log(2 pi pwrss / n))
    REML: ldL2 + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p)))

with ``beta = A_xx^-1 A_xy``, ``pwrss = A_yy - A_xy' beta`` and ``ldRX2 = log det A_xx``.
Engines work on centred columns (X without the intercept, and y, minus their means) when an
intercept is present: a unit-triangular change of basis of X that leaves the deviance unchanged and
loses less precision to cancellation; `ProfiledProblem.beta` and `unscaled_vcov` undo it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything read off the eliminated system at one theta.

    ``parts_t`` (nested engine only) stacks the derivatives in ``t = theta^2`` of (ldL2, pwrss,
    ldRX2), from which the non-profiled likelihood's gradient is assembled for standard errors.
    ``beta``/``xtvx`` are on the centred scale; `ProfiledProblem.beta` undoes it.
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


class ProfiledProblem:
    """Base of the engines: data scale, the read-off at the optimum, REML/ML switching."""

    n: int
    p: int
    reml: bool
    intercept: int | None
    shift: FloatArray

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
        beta = np.linalg.solve(xtvx, xtvy)
        pwrss = float(A[p, p] - xtvy @ beta)
        ldRX2 = 2.0 * float(np.log(np.diagonal(L)).sum())
        nu = self.n - p if self.reml else self.n
        dev = ld + nu * (1.0 + _LOG_2PI + np.log(pwrss / nu))
        if self.reml:
            dev += ldRX2
        return Evaluation(theta, float(dev), None, None, None, float(ld), ldRX2, pwrss, beta, xtvx)

    def gradient_parts(
        self, ev: Evaluation, dA: FloatArray, dld: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Gradient of the profiled deviance from the derivatives of ``A`` and ``ldL2`` along
        each parameter; also the stacked derivatives of (ldL2, pwrss, ldRX2).

        pwrss = a_yy - a_xy' beta with beta = A_xx^-1 a_xy, so d pwrss = da_yy - 2 beta' da_xy +
        beta' dA_xx beta; d ldRX2 = tr(A_xx^-1 dA_xx).
        """
        p, beta = self.p, ev.beta
        nu = self.n - p if self.reml else self.n
        dpw = dA[:, p, p] - 2.0 * dA[:, :p, p] @ beta + (dA[:, :p, :p] @ beta) @ beta
        dldrx = np.zeros_like(dld)
        if self.reml:
            dldrx = (dA[:, :p, :p] * np.linalg.inv(ev.xtvx)).sum(axis=(1, 2))
        return dld + nu * dpw / ev.pwrss + dldrx, np.stack([dld, dpw, dldrx])

    def deviance(self, theta: FloatArray) -> float:
        """REML criterion or ML deviance at ``theta`` (lme4's ``devfun``)."""
        return self.evaluate(theta).deviance

    def deviance_and_gradient(self, theta: FloatArray) -> tuple[float, FloatArray]:
        """The objective and its analytic gradient in theta (engines with ``has_gradient``)."""
        ev = self.evaluate(theta, gradient=True)
        assert ev.gradient is not None
        return ev.deviance, ev.gradient

    def beta(self, ev: Evaluation) -> FloatArray:
        """Fixed effects on the original (uncentred) scale."""
        beta = ev.beta.copy()
        if self.intercept is not None:
            beta[self.intercept] += self.shift[self.p] - self.shift[: self.p] @ ev.beta
        return beta

    def unscaled_vcov(self, ev: Evaluation) -> FloatArray:
        """``(X' V^-1 X)^-1`` on the original scale; times sigma^2 it is vcov(beta)."""
        inv = np.linalg.inv(ev.xtvx)
        if self.intercept is None:
            return inv
        T = np.eye(self.p)
        T[self.intercept] -= self.shift[: self.p]
        T[self.intercept, self.intercept] = 1.0
        return T @ inv @ T.T

    def sigma(self, ev: Evaluation) -> float:
        """Residual SD at this theta: sqrt(pwrss / n) (ML) or sqrt(pwrss / (n - p)) (REML)."""
        return float(np.sqrt(ev.pwrss / (self.n - self.p if self.reml else self.n)))

    def with_reml(self, reml: bool) -> ProfiledProblem:
        """The same data and structure under the other criterion (a shallow copy)."""
        other = copy.copy(self)
        other.reml = reml
        return other
