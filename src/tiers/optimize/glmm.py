"""Minimise a GLMM's Laplace / quadrature deviance over ``(theta, beta)`` jointly and certify it.

As lme4's ``glmer`` second stage (``nAGQ > 0``), theta and beta are optimised together (beta is not
profiled out: the GLMM has no closed form for it). The start is the GLM's beta (direct IRLS) and
lme4's theta start. With a canonical link and Laplace the gradient is analytic
(`tiers.engine.glmm_gradient`: the tree, or a dense or Schur-complement factor of ``A``); otherwise
central differences feed L-BFGS-B and second differences of the values the Newton polish and
certificate of `minimize_theta`. The same Hessian gives the covariance of beta (lme4's
``use.hessian = TRUE``): twice the inverse of the
deviance's Hessian, restricted to beta.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from tiers.engine.glmm_gradient import (
    has_gradient,
    has_sparse_gradient,
    laplace_gradient,
    sparse_laplace_gradient,
)
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm, PirlsError, glm_irls
from tiers.optimize.derivatives import fd_gradient, gradient_hessian, value_hessian
from tiers.optimize.minimize import FunGrad, OptSummary, minimize_theta

FloatArray = NDArray[np.float64]

#: Returned for a (theta, beta) where PIRLS fails (far from the optimum): large and finite, so the
#: line search backs off instead of stopping.
_FAILED = 1e300


class GlmmObjective:
    """The deviance of ``problem`` as a function of the stacked ``x = (theta, beta)``."""

    def __init__(self, problem: Glmm, nagq: int, scale: FloatArray | None = None) -> None:
        self.problem = problem
        self.nagq = nagq
        k = problem.n_theta
        self.k = k
        # x holds beta_j * scale_j: with the columns' SDs the optimizer's steps are on one scale
        # (a predictor in metres next to a 0/1 dummy otherwise sends the first step far off)
        self.scale = np.ones(problem.p) if scale is None else scale
        sysm = problem.system
        self.lower = np.concatenate([sysm.theta_lower, np.full(problem.p, -np.inf)])
        self.upper = np.concatenate([sysm.theta_upper, np.full(problem.p, np.inf)])
        self.failures = 0
        # the optimizer's end, the snap and the polish ask again for the point they stand on
        self._last: tuple[FloatArray, float, FloatArray] | None = None

    def __call__(self, x: FloatArray) -> float:
        """The deviance at ``x``; a large finite value where PIRLS fails."""
        try:
            value = self.problem.agq(x[: self.k], x[self.k :] / self.scale, self.nagq)
        except (PirlsError, np.linalg.LinAlgError, FloatingPointError, ValueError):
            self.failures += 1
            return _FAILED
        return value if np.isfinite(value) else _FAILED

    @property
    def has_gradient(self) -> bool:
        """The analytic gradient applies.

        Laplace with a canonical link, on the tree or a dense or Schur-complement factor of A.
        """
        return self.nagq == 1 and (has_gradient(self.problem) or has_sparse_gradient(self.problem))

    def value_and_gradient(self, x: FloatArray) -> tuple[float, FloatArray]:
        """The deviance and its analytic gradient in ``x`` (only where `has_gradient`)."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1], self._last[2].copy()
        scale = np.concatenate([np.ones(self.k), self.scale])
        try:
            m = self.problem.modes(x[: self.k], x[self.k :] / self.scale)
            value = m.minus2loglik + float(m.u @ m.u) + m.logdet
            tree = has_gradient(self.problem)
            grad = (laplace_gradient if tree else sparse_laplace_gradient)(self.problem, m) / scale
        except (PirlsError, np.linalg.LinAlgError, FloatingPointError, ValueError):
            self.failures += 1
            return _FAILED, np.zeros_like(x)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            return _FAILED, np.zeros_like(x)
        self._last = (np.array(x, dtype=np.float64), value, grad.copy())
        return value, grad


def start_values(problem: Glmm) -> tuple[FloatArray, bool]:
    """lme4's theta start and the GLM's beta, and whether the GLM's IRLS converged."""
    beta, _, ok = glm_irls(problem.y, problem.wt, problem.offset, problem.X, problem.family)
    return np.concatenate([problem.system.theta_start, beta]), ok


