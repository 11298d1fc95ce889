"""Profile-likelihood intervals of a GLMM's parameters (lme4's ``confint(method = "profile")``).

For a parameter ``x_j`` (an SD of a scalar term, or a fixed effect) the profile is
``D_j(v) = min D(x | x_j = v)`` over all other parameters, and the interval is where the signed
root ``sqrt(D_j(v) - D_min)`` stays within the normal quantile (Bates et al. 2015, sec. 5.2; the
deviance here is the Laplace or quadrature one the fit used). Each bound is found by bracketing
and Brent's method on exact profile values, not interpolated.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq, minimize
from scipy.stats import norm

from tiers.engine.pirls import Glmm
from tiers.optimize.glmm import GlmmObjective

FloatArray = NDArray[np.float64]


def _profile_value(obj: GlmmObjective, x_hat: FloatArray, j: int, v: float) -> float:
    """``min D`` over the other parameters with ``x_j = v``, from the optimum's values."""
    free = np.ones(x_hat.size, dtype=bool)
    free[j] = False

    def full(y: FloatArray) -> FloatArray:
        x = x_hat.copy()
        x[free] = y
        x[j] = v
        return x

    bounds = [
        (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
        for lo, hi in zip(obj.lower[free], obj.upper[free], strict=True)
    ]
    if obj.has_gradient:

        def fun(y: FloatArray) -> tuple[float, FloatArray]:
            f, g = obj.value_and_gradient(full(y))
            return f, g[free]

        res = minimize(fun, x_hat[free], jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-13, "gtol": 1e-8})  # fmt: skip
    else:
        res = minimize(lambda y: obj(full(y)), x_hat[free], method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-13, "gtol": 1e-7})  # fmt: skip
    return float(res.fun)


def profile_interval(
    problem: Glmm, nagq: int, x_hat: FloatArray, d_min: float, j: int, se: float, level: float
) -> tuple[float, float]:
    """The profile interval of parameter ``j`` of ``x = (theta, beta)``.

    Parameters
    ----------
    problem : Glmm
    nagq : int
    x_hat : array
        The optimum; ``d_min`` the deviance there.
    j : int
    se : float
        A Wald standard error (sets the first step of the bracket; any positive scale works).
    level : float
    """
    obj = GlmmObjective(problem, nagq)
    q = float(norm.ppf(0.5 + level / 2.0))
    step = se if np.isfinite(se) and se > 0 else 0.1 * max(1.0, abs(x_hat[j]))

    def root(v: float) -> float:
        return float(np.sqrt(max(_profile_value(obj, x_hat, j, v) - d_min, 0.0)) - q)

    out = []
    for sign in (-1.0, 1.0):
        lo_bound = obj.lower[j]
        a, b, width = x_hat[j], x_hat[j] + sign * step, step
        for _ in range(30):
            if sign < 0 and b <= lo_bound:
                b = lo_bound
                if root(b) < 0:  # still inside at the bound (an SD of 0): the bound is the end
                    out.append(float(lo_bound))
                    break
            if root(b) >= 0:
                out.append(float(brentq(root, min(a, b), max(a, b), xtol=1e-7)))
                break
            width *= 1.6
            a, b = b, b + sign * width
        else:
            out.append(float("nan"))
    problem.modes(x_hat[: problem.n_theta], x_hat[problem.n_theta :])  # back to the optimum
    return out[0], out[1]
