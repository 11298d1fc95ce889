"""Minimise a profiled deviance over theta and certify the result.

L-BFGS-B with the analytic gradient finds the optimum; a few Newton steps on a finite-difference
Hessian of that gradient polish it (the profiled deviance is smooth in the interior, so this gets
theta to ~1e-8 cheaply); parameters that end numerically at their lower bound are snapped to it
when the objective is no worse, as MixedModels.jl does. Convergence is certified by the gradient on
the free parameters and by positive curvature, never by retrying until an optimizer is quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
FunGrad = Callable[[FloatArray], tuple[float, FloatArray]]

#: theta below this, at a lower bound of 0, is snapped to 0 (lme4's isSingular uses 1e-4).
SNAP = 1e-5
#: Converged when the Newton step on the free parameters is below this (lme4 warns at 2e-3 for a
#: scaled gradient; the polished optimum is far inside that).
STEP_TOL = 1e-4


@dataclass(frozen=True, slots=True)
class OptSummary:
    """What the optimizer did.

    Attributes
    ----------
    theta0, theta : arrays
        Start and end.
    deviance : float
        Objective at ``theta``.
    gradient : array
        Gradient at ``theta`` (zero-padded at parameters held on their bound).
    newton_step : float
        Max abs of the Newton step on the free parameters at the end: the scaled gradient.
    at_bound : tuple of bool
        Parameters that ended at their lower bound (singular directions).
    n_evaluations : int
        Objective (with gradient) evaluations, Hessian probes included.
    converged : bool
    message : str
        Plain-language outcome.
    optimizer : str
    seconds : float
    """

    theta0: FloatArray
    theta: FloatArray
    deviance: float
    gradient: FloatArray
    newton_step: float
    at_bound: tuple[bool, ...]
    n_evaluations: int
    converged: bool
    message: str
    optimizer: str
    seconds: float


class _Counted:
    def __init__(self, fun: FunGrad) -> None:
        self.fun = fun
        self.n = 0

    def __call__(self, x: FloatArray) -> tuple[float, FloatArray]:
        self.n += 1
        return self.fun(np.asarray(x, dtype=np.float64))


def fd_hessian(
    fun: Callable[[FloatArray], FloatArray], x: FloatArray, free: FloatArray
) -> FloatArray:
    """Central differences of an analytic gradient, symmetrised, over the ``free`` coordinates."""
    idx = np.flatnonzero(free)
    H = np.zeros((idx.size, idx.size))
    for a, i in enumerate(idx):
        h = 1e-5 * max(1.0, abs(x[i]))
        up, dn = x.copy(), x.copy()
        up[i] += h
        dn[i] -= h
        H[a] = (fun(up)[idx] - fun(dn)[idx]) / (2.0 * h)
    return 0.5 * (H + H.T)


def fd_gradient(
    dev: Callable[[FloatArray], float], lower: FloatArray, upper: FloatArray
) -> FunGrad:
    """Objective and central-difference gradient (one-sided next to a bound), for engines without
    an analytic gradient. Step 1e-6 relative: truncation (h^2 times the third derivative) and
    rounding (eps f / h) both stay far below the gradient's scale for deviances up to ~1e7."""

    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        f0 = dev(x)
        g = np.empty_like(x)
        for i in range(x.size):
            h = 1e-6 * max(1.0, abs(x[i]))
            up, dn = x.copy(), x.copy()
            up[i] = min(x[i] + h, upper[i])
            dn[i] = max(x[i] - h, lower[i])
            g[i] = (dev(up) - dev(dn)) / (up[i] - dn[i])
        return f0, g

    return fun


def value_hessian(
    dev: Callable[[FloatArray], float], x: FloatArray, free: NDArray[np.bool_]
) -> FloatArray:
    """Second differences of function values over the ``free`` coordinates (step 1e-4 relative:
    the rounding error eps f / h^2 stays ~1e-8 of the curvature of a deviance)."""
    idx = np.flatnonzero(free)
    m = idx.size
    h = 1e-4 * np.maximum(1.0, np.abs(x[idx]))
    f0 = dev(x)
    H = np.zeros((m, m))

    def at(*moves: tuple[int, float]) -> float:
        y = x.copy()
        for i, d in moves:
            y[idx[i]] += d
        return dev(y)

    for a in range(m):
        H[a, a] = (at((a, h[a])) - 2.0 * f0 + at((a, -h[a]))) / h[a] ** 2
        for b in range(a):
            H[a, b] = H[b, a] = (
                at((a, h[a]), (b, h[b]))
                - at((a, h[a]), (b, -h[b]))
                - at((a, -h[a]), (b, h[b]))
                + at((a, -h[a]), (b, -h[b]))
            ) / (4.0 * h[a] * h[b])
    return H


