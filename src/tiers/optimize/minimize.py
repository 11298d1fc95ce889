"""Minimise a profiled deviance over theta and certify the result.

L-BFGS-B with the analytic gradient finds the optimum; a few Newton steps on a finite-difference
Hessian of that gradient polish it (the profiled deviance is smooth in the interior, so this gets
theta to ~1e-8 cheaply); parameters that end numerically at their lower bound are snapped to it
when the objective is no worse, as MixedModels.jl does. Convergence is certified by the gradient on
the free parameters and by positive curvature, never by retrying until an optimizer is quiet.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers._threads import single_thread_blas
from tiers.engine.contract import Engine, Evaluation
from tiers.optimize.derivatives import fd_gradient, gradient_hessian, value_hessian
from tiers.optimize.scoring import FunGradInfo, scoring_theta

FloatArray = NDArray[np.float64]
FunGrad = Callable[[FloatArray], tuple[float, FloatArray]]
HessianFn = Callable[[FloatArray, NDArray[np.bool_]], FloatArray]

#: theta below this, at a lower bound of 0, is snapped to 0 (lme4's isSingular uses 1e-4).
SNAP = 1e-5
#: A deviance's rounding, relative: sums of thousands of terms (logs, a factorisation) carry
#: ~1e-14 relative error, so the polish's last step is taken unless it raises the deviance by more.
ROUNDING_REL = 1e-13
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


def minimize_theta(
    fun: FunGrad,
    theta0: FloatArray,
    lower: FloatArray,
    *,
    upper: FloatArray | None = None,
    hessian: Callable[[FloatArray, NDArray[np.bool_]], FloatArray] | None = None,
    maxiter: int = 2000,
    near: bool = False,
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
    near : bool
        ``theta0`` is already close to the optimum: go straight to the Newton polish, and run
        L-BFGS-B first only if the polish does not certify the end point.
    """
    start = time.perf_counter()
    counted = _Counted(fun)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.full_like(lower, np.inf) if upper is None else np.asarray(upper, dtype=np.float64)
    bounds = [
        (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    if hessian is None:

        def hessian(x: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
            return gradient_hessian(lambda z: counted(z)[1], x, free)

    said = "Newton polish from a start near the optimum"
    polished_only = near
    if near:
        theta = np.clip(np.asarray(theta0, dtype=np.float64), lower, upper)
        f, g = counted(theta)
        if not np.any(np.isfinite(lower) & (theta <= lower)):
            theta, f, g, step, pd_ok = _polish(counted, theta, f, g, lower, upper, hessian)
            interior = not np.any(np.isfinite(lower) & (theta <= lower))
            near = pd_ok and step <= STEP_TOL and interior and bool(np.all(np.isfinite(theta)))
        else:
            near = False
    if not near:
        polished_only = False
        # L-BFGS-B only where the Newton polish from the start did not certify (a balanced nested
        # design starts at its ANOVA estimates and needs none): scipy.optimize costs a fresh
        # process 0.14 s to import (linprog, scipy.fft, interpolative), seven seed fits at 80,000 rows
        from scipy.optimize import minimize

        res = minimize(
            counted,
            np.asarray(theta0, dtype=np.float64),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20},
        )
        said = str(res.message)
        theta = np.clip(np.asarray(res.x, dtype=np.float64), lower, upper)
        if np.array_equal(theta, res.x) and res.jac is not None:
            # L-BFGS-B ends at its last evaluated point: its value and gradient are those
            f, g = float(res.fun), np.array(res.jac, dtype=np.float64)
        else:
            f, g = counted(theta)
        theta, f, g = _snap(counted, theta, f, g, lower)
        theta, f, g = _escape_boundary(
            counted,
            theta,
            f,
            g,
            lower,
            upper,
            bounds,
            maxiter,
            np.asarray(theta0, dtype=np.float64),
        )
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
            f"(optimizer said: {said})"
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
        optimizer="Newton polish (start near the optimum)"
        if polished_only
        else "L-BFGS-B + Newton polish",
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


#: Restarts that release parameters stuck at a bound whose step off the bound lowers the objective.
ESCAPE_ROUNDS = 5


def _escape_boundary(fun: _Counted, theta, f, g, lower, upper, bounds, maxiter, theta0):
    """A parameter at its bound is a minimum only if stepping off it raises the objective.

    For an SD the theta-gradient vanishes at 0 by symmetry (the deviance depends on T T'), so
    L-BFGS-B cannot tell a boundary minimum from a saddle. Probe each boundary parameter, then
    restart once from a point off every bound at the same time (a correlated term can need both
    its diagonal entries moved together), and keep the better end point.
    """

    def refit(start):
        from scipy.optimize import minimize

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
    # Every parameter whose step off the bound lowers the objective is released in one restart:
    # one refit per round, not one per parameter (200 scalar slopes, 30 at zero: 24 refits before).
    for _ in range(ESCAPE_ROUNDS):
        at = np.isfinite(lower) & (theta <= lower)
        gains = {}
        for i in np.flatnonzero(at):
            probe = theta.copy()
            probe[i] = lower[i] + 1e-3
            fp, _ = fun(probe)
            if fp < f - tol:
                gains[int(i)] = fp
        if not gains:
            break
        probe = theta.copy()
        probe[list(gains)] = lower[list(gains)] + 1e-3
        fp, _ = fun(probe)
        if not fp < f - tol:  # jointly worse: release the single best one
            best = min(gains, key=gains.__getitem__)
            probe = theta.copy()
            probe[best] = lower[best] + 1e-3
        cand, fc, gc = refit(probe)
        if not fc < f - tol:
            break
        theta, f, g = cand, fc, gc
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
    """Newton steps on the free parameters.

    Returns the final Newton step size and whether the Hessian there is positive definite.

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
        if L is None or free_prev is None or step > 1e-3 or not np.array_equal(free, free_prev):
            try:
                L = np.linalg.cholesky(hessian(theta, free))
            except np.linalg.LinAlgError:
                return theta, f, g, step, False
            free_prev = free
        delta = -np.linalg.solve(L.T, np.linalg.solve(L, g[free]))
        step = float(np.max(np.abs(delta)))
        if step < 1e-7:
            # The certificate: what is left is this small. The step is still taken when it does
            # not raise the deviance beyond its rounding (`ROUNDING_REL`), so that sums rounded
            # in another order (another row order, Dask's partitions) end at the same theta to
            # ~1e-12 instead of anywhere within 1e-7: a step this short changes the deviance by
            # less than its rounding, so a strict ``ft <= f`` kept or refused it by chance
            # (2 to 5 of 16 row orders of the seed design ended 1.4e-8 apart).
            trial = theta.copy()
            trial[free] = np.clip(theta[free] + delta, lower[free], upper[free])
            ft, gt = fun(trial)
            if ft <= f + ROUNDING_REL * max(1.0, abs(f)):
                theta, f, g = trial, ft, gt
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


def _objective(engine: Engine) -> tuple[FunGrad, HessianFn | None]:
    """The engine's criterion with its gradient, and a Hessian for the polish.

    The Hessian is from differences of the analytic gradient (None: `minimize_theta`'s default), or
    of the criterion's values.
    """
    if engine.has_gradient:
        return engine.deviance_and_gradient, None

    def hessian(x: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
        return value_hessian(engine.deviance, x, free)

    return fd_gradient(engine.deviance, engine.theta_lower, engine.theta_upper), hessian


def _with_information(engine: Engine) -> FunGradInfo:
    """The criterion, its gradient and its Hessian in log theta from one evaluation.

    A rough gradient where `tiers.optimize.scoring` asks for one (only of engines that offer it,
    ``rough_gradient``).
    """
    evaluate: Callable[..., Evaluation] = engine.evaluate

    def fun(x: FloatArray, rough: bool) -> tuple[float, FloatArray, FloatArray]:
        ev = evaluate(x, gradient=True, rough=True) if rough else evaluate(x, gradient=True)
        if ev.gradient is None or ev.information is None:  # pragma: no cover - engine's promise
            raise RuntimeError(f"the {engine.label} engine returned no average information")
        return ev.deviance, ev.gradient, ev.information

    return fun


def optimize_theta(engine: Engine, start: FloatArray | None = None) -> OptSummary:
    """Minimise an engine's criterion over theta within its bounds (lme4's ``optimizeLmer``).

    With an analytic gradient the Newton polish differentiates the gradient; without one the
    gradient is a central difference of the criterion and the polish uses second differences of
    its values (`tiers.optimize.derivatives`).

    Parameters
    ----------
    engine : Engine
    start : array, optional
        Default the engine's ``theta_start`` (lme4's).
    """
    theta0 = engine.theta_start if start is None else np.asarray(start, dtype=np.float64)
    fun, hessian = _objective(engine)
    # one BLAS thread also when called on its own (the staged API): the products are small or,
    # on a busy machine, threads cost more than they give (InstEval: 10.8 s -> 1.3 s, loaded)
    with single_thread_blas():
        spent = 0
        nr, how = None, ""
        t0 = time.perf_counter()
        if engine.has_gradient and getattr(engine, "information_first", False):
            # Newton in log theta on the engine's average information: no difference Hessian
            nr = scoring_theta(
                _with_information(engine),
                theta0,
                engine.theta_lower,
                engine.theta_upper,
                rough=bool(getattr(engine, "rough_gradient", False)),
            )
            how = "Newton in log theta (average-information Hessian)"
        if nr is not None:
            if nr.ok:
                return OptSummary(
                    theta0=np.asarray(theta0, dtype=np.float64),
                    theta=nr.theta,
                    deviance=nr.f,
                    gradient=nr.g,
                    newton_step=nr.step,
                    at_bound=(False,) * nr.theta.size,
                    n_evaluations=nr.evaluations,
                    converged=nr.step <= STEP_TOL,
                    message="converged: the gradient is zero and the curvature positive at the "
                    "optimum",
                    optimizer=how,
                    seconds=time.perf_counter() - t0,
                )
            spent = nr.evaluations
        # an engine whose own start is near the optimum (`tiers.engine.nested_scalar`'s ANOVA
        # start) is polished first; L-BFGS-B runs only if the polish does not certify it
        near = start is None and bool(getattr(engine, "start_near", False))
        opt = minimize_theta(
            fun, theta0, engine.theta_lower, upper=engine.theta_upper, hessian=hessian, near=near
        )
    if spent:  # Newton's evaluations before the fallback count too
        opt = dataclasses.replace(opt, n_evaluations=opt.n_evaluations + spent)
    return opt


def certify(engine: Engine, theta: FloatArray) -> OptSummary:
    """The optimizer's certificate at a given theta, without moving it.

    For a result at a pinned theta, such as another program's estimates. Converged when the Newton
    step on the free parameters is below `STEP_TOL` and the curvature there is positive.
    """
    start = time.perf_counter()
    fun, hessian = _objective(engine)
    counted = _Counted(fun)
    theta = np.asarray(theta, dtype=np.float64)
    lower = engine.theta_lower
    f, g = counted(theta)
    free = ~(np.isfinite(lower) & (theta <= lower))
    step, pd_ok = 0.0, True
    if free.any():
        if hessian is None:

            def hessian(x: FloatArray, fr: NDArray[np.bool_]) -> FloatArray:
                return gradient_hessian(lambda z: counted(z)[1], x, fr)

        try:
            L = np.linalg.cholesky(hessian(theta, free))
            delta = np.linalg.solve(L.T, np.linalg.solve(L, g[free]))
            step = float(np.max(np.abs(delta)))
        except np.linalg.LinAlgError:
            pd_ok = False
    converged = pd_ok and step <= STEP_TOL
    message = (
        "theta given, not optimised: it is a certified optimum"
        if converged
        else "theta given, not optimised: it is not a certified optimum of this criterion"
    )
    return OptSummary(
        theta0=theta.copy(),
        theta=theta,
        deviance=float(f),
        gradient=np.where(free, g, 0.0),
        newton_step=step,
        at_bound=tuple(bool(v) for v in ~free),
        n_evaluations=counted.n,
        converged=converged,
        message=message,
        optimizer="none (theta given)",
        seconds=time.perf_counter() - start,
    )