#: Nested fits with at least this many rows start from the optimum on a subsample of their
#: outermost groups (one in `SUBSAMPLE_SHARE`), when there are at least `SUBSAMPLE_GROUPS` of them.
SUBSAMPLE_ROWS = 400_000
SUBSAMPLE_SHARE = 8
SUBSAMPLE_GROUPS = 40


def subsample_start(
    problem: Glmm, nagq: int, x0: FloatArray
) -> tuple[FloatArray, FloatArray | None] | None:
    """A start for a large nested fit: its optimum on a random eighth of the outermost groups.

    From lme4's start (theta = 1) the optimizer spends most of its evaluations far from the
    optimum; on a subsample of whole outermost groups (the same model and levels, fewer groups)
    they cost an eighth, and the fit on all rows starts within the subsample's sampling error of
    its optimum. The result is still the full data's optimum, certified there. Parameters the
    subsample puts on their bound start just off it (the full data decide).

    Returns the start ``(theta, beta)`` and the subsample's Hessian of the deviance scaled by the
    ratio of rows (the deviance is a sum over groups: its curvature grows with them; None where
    the subsample's end point is on a bound), or None where the subsample does not apply
    (crossed or small designs, fewer than `SUBSAMPLE_GROUPS` outermost groups) or fails.
    """
    sysm = problem.system
    if (
        not isinstance(sysm, TreeSystem)
        or problem.n < SUBSAMPLE_ROWS
        or sysm.sizes[0] < SUBSAMPLE_GROUPS
    ):
        return None
    top = sysm.anc[sysm.K - 1][0][sysm.leaf] if sysm.K > 1 else sysm.leaf
    rng = np.random.default_rng(20_251_204)
    pick = np.zeros(sysm.sizes[0], dtype=bool)
    pick[rng.permutation(sysm.sizes[0])[: sysm.sizes[0] // SUBSAMPLE_SHARE]] = True
    rows = np.flatnonzero(pick[top])
    sub = Glmm(
        problem.y[rows],
        problem.wt[rows],
        problem.offset[rows],
        problem.X[rows],
        sysm.restrict(rows),
        problem.family,
    )
    try:
        inner = subsample_start(sub, nagq, x0)  # an eighth of an eighth, while still large
        if inner is None:
            opt, reuse = optimize_glmm(sub, nagq, x0)
        else:
            opt, reuse = optimize_glmm(sub, nagq, inner[0], curvature=inner[1])
    except (PirlsError, np.linalg.LinAlgError, FloatingPointError, ValueError):
        return None
    x = np.asarray(opt.theta, dtype=np.float64).copy()
    if not np.all(np.isfinite(x)) or opt.deviance >= _FAILED:
        return None
    k = problem.n_theta
    lower = sysm.theta_lower
    near = np.isfinite(lower) & (x[:k] < lower + 0.05)
    x[:k] = np.where(near, lower + 0.05, x[:k])
    curvature = None
    if reuse is not None and bool(np.all(reuse[1])) and not near.any():
        curvature = reuse[0] * (problem.n / rows.size)
    return x, curvature


def forward_hessian(fun: FunGrad, x: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
    """Forward differences of the analytic gradient (step 1e-5 relative), symmetrised.

    One gradient per free parameter instead of two (central differences), the gradient at ``x``
    itself being the one just computed (`GlmmObjective` keeps it). The truncation error is ~1e-5
    of the third derivative, against ~1e-10 for central differences: ~5e-6 relative on the
    standard errors, far inside what they are compared at (STYLE.md section 5: 1e-3).
    """
    idx = np.flatnonzero(free)
    g0 = fun(x)[1]
    steps = 1e-5 * np.maximum(1.0, np.abs(x))
    H = np.empty((idx.size, idx.size))
    for a, i in enumerate(idx):
        y = x.copy()
        y[i] += steps[i]
        H[a] = (fun(y)[1][idx] - g0[idx]) / steps[i]
    return 0.5 * (H + H.T)


def _approach(
    fun: FunGrad, x: FloatArray, H: FloatArray, lower: FloatArray, upper: FloatArray
) -> FloatArray:
    """Newton steps with a fixed approximate Hessian ``H`` until they are below 1e-4.

    With the subsample's curvature the steps contract fast (the relative error of ``H`` is the
    subsample's sampling error), so the polish that follows starts within its own first step.
    """
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return x
    f, g = fun(x)
    for _ in range(8):
        delta = -np.linalg.solve(L.T, np.linalg.solve(L, g))
        t, accepted = 1.0, False
        for _ in range(10):
            trial = np.clip(x + t * delta, lower, upper)
            ft, gt = fun(trial)
            if ft <= f:
                x, f, g, accepted = trial, ft, gt, True
                break
            t *= 0.5
        if not accepted or t * float(np.max(np.abs(delta))) <= 1e-4:
            break
    return x


def optimize_glmm(
    problem: Glmm,
    nagq: int,
    start: FloatArray | None = None,
    curvature: FloatArray | None = None,
) -> tuple[OptSummary, tuple[FloatArray, NDArray[np.bool_]] | None]:
    """Minimise the deviance over ``(theta, beta)``; the summary's ``theta`` holds both.

    Parameters
    ----------
    problem : Glmm
    nagq : int
        Quadrature points (1: Laplace).
    start : array, optional
        ``(theta, beta)``; default `start_values`.
    curvature : array, optional
        An approximate Hessian of the deviance in ``(theta, beta)`` at ``start`` (from
        `subsample_start`): Newton steps with it bring the start close to the optimum, and the
        Newton polish certifies it there without the L-BFGS-B phase (which runs if it does not).

    Returns
    -------
    OptSummary, and the Newton polish's last Hessian with its free mask (on ``(theta, beta)``,
    None when the polish computed none) when it was taken within 1e-4 of the end point: the
    covariance of the estimates can reuse it.
    """
    sd = problem.X.std(axis=0)
    scale = np.where(sd > 0, sd, 1.0)
    obj = GlmmObjective(problem, nagq, scale)
    x0 = start_values(problem)[0] if start is None else np.asarray(start, dtype=np.float64)
    k = problem.n_theta
    to_x = np.concatenate([np.ones(k), scale])
    last: list[tuple[FloatArray, NDArray[np.bool_], FloatArray]] = []

    def hessian(x: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
        if obj.has_gradient:
            H = forward_hessian(obj.value_and_gradient, x, free)
        else:
            H = value_hessian(obj, x, free)
        last[:] = [(x.copy(), free.copy(), H)]
        return H

    fun: FunGrad = (
        obj.value_and_gradient if obj.has_gradient else fd_gradient(obj, obj.lower, obj.upper)
    )
    near = curvature is not None and obj.has_gradient
    if near:
        assert curvature is not None
        x0_x = _approach(fun, x0 * to_x, curvature / np.outer(to_x, to_x), obj.lower, obj.upper)
    else:
        x0_x = x0 * to_x
    opt = minimize_theta(fun, x0_x, obj.lower, upper=obj.upper, hessian=hessian, near=near)
    reuse = None
    if last and float(np.max(np.abs(last[0][0] - opt.theta))) <= 1e-4:
        _, free, H = last[0]
        d = to_x[free]
        reuse = (H * np.outer(d, d), free)
    out = replace(
        opt,
        theta0=opt.theta0 / to_x,
        theta=opt.theta / to_x,
        gradient=opt.gradient * to_x,
    )
    return out, reuse


def deviance_hessian(
    problem: Glmm, nagq: int, x: FloatArray
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """The deviance's Hessian over the free parameters at ``x`` and the free mask.

    Parameters at their lower bound (an SD of zero) are held there.
    """
    obj = GlmmObjective(problem, nagq)
    free = ~(np.isfinite(obj.lower) & (x <= obj.lower))
    if obj.has_gradient:
        return gradient_hessian(lambda z: obj.value_and_gradient(z)[1], x, free), free
    return value_hessian(obj, x, free), free
