"""Numerical derivatives: the one place tiers differentiates by finite differences.

* `fd_gradient`: objective and central-difference gradient (one-sided next to a bound), for
  engines without an analytic gradient (step 1e-6 relative: truncation, h^2 times the third
  derivative, and rounding, eps f / h, both stay far below the gradient's scale for deviances up
  to ~1e7).
* `jacobian` and `hessian`: central differences of a function's values, optionally refined by
  Richardson extrapolation over halvings of the step (numDeriv's method, which lmerTest uses for
  Satterthwaite's df; the error is in even powers of h, so each halving gains two orders).
* Step rules: `relative_steps` (``rel * max(1, |x|)``) and `lmertest_steps` (10% of ``|x|``,
  1e-4 at zero: numDeriv's default).

Callers choose the step for what they differentiate: an analytic gradient (1e-5 relative), a
deviance's values (1e-4 relative: rounding eps f / h^2 stays ~1e-8 of the curvature), or
lmerTest's rule when matching lmerTest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
FunGrad = Callable[[FloatArray], tuple[float, FloatArray]]


def relative_steps(x: FloatArray, rel: float) -> FloatArray:
    """Steps ``rel * max(1, |x_i|)``."""
    return rel * np.maximum(1.0, np.abs(x))


def lmertest_steps(x: FloatArray, d: float = 0.1) -> FloatArray:
    """NumDeriv's first steps: ``d |x_i|``, and 1e-4 where ``x_i`` is (nearly) zero."""
    return np.where(np.abs(x) < np.sqrt(1e-7), 1e-4, d * np.abs(x))


def _richardson(values: list[Any]) -> Any:
    """Extrapolate central differences at steps h, h/2, h/4, ... (error in even powers of h)."""
    A = list(values)
    for m in range(1, len(A)):
        A = [(4**m * A[k + 1] - A[k]) / (4**m - 1) for k in range(len(A) - 1)]
    return A[0]


def _free_index(x: FloatArray, free: BoolArray | None) -> NDArray[np.intp]:
    return np.arange(x.size) if free is None else np.flatnonzero(free)


def jacobian(
    f: Callable[[FloatArray], Any],
    x: FloatArray,
    steps: FloatArray,
    *,
    free: BoolArray | None = None,
    richardson: int = 1,
) -> FloatArray:
    """``df/dx_i`` for the ``free`` coordinates, stacked on the first axis.

    ``f`` may return a scalar or an array; ``steps`` are the first steps per coordinate,
    halved ``richardson - 1`` times.
    """
    out = []
    for i in _free_index(x, free):
        ests = []
        for k in range(richardson):
            e = np.zeros(x.size)
            e[i] = steps[i] / 2**k
            ests.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2.0 * e[i]))
        out.append(_richardson(ests))
    return np.array(out)


def hessian(
    f: Callable[[FloatArray], float],
    x: FloatArray,
    steps: FloatArray,
    *,
    free: BoolArray | None = None,
    richardson: int = 1,
) -> FloatArray:
    """Second differences of ``f``'s values over the ``free`` coordinates.

    Three-point on the diagonal, four-point off it, refined by Richardson extrapolation.
    """
    idx = _free_index(x, free)
    m = idx.size
    f0 = f(x)
    H = np.zeros((m, m))

    def at(*moves: tuple[int, float]) -> float:
        y = x.copy()
        for i, d in moves:
            y[idx[i]] += d
        return f(y)

    for a in range(m):
        for b in range(a + 1):
            ests = []
            for k in range(richardson):
                ha, hb = steps[idx[a]] / 2**k, steps[idx[b]] / 2**k
                if a == b:
                    ests.append((at((a, ha)) - 2.0 * f0 + at((a, -ha))) / ha**2)
                else:
                    ests.append(
                        (
                            at((a, ha), (b, hb))
                            - at((a, ha), (b, -hb))
                            - at((a, -ha), (b, hb))
                            + at((a, -ha), (b, -hb))
                        )
                        / (4.0 * ha * hb)
                    )
            H[a, b] = H[b, a] = float(_richardson(ests))
    return H


def gradient_hessian(
    gradient: Callable[[FloatArray], FloatArray], x: FloatArray, free: BoolArray
) -> FloatArray:
    """Central differences of an analytic gradient over the ``free`` coordinates, symmetrised.

    The step is 1e-5 relative.
    """
    idx = np.flatnonzero(free)
    J = jacobian(gradient, x, relative_steps(x, 1e-5), free=free)
    H = J[:, idx]
    return 0.5 * (H + H.T)


def value_hessian(dev: Callable[[FloatArray], float], x: FloatArray, free: BoolArray) -> FloatArray:
    """Second differences of a deviance's values over the ``free`` coordinates.

    The step is 1e-4 relative.
    """
    return hessian(dev, x, relative_steps(x, 1e-4), free=free)


def fd_gradient(
    dev: Callable[[FloatArray], float], lower: FloatArray, upper: FloatArray
) -> FunGrad:
    """Objective and central-difference gradient (one-sided next to a bound, step 1e-6 relative)."""

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
