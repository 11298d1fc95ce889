"""Newton's method from a close start, for engines whose evaluations are expensive.

`tiers.optimize.minimize.minimize_theta` runs L-BFGS-B to a tight tolerance and then polishes with
Newton steps on a central-difference Hessian: about 20 gradient evaluations for three parameters,
which is what a crossed design with a dense Schur complement of thousands of columns cannot
afford (InstEval: 19 evaluations at ~45 ms; a MovieLens-sized design: 26 at 2-5 s). When the
start is already close (the moment estimates of `tiers.engine.moment_start`: within ~10% of the
optimum on InstEval, 2% on the ratings design) Newton's method converges in a few steps:

1. the gradient at the start and a forward-difference Hessian of it (``n_theta`` more gradients),
   or second differences of the criterion's values where those are cheap;
2. Newton steps with halving until the criterion does not rise, the Hessian updated by BFGS
   from each step (Nocedal and Wright 2006, eq. 6.19; kept positive definite by skipping updates
   with ``s'y <= 0``), so the convergence is superlinear without new difference Hessians;
3. stop when the Newton step is below `STEP_DONE` or would lower the criterion by less than
   `DECREASE_DONE` (or `DECREASE_REL` of it, rounding level); that step, from a positive
   definite Hessian, is the certificate `minimize_theta` reports (``newton_step``).

Anything outside this regime returns ``ok=False`` and the caller falls back to `minimize_theta`
(L-BFGS-B, boundary probes and the polish): a Hessian that is not positive definite, a step that
would leave the box or end next to a bound (a variance at 0 needs the boundary logic), or no
convergence within `MAX_STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
FunGrad = Callable[[FloatArray], tuple[float, FloatArray]]

#: Relative step of the forward differences of the gradient (the Hessian only scales the steps:
#: its O(h) error slows the convergence slightly, it does not move the optimum).
HESSIAN_STEP = 1e-4
#: Newton step below which theta is converged (as the polish of `minimize_theta`).
STEP_DONE = 1e-7
#: ... or when the step would lower the criterion by less than this (absolute; lme4's optima of
#: InstEval and of the references sit ~1e-8 above the converged value) ...
DECREASE_DONE = 1e-9
#: ... or than this share of the criterion: ~45 units in the last place, under the rounding of
#: the criterion's own evaluation (sums of thousands of logs and a factorisation). The ratings
#: design's criterion (2.9e6) took a last gradient evaluation (2-3 s) to gain 2.6e-9, 6 ulps.
DECREASE_REL = 1e-14
#: Newton steps before giving up to the general path.
MAX_STEPS = 12
#: Relative step of the second differences of the criterion's values (rounding, eps f / h^2, stays
#: ~1e-5 of the curvature for deviances up to ~1e7; truncation is O(h)).
VALUE_STEP = 1e-3
#: A parameter this close to its lower bound (relative to its scale) goes to the general path.
NEAR_BOUND = 1e-3
#: A Newton step no halving of which lowers the criterion is accepted as converged below this
#: (ten times under `tiers.optimize.minimize.STEP_TOL`).
ROUNDING_STEP = 1e-5


@dataclass(frozen=True, slots=True)
class NewtonResult:
    """What `newton_theta` reached.

    Attributes
    ----------
    ok : bool
        Converged inside the regime; False: use the general path.
    theta, f, g
        The end point (the last accepted one when not ``ok``), the objective and gradient there.
    step : float
        The last Newton step (the certificate when ``ok``).
    evaluations : int
    """

    ok: bool
    theta: FloatArray
    f: float
    g: FloatArray
    step: float
    evaluations: int


def _start_hessian(
    call: FunGrad,
    value: Callable[[FloatArray], float] | None,
    theta: FloatArray,
    f: float,
    g: FloatArray,
    inside: Callable[[FloatArray], bool],
) -> FloatArray | None:
    """Forward differences of the gradient, or with ``value`` second differences of the values.

    From values: ``H_ii = 2 (f(x + h_i) - f - h_i g_i) / h_i^2`` and
    ``H_ij = (f(x + h_i + h_j) - f(x + h_i) - f(x + h_j) + f) / (h_i h_j)``, ``n (n + 1) / 2``
    criterion evaluations in place of ``n`` gradients. None when a probe leaves the box.
    """
    n = theta.size
    H = np.empty((n, n))
    if value is None:
        for i in range(n):
            h = HESSIAN_STEP * max(abs(theta[i]), 1.0)
            probe = theta.copy()
            probe[i] += h
            if not inside(probe):
                return None
            _, gp = call(probe)
            H[:, i] = (gp - g) / h
        return 0.5 * (H + H.T)
    steps = VALUE_STEP * np.maximum(np.abs(theta), 1.0)
    if not inside(theta + steps):
        return None
    fi = np.empty(n)
    for i in range(n):
        probe = theta.copy()
        probe[i] += steps[i]
        fi[i] = value(probe)
        H[i, i] = 2.0 * (fi[i] - f - steps[i] * g[i]) / steps[i] ** 2
    for i in range(n):
        for j in range(i):
            probe = theta.copy()
            probe[[i, j]] += steps[[i, j]]
            H[i, j] = H[j, i] = (value(probe) - fi[i] - fi[j] + f) / (steps[i] * steps[j])
    return H


def newton_theta(
    fun: FunGrad,
    theta0: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    value: Callable[[FloatArray], float] | None = None,
) -> NewtonResult:
    """Minimise ``fun`` from ``theta0`` by Newton's method (see the module docstring).

    Parameters
    ----------
    fun : callable
        The objective and its analytic gradient.
    theta0 : array
        A start close to the optimum, inside the box.
    lower, upper : arrays
        Bounds of theta.
    value : callable, optional
        The objective alone, when it costs well under a gradient (the crossed engine: the
        inverse of the Schur complement is only for the gradient): the start's Hessian is then
        taken from second differences of values.
    """
    theta = np.asarray(theta0, dtype=np.float64).copy()
    n = theta.size
    evaluations = 0

    def call(x: FloatArray) -> tuple[float, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        f, g = fun(x)
        return float(f), np.asarray(g, dtype=np.float64)

    def inside(x: FloatArray) -> bool:
        scale = np.maximum(np.abs(x), 1.0)
        return bool(np.all(x - lower > NEAR_BOUND * scale) and np.all(upper - x > 0.0))

    def out(ok: bool, step: float = np.inf) -> NewtonResult:
        return NewtonResult(ok, theta, f, g, step, evaluations)

    f, g = np.inf, np.full(n, np.nan)
    if not inside(theta):
        return out(False)
    f, g = call(theta)
    if not (np.isfinite(f) and np.all(np.isfinite(g))):
        return out(False)
    H = _start_hessian(call, value, theta, f, g, inside)
    if value is not None:
        evaluations += n * (n + 1) // 2
    if H is None:
        return out(False)
    for _ in range(MAX_STEPS):
        try:
            L = np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            return out(False)
        delta = -np.linalg.solve(L.T, np.linalg.solve(L, g))
        step = float(np.max(np.abs(delta)))
        # the quadratic model's decrease -g'delta / 2: below `done` the next evaluation
        # would only confirm the optimum
        done = max(DECREASE_DONE, DECREASE_REL * abs(f))
        if step < STEP_DONE or -0.5 * float(g @ delta) < done:
            return out(True, step)
        scale, accepted = 1.0, False
        for _ in range(20):
            trial = theta + scale * delta
            if not inside(trial):
                return out(False, step)
            ft, gt = call(trial)
            if ft <= f:
                accepted = True
                break
            scale *= 0.5
        if not accepted:
            # rounding of the criterion hides a step this small: it is the certificate
            return out(step < ROUNDING_STEP, step)
        s, y = trial - theta, gt - g
        sy = float(s @ y)
        if sy > 0.0:
            Hs = H @ s
            H = H + np.outer(y, y) / sy - np.outer(Hs, Hs) / float(s @ Hs)
        theta, f, g = trial, ft, gt
    return out(False, step)