def minimize_theta(
    fun: FunGrad,
    theta0: FloatArray,
    lower: FloatArray,
    *,
    upper: FloatArray | None = None,
    hessian: Callable[[FloatArray, NDArray[np.bool_]], FloatArray] | None = None,
    maxiter: int = 2000,
) -> OptSummary:
    """Minimise ``fun`` over ``lower <= theta <= upper``.

    Parameters
    ----------
    fun : callable
        Returns the objective and its gradient (analytic, or `fd_gradient`).
    theta0 : array
        Start (lme4 starts at 1 for diagonal and 0 for off-diagonal elements).
    lower, upper : arrays
        Bounds (0 for SDs, -inf for off-diagonal factor entries).
    hessian : callable, optional
        ``hessian(theta, free)``; default: central differences of the gradient.
    """
    start = time.perf_counter()
    counted = _Counted(fun)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.full_like(lower, np.inf) if upper is None else np.asarray(upper, dtype=np.float64)
    bounds = [
        (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    from scipy.optimize import minimize  # imported on first fit: keeps `import tiers` light

    res = minimize(
        counted,
        np.asarray(theta0, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20},
    )
    theta = np.clip(np.asarray(res.x, dtype=np.float64), lower, upper)
    f, g = counted(theta)
    theta, f, g = _snap(counted, theta, f, g, lower)
    theta, f, g = _escape_boundary(
        counted, theta, f, g, lower, upper, bounds, maxiter, np.asarray(theta0, dtype=np.float64)
    )
    if hessian is None:

        def hessian(x: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
            return fd_hessian(lambda z: counted(z)[1], x, free)

    theta, f, g, step, pd_ok = _polish(counted, theta, f, g, lower, upper, hessian)
    at_bound = tuple(bool(v) for v in (theta <= lower))
    free = ~np.asarray(at_bound)
    grad = np.where(free, g, 0.0)
    converged = bool(np.all(np.isfinite(theta))) and pd_ok and step <= STEP_TOL
    if converged:
        message = "converged: the gradient is zero and the curvature positive at the optimum"
    elif not pd_ok:
        message = (
            "not certified: the deviance is flat or curved the wrong way at the end point, so "
            "some variance parameter is not determined by the data"
        )
    else:
        message = (
            f"not certified: a Newton step of {step:.2g} remains at the end point "
            f"(optimizer said: {res.message})"
        )
    return OptSummary(
        theta0=np.asarray(theta0, dtype=np.float64),
        theta=theta,
        deviance=float(f),
        gradient=grad,
        newton_step=float(step),
        at_bound=at_bound,
        n_evaluations=counted.n,
        converged=converged,
        message=message,
        optimizer="L-BFGS-B + Newton polish",
        seconds=time.perf_counter() - start,
    )


def _snap(fun: _Counted, theta, f, g, lower):
    """Set near-boundary parameters to the bound when that does not raise the objective."""
    near = np.isfinite(lower) & (theta > lower) & (theta - lower < SNAP)
    if not near.any():
        return theta, f, g
    trial = np.where(near, lower, theta)
    ft, gt = fun(trial)
    if ft <= f + 1e-10 * max(1.0, abs(f)):
        return trial, ft, gt
    return theta, f, g


def _escape_boundary(fun: _Counted, theta, f, g, lower, upper, bounds, maxiter, theta0):
    """A parameter at its bound is a minimum only if stepping off it raises the objective.

    For an SD the theta-gradient vanishes at 0 by symmetry (the deviance depends on T T'), so
    L-BFGS-B cannot tell a boundary minimum from a saddle. Probe each boundary parameter, then
    restart once from a point off every bound at the same time (a correlated term can need both
    its diagonal entries moved together), and keep the better end point.
    """

    from scipy.optimize import minimize

    def refit(start):
        res = minimize(
            fun,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10},
        )
        cand = np.clip(np.asarray(res.x, dtype=np.float64), lower, upper)
        fc, gc = fun(cand)
        return _snap(fun, cand, fc, gc, lower)

    tol = 1e-10 * max(1.0, abs(f))
    at = np.isfinite(lower) & (theta <= lower)
    for i in np.flatnonzero(at):
        probe = theta.copy()
        probe[i] = lower[i] + 1e-3
        fp, _ = fun(probe)
        if fp < f - tol:
            theta, f, g = refit(probe)
    at = np.isfinite(lower) & (theta <= lower)
    if at.any():
        # Boundary end points can be local: the deviance of a correlated term is not convex in
        # its Cholesky factor, and from lme4's start L-BFGS-B sometimes settles on a ridge that
        # BOBYQA avoids. Restarts from smaller scales of the start (where the random effects
        # explain less) reach the interior optimum when there is one; the best end point wins.
        theta0 = np.asarray(theta0, dtype=np.float64)
        starts = [np.where(at, np.maximum(theta0, lower + 0.1), theta), 0.5 * theta0, 0.2 * theta0]
        for start in starts:
            cand, fc, gc = refit(np.clip(start, lower, upper))
            if fc < f - tol:
                theta, f, g = cand, fc, gc
    return theta, f, g


def _polish(fun: _Counted, theta, f, g, lower, upper, hessian, iterations: int = 6):
    """Newton steps on the free parameters; returns the final Newton step size and whether the
    Hessian there is positive definite.

    The Hessian is recomputed only while steps are large (> 1e-3): near the optimum the previous
    one is accurate enough to measure the remaining step (the certificate), and each recomputation
    costs 2 x (free parameters) gradient evaluations.
    """
    step = np.inf
    pd_ok = True
    L = None
    free_prev = None
    for _ in range(iterations):
        free = ~(np.isfinite(lower) & (theta <= lower))
        if not free.any():
            return theta, f, g, 0.0, True
        if L is None or step > 1e-3 or not np.array_equal(free, free_prev):
            try:
                L = np.linalg.cholesky(hessian(theta, free))
            except np.linalg.LinAlgError:
                return theta, f, g, step, False
            free_prev = free
        delta = -np.linalg.solve(L.T, np.linalg.solve(L, g[free]))
        step = float(np.max(np.abs(delta)))
        if step < 1e-7:  # theta is compared to ~1e-4; 1e-7 is far inside rounding of the deviance
            break
        scale = 1.0
        accepted = False
        for _ in range(20):
            trial = theta.copy()
            trial[free] = np.clip(theta[free] + scale * delta, lower[free], upper[free])
            ft, gt = fun(trial)
            if ft <= f:
                theta, f, g = trial, ft, gt
                accepted = True
                break
            scale *= 0.5
        if not accepted:
            break
    return theta, f, g, step, pd_ok
