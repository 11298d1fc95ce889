"""Profile zeta traces of the variance parameters: the numbers behind lme4's ``xyplot(profile(m))``.

For each SD, correlation and sigma, the signed root ``zeta(v) = sign(v - psi_hat) sqrt(dev(v) -
dev_min)`` of the profiled criterion (`tiers.inference.profile.Profiler.varpar_deviance`) on a grid
of values each side of the estimate, out to ``|zeta| = zeta_max`` or the end of the parameter's
range. A straight line means the Wald interval on that scale is accurate (Bates et al. 2015,
section 5.1 of the lme4 vignette); curvature shows where a profile interval differs from it.

The grid steps are a fraction of the observed-information SE (0.3 x the SD where that SE is
missing), grown when zeta rises slowly, so that about ``points`` values fall on each side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tiers._threads import single_thread_blas
from tiers.inference.intervals import _se_varpar
from tiers.results.result import FitResult
from tiers.variance.scale import SdCor

__all__ = ["zeta_profiles"]

#: Most evaluations each side of the estimate (each is one bounded optimisation).
MAX_POINTS = 40


def _side(
    pr: Any,
    i: int,
    est: float,
    step: float,
    edge: float,
    zmax: float,
    direction: float,
    points: int,
) -> tuple[list[float], list[float]]:
    values, zetas = [], []
    h = step
    for _ in range(MAX_POINTS):
        v = est + direction * h
        at_edge = direction * (v - edge) >= 0.0
        if at_edge:
            v = edge
        z = float(np.sqrt(max(pr.varpar_deviance(i, v), 0.0)))
        values.append(v)
        zetas.append(direction * z)
        if z >= zmax or at_edge:
            break
        # a trace rising slower than a straight line to zmax in 2 x points steps: longer steps
        if z < zmax * len(values) / (2 * points):
            step *= 1.5
        h += step
    return values, zetas


def zeta_profiles(res: FitResult, *, zeta_max: float = 2.6, points: int = 8) -> pd.DataFrame:
    """Profile zeta of every variance parameter on a grid around its estimate.

    Parameters
    ----------
    res : FitResult
    zeta_max : float
        How far out each trace goes (2.6: past the 99% critical value, 2.576).
    points : int
        Grid points aimed for on each side of the estimate.

    Returns
    -------
    DataFrame
        ``parameter, value, zeta`` sorted by parameter (lme4's names and order) then value, with
        the estimate itself at zeta 0. ``attrs["criterion"]`` names the criterion profiled.
    """
    if not (zeta_max > 0 and np.isfinite(zeta_max)):
        raise ValueError(f"zeta_max must be a positive number; got {zeta_max!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2; got {points!r}")
    from tiers.inference.profile import Profiler

    sc = SdCor.from_terms(res.terms)
    rows: list[tuple[str, float, float]] = []
    with single_thread_blas():
        pr = Profiler(res.devfun, sc, np.asarray(res.theta), res.sigma, res.xnames)
        se = _se_varpar(res, sc)
        for i, name in enumerate(sc.names):
            est = float(pr.p_hat[i])
            kind = sc.kinds[i]
            base = se[i] if np.isfinite(se[i]) and se[i] > 0 else 0.3 * (est or res.sigma)
            if kind == "cor":
                base = min(base, 0.5)
            step = zeta_max * base / points
            lo = float(pr.p_lo[i]) if kind != "sigma" else 1e-8 * res.sigma
            hi = float(pr.p_hi[i])
            rows.append((name, est, 0.0))
            for edge, direction in ((lo, -1.0), (hi, 1.0)):
                if direction * (edge - est) <= 0.0:
                    continue  # on the boundary (an SD at zero): nothing on this side
                vs, zs = _side(pr, i, est, step, edge, zeta_max, direction, points)
                rows.extend((name, v, z) for v, z in zip(vs, zs, strict=True))
    out = pd.DataFrame(rows, columns=["parameter", "value", "zeta"])
    order = {n: k for k, n in enumerate(sc.names)}
    out = out.sort_values(
        ["parameter", "value"], key=lambda s: s.map(order) if s.name == "parameter" else s
    )
    out = out.reset_index(drop=True)
    out.attrs["criterion"] = res.method
    return out
