"""Newton steps in log theta on an engine's average-information Hessian.

The crossed engine with random intercepts returns, with each gradient, an approximate Hessian of
its criterion in ``log theta`` (`tiers.engine.crossed_information`) for the price of a solve:
no difference Hessian is needed. In log theta the profiled criterion is close to quadratic
(variance components act multiplicatively), and that Hessian is within a few per cent of the
exact one near the optimum, so from the moment start each step gains two to four digits: InstEval
takes 4 gradient evaluations (criterion 20 -> 0.25 -> 7e-5 -> 2e-10 above the optimum) where
Newton in theta on a BFGS-updated difference Hessian took 6 gradients and 6 values (that path
was removed once no engine used it).

Each step is ``delta = -H^-1 g`` in log theta (``g`` the gradient in log theta), halved until the
criterion does not rise; the fit stops, as `tiers.optimize.newton` does, when the step or the
decrease it promises (``-g'delta / 2``) is below that module's thresholds. That last step from a
positive definite ``H`` is the certificate (``newton_step``, here in theta's units).

A point reached by a step that promised more than `ROUGH_ABOVE` (and the start) is evaluated
*roughly*: the engine may take its gradient's traces from a single-precision inverse (the crossed
engine's ``rough``), which halves the inversion's cost. Such a gradient only steers the next
step: on InstEval it differed from the double-precision one by ~2e-6 where the step's own error
(from the approximate Hessian) was ~1e-1. A certificate is read from a gradient in double
precision only: a rough point that would stop the fit is evaluated again. InstEval: the first
three of four evaluations are rough (-24 ms of 0.28 s). Outside this
regime (a Hessian not positive definite, a theta near its bound, a Newton step in theta itself
that would leave the box, no convergence within `tiers.optimize.newton.MAX_STEPS`) it returns
``ok=False`` and the caller takes the general path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from tiers.optimize import newton as nt

FloatArray = NDArray[np.float64]
#: The criterion, its gradient in theta and its Hessian in log theta, at theta; the flag allows a
#: rough gradient (module docstring).
FunGradInfo = Callable[[FloatArray, bool], tuple[float, FloatArray, FloatArray]]
#: A step that promises to lower the criterion by more than this leads to a rough evaluation: the
#: next point's decrease is then still far above any stopping threshold (InstEval's steps shrank
#: it by 70x, 3,500x and 250,000x).
ROUGH_ABOVE = 1e-2


def _toward_bound(
    theta: FloatArray,
    g: FloatArray,
    g_log: FloatArray,
    H: FloatArray,
    inside: Callable[[FloatArray], bool],
) -> bool:
    """Whether Newton's step in theta itself would leave the box.

    A variance whose optimum is 0 (``f ~ f0 + a theta^2``) is approached in log theta by steps of
    ``-1/2`` (theta x 0.61 each: ~10 gradients from 0.1 to the bound check), while the step in
    theta goes to 0 at once: that is the sign to hand over to the boundary logic of the general
    path, as `tiers.optimize.newton` does. The Hessian in theta is
    ``(H - diag(g_log)) / (theta theta')``; where it is not positive definite the test is skipped.
    """
    H_theta = (H - np.diag(g_log)) / np.outer(theta, theta)
    try:
        L = np.linalg.cholesky(H_theta)
    except np.linalg.LinAlgError:
        return False
    return not inside(theta - np.linalg.solve(L.T, np.linalg.solve(L, g)))


def scoring_theta(
    fun: FunGradInfo,
    theta0: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    *,
    rough: bool = False,
) -> nt.NewtonResult:
    """Minimise ``fun`` from ``theta0 > 0`` by Newton steps in log theta (module docstring).

    Parameters
    ----------
    fun : callable
        ``(theta, rough) -> (criterion, gradient in theta, Hessian in log theta)``; ``rough``
        allows a gradient for steering only (module docstring).
    theta0 : array
        A start inside the box, every entry positive.
    lower, upper : arrays
        Bounds of theta.
    rough : bool
        ``fun`` returns a rough gradient when asked: the start and the points of long steps are
        evaluated so (module docstring). False: every evaluation is precise.
    """
    theta = np.asarray(theta0, dtype=np.float64).copy()
    evaluations = 0

    def call(x: FloatArray, rough: bool) -> tuple[float, FloatArray, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        f, g, H = fun(x, rough)
        return float(f), np.asarray(g, dtype=np.float64), np.asarray(H, dtype=np.float64)

    def inside(x: FloatArray) -> bool:
        scale = np.maximum(np.abs(x), 1.0)
        return bool(
            np.all(x > 0.0)
            and np.all(x - lower > nt.NEAR_BOUND * scale)
            and np.all(upper - x > 0.0)
        )

    def out(ok: bool, step: float = np.inf) -> nt.NewtonResult:
        return nt.NewtonResult(ok, theta, f, g, step, evaluations)

    f, g = np.inf, np.full(theta.size, np.nan)
    if not inside(theta):
        return out(False)
    # whether the current point's gradient is rough; once precise, every later point is
    coarse = rough
    f, g, H = call(theta, coarse)
    step = np.inf
    # a precise evaluation of a rough point is not a step
    for _ in range(nt.MAX_STEPS + int(rough)):
        g_log = g * theta
        if not (np.isfinite(f) and np.all(np.isfinite(g_log)) and np.all(np.isfinite(H))):
            return out(False)
        try:
            L = np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            return out(False)
        if _toward_bound(theta, g, g_log, H, inside):
            return out(False)
        delta = -np.linalg.solve(L.T, np.linalg.solve(L, g_log))
        # the step in theta's units, as the certificate of `tiers.optimize.minimize` reads it
        step = float(np.max(np.abs(theta * np.expm1(delta))))
        done = max(nt.DECREASE_DONE, nt.DECREASE_REL * abs(f))
        decrease = -0.5 * float(g_log @ delta)
        stop = step < nt.STEP_DONE or decrease < done
        scale, accepted = 1.0, False
        coarse_next = coarse and decrease > ROUGH_ABOVE
        # a short step from a rough gradient may be its rounding's: one try, then the precise one
        tries = 0 if stop else 1 if coarse and decrease <= ROUGH_ABOVE else 20
        for _ in range(tries):
            trial = theta * np.exp(scale * delta)
            if not inside(trial):
                return out(False, step)
            ft, gt, Ht = call(trial, coarse_next)
            if ft <= f:
                accepted = True
                break
            scale *= 0.5
        if not accepted and coarse:
            # a certificate (a small step, or one that rounding hides) needs the precise gradient
            coarse = False
            f, g, H = call(theta, coarse)
            continue
        if stop:
            return out(True, step)
        if not accepted:
            # rounding of the criterion hides a step this small: it is the certificate
            return out(step < nt.ROUNDING_STEP, step)
        theta, f, g, H, coarse = trial, ft, gt, Ht, coarse_next
    return out(False, step)
