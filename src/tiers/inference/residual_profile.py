"""Likelihood-profile intervals for the residual structure's parameters (phi, rho, SD ratios).

For a parameter held at ``v`` on its unconstrained scale (`tiers.design.residual_params`), the
profile is the engine's criterion (REML or ML, as fitted; beta and sigma profiled out) minimised
over every other parameter: the random effects' theta within their bounds and the other residual
parameters. The interval is where ``profile(v) - min`` stays below ``chi2_1(level)``, found as in
`tiers.inference.profile`: steps outwards from the estimate (the first of one Wald SE, doubling)
until the profile passes the critical value, then brentq on the bracket, warm-started along the
path. The ends map back to the natural scale by the monotone maps of the structure (tanh, the
logistic, exp); a profile that stays below the critical value to the end of the range gives that
end (phi = 1, an SD ratio of infinity). Correlations of unstructured, Toeplitz and MA residuals are
functions of several parameters and are not profiled (their rows are NaN, with a note).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.optimize import brentq, minimize

from tiers._lazy import stats
from tiers._threads import single_thread_blas
from tiers.design.residual_params import ResidualParams
from tiers.errors import TiersError
from tiers.options import check_level, check_option
from tiers.results.result import FitResult

FloatArray = NDArray[np.float64]

#: Doublings of the step before an end is declared out of reach (the end of the range).
MAX_STEPS = 12
#: Structures whose correlations each depend on several unconstrained parameters.
SEVERAL = ("unstructured", "banded", "toeplitz", "ma")
#: Beyond this unconstrained value a correlation is 1 - 1e-15: the end of its range.
FAR = 35.0


@dataclass(frozen=True, slots=True)
class ResidualProfile:
    """Profile intervals of the residual parameters (natural scale).

    Attributes
    ----------
    names : tuple of str
    estimate, lower, upper : arrays
    level : float
    notes : tuple of str
    """

    names: tuple[str, ...]
    estimate: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float
    notes: tuple[str, ...]


def profile_residual(res: FitResult, level: float = 0.95) -> ResidualProfile:
    """Profile-likelihood intervals of ``res``'s residual parameters.

    Raises
    ------
    TiersError
        The fit has no residual structure.
    """
    lay = res.design.residuals
    if lay is None:
        raise TiersError("the fit has no residual structure: there is nothing to profile")
    params = lay.params
    eng = res.devfun
    full = np.asarray(res.theta, dtype=np.float64)
    n_re = full.size - params.n_rho
    dmin = float(eng.deviance(full))
    crit = float(stats.chi2.ppf(level, 1))
    rinf = res.residual_inference
    assert rinf is not None
    lo_b, hi_b = eng.theta_lower, eng.theta_upper
    lower = np.full(params.n_rho, np.nan)
    upper = np.full(params.n_rho, np.nan)
    notes: list[str] = []
    for j in range(params.n_rho):
        if params.spec.kind in SEVERAL and j < params.n_corr:
            continue
        at = n_re + j
        others = np.array([i for i in range(full.size) if i != at])
        start = {"x": full[others].copy()}

        def excess(
            v: float,
            at: int = at,
            others: NDArray[np.int64] = others,
            start: dict[str, FloatArray] = start,
        ) -> float:
            def fun(z: FloatArray) -> tuple[float, FloatArray]:
                x = full.copy()
                x[others] = z
                x[at] = v
                if eng.has_gradient:
                    f, g = eng.deviance_and_gradient(x)
                    return f, g[others]
                f = eng.deviance(x)
                g = np.empty(z.size)
                for k in range(z.size):
                    h = 1e-6 * max(1.0, abs(z[k]))
                    zp = z.copy()
                    zp[k] = min(z[k] + h, hi_b[others][k])
                    g[k] = (eng.deviance(_put(x, others, zp)) - f) / (zp[k] - z[k])
                return f, g

            out = minimize(
                fun,
                start["x"],
                jac=True,
                method="L-BFGS-B",
                bounds=list(zip(lo_b[others], hi_b[others], strict=True)),
                options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500},
            )
            start["x"] = out.x
            return float(out.fun) - dmin - crit

        se = float(rinf.unconstrained_se[j])
        bounds = []
        for direction in (-1.0, 1.0):
            start["x"] = full[others].copy()
            step = se if np.isfinite(se) and se > 0 else 0.5
            inner = full[at]
            end = None
            for _ in range(MAX_STEPS):
                outer = full[at] + direction * step
                if abs(outer) > FAR:
                    break
                if excess(outer) > 0:
                    end = brentq(excess, min(inner, outer), max(inner, outer), xtol=1e-8)
                    break
                inner, step = outer, 2.0 * step
            bounds.append(direction * np.inf if end is None else end)
        lo_x, hi_x = bounds
        lower[j] = _natural(params, full[n_re:], j, lo_x)
        upper[j] = _natural(params, full[n_re:], j, hi_x)
    if params.spec.kind in SEVERAL:
        notes.append(
            f"the correlations of {params.spec.kind} residuals depend on several parameters and "
            "are not profiled; see the Wald intervals"
        )
    return ResidualProfile(params.names, rinf.estimate, lower, upper, level, tuple(notes))


def _put(x: FloatArray, idx: NDArray[np.int64], z: FloatArray) -> FloatArray:
    out = x.copy()
    out[idx] = z
    return out


def _natural(params: ResidualParams, rho: FloatArray, j: int, value: float) -> float:
    """The natural value of parameter ``j`` when its unconstrained value is ``value``."""
    r = rho.copy()
    r[j] = np.clip(value, -FAR, FAR)
    return float(params.natural(r)[j])


def residual_intervals(res: FitResult, method: str = "wald", level: float = 0.95) -> pd.DataFrame:
    """Wald or profile intervals of the residual parameters (`tiers.LmmResult.residual_intervals`).

    Raises
    ------
    ValueError
        Unknown method or level outside (0, 1).
    TiersError
        The fit has no residual structure.
    """
    check_option(method, ("wald", "profile"), "method")
    check_level(level)
    if res.design.residuals is None:
        raise TiersError("the fit has no residual structure (residuals=): no parameters")
    notes: tuple[str, ...] = ()
    if method == "profile":
        with single_thread_blas():
            pr = profile_residual(res, level)
        cols = {"estimate": pr.estimate, "lower": pr.lower, "upper": pr.upper}
        notes = pr.notes
    else:
        rinf = res.variance_at(level)[2]
        assert rinf is not None
        cols = {
            "estimate": rinf.estimate,
            "std_error": rinf.se,
            "lower": rinf.lower,
            "upper": rinf.upper,
        }
    out = pd.DataFrame({"name": list(res.design.residuals.params.names), **cols})
    out.attrs.update({"method": method, "level": level, "notes": list(notes)})
    return out
