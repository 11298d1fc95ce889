"""Likelihood-profile intervals for the variance parameters, fixed effects and variance shares.

For a parameter ``psi`` the profile is ``dev(v) = min { f : psi = v }`` over every other parameter,
and the interval is where the signed root ``zeta(v) = sign(v - psi_hat) sqrt(dev(v) - dev_min)``
lies within ``+- z_{(1+level)/2}``:

* an SD, a correlation or sigma: held at ``v`` on the data scale (lme4's ``"sdcor"`` varpar scale)
  while the other SDs, correlations and sigma are optimised (bounded L-BFGS-B on
  the engine's ``criterion``, beta profiled out);
* a fixed effect ``beta_j``: held at ``v`` while theta is optimised; beta's other entries and sigma
  have closed forms (the engine's ``criterion_fixed``);
* a variance share or cumulative ICC: the share is held at ``v`` by writing the variances as
  ``total x shares`` with the shares inside and outside the target group rescaled to sum to ``v``
  and ``1 - v``; the total and the relative sizes within each group are optimised.

The criterion is the one the model was fitted with: the REML criterion for REML fits (for the
fixed effects the REML criterion extended by beta, whose minimum over beta is the REML criterion),
the ML deviance for ML fits. lme4 refits REML models by ML before profiling; ``method="profile-ml"``
in `tiers.inference.intervals` does the same.

The crossings are found by root finding, not by lme4's spline through a grid: from the estimate,
steps outwards (the first one of the Wald half-width) until ``|zeta|`` exceeds ``z``, then brentq
on the bracket. A bound that the profile never reaches inside the parameter's range is the end of
the range: 0 for an SD (always so for an SD estimated at zero), -1 or 1 for a correlation, 0 or 1
for a share; an upper end that is not reached within 60 doublings is reported as infinite.

Every crossing is verified: the profile at the root is recomputed from the estimate (made valid
at the held value) rather than from the path of warm starts; if that finds a lower criterion, the
path had stalled (the root is not a crossing), the path follows the better optimum and the search
goes on outwards, with a note. While a correlation is held, the others are kept inside the valid
set (a positive-definite correlation matrix) by a penalty on its negative eigenvalue: outside it
the held value would not mean what it says.

Non-monotonic profiles (lme4 warns "non-monotonic profile" and falls back to linear
interpolation): tiers takes the crossing nearest the estimate on each side, so the interval is the
connected set of values around the estimate whose profile stays below the critical value, and adds
a note saying the profile was not monotonic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq, minimize

from tiers.engine.contract import Engine
from tiers.optimize.derivatives import fd_gradient
from tiers.variance.scale import SdCor

FloatArray = NDArray[np.float64]

#: Doublings of the step before an end is declared unreachable (infinite).
MAX_STEPS = 60
#: The criterion's value where it cannot be evaluated (far outside any interval).
FAR = 1e12
#: Penalty per unit of negative eigenvalue of a term's correlation matrix: keeps the profile's
#: optimiser inside the valid correlations, where the held value means what it says.
PENALTY = 1e4
#: A crossing is verified when a fresh optimisation at it agrees with the path to this much zeta.
VERIFY_TOL = 1e-3


@dataclass
class Bound:
    """One end of a profile interval and what happened finding it."""

    value: float
    note: str = ""


@dataclass
class _Path:
    """Solved points of one profile: value -> optimum of the other parameters (warm starts).

    A point warm-starts from the nearest solved point between the estimate and itself (or from
    the estimate): following the path outwards from the estimate, never back from a far point
    whose optimum may lie in another basin.
    """

    centre: float
    points: dict[float, FloatArray] = field(default_factory=dict)

    def nearest(self, v: float, default: FloatArray) -> FloatArray:
        d = v - self.centre
        inner = [
            k for k in self.points if (k - self.centre) * d >= 0 and abs(k - self.centre) <= abs(d)
        ]
        if not inner:
            return default
        return self.points[min(inner, key=lambda k: abs(k - v))]


def _minimize(fun: Callable[[FloatArray], float], x0: FloatArray, lo: FloatArray, hi: FloatArray):
    """Bounded minimisation with central-difference gradients (small problems: a few parameters)."""
    if x0.size == 0:
        return x0, fun(x0)
    fg = fd_gradient(fun, lo, hi)
    bounds = [
        (a if np.isfinite(a) else None, b if np.isfinite(b) else None)
        for a, b in zip(lo, hi, strict=True)
    ]
    res = minimize(
        fg,
        np.clip(x0, lo, hi),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 500, "ftol": 1e-11, "gtol": 1e-6, "maxcor": 20},
    )
    x = np.clip(np.asarray(res.x, dtype=np.float64), lo, hi)
    return x, float(fun(x))


class Profiler:
    """Profiles of one fitted model's parameters (see the module docstring).

    Parameters
    ----------
    problem : Engine
        The engine, with the criterion the intervals are computed on.
    sdcor : SdCor
        The variance parameters' names and map.
    theta, sigma : the estimates under ``problem``'s criterion.
        With a residual structure ``theta`` ends with its unconstrained parameters ``rho``
        (`tiers.design.residual_params`): they follow the SDs, correlations and sigma in the
        profile's vector ``p`` and are optimised with the others whenever one is held (nlme's
        parameters of ``corStruct`` and ``varFunc`` re-estimated along the profile).
    xnames : names of the fixed effects.
    """

    def __init__(
        self,
        problem: Engine,
        sdcor: SdCor,
        theta: FloatArray,
        sigma: float,
        xnames: tuple[str, ...],
    ) -> None:
        self.problem = problem
        self.sdcor = sdcor
        self.theta = np.asarray(theta, dtype=np.float64)
        self.sigma = float(sigma)
        self.xnames = xnames
        self.m = sdcor.size  # the SDs, correlations and sigma; then rho
        n_rho = self.theta.size - sdcor.n_theta
        rho = self.theta[sdcor.n_theta :]
        self.p_hat = np.concatenate([sdcor.from_theta(self.theta, self.sigma), rho])
        self.dev_min = problem.criterion(self.theta, self.sigma)
        sol = problem.solve(self.theta)
        self.beta = sol.beta
        self.vcov = self.sigma**2 * sol.unscaled_vcov
        lo, hi = sdcor.theta_bounds()
        self.theta_lo = np.concatenate([lo, np.full(n_rho, -np.inf)])
        self.theta_hi = np.concatenate([hi, np.full(n_rho, np.inf)])
        # scale of each variance parameter in the optimiser's coordinates (rho: unconstrained)
        kinds = np.array(sdcor.kinds + ("rho",) * n_rho)
        unit = (kinds == "cor") | (kinds == "rho")
        self.scale = np.where(unit, 1.0, np.where(self.p_hat > 0, self.p_hat, self.sigma))
        self.p_lo = np.where(kinds == "cor", -1.0, np.where(kinds == "rho", -np.inf, 0.0))
        self.p_lo[self.m - 1] = 1e-6
        self.p_hi = np.where(kinds == "sd", np.inf, 1.0)
        self.p_hi[self.m - 1 :] = np.inf
        for b in sdcor.blocks:  # an exchangeable correlation is bounded below by -1/(q-1)
            if b.cov.kind == "exchangeable" and b.cor_at:
                self.p_lo[list(b.cor_at)] = -1.0 / (b.cov.q - 1)
        self.has_cor = "cor" in sdcor.kinds
        self.paths: dict[object, _Path] = {}
        self.n_evaluations = 0

    # ------------------------------------------------------------------------ profile values --

    def _f(self, p: FloatArray) -> float:
        self.n_evaluations += 1
        # correlations outside the valid set are projected by to_theta; the penalty keeps the
        # optimiser from resting there (the projected matrix has other correlations than p)
        bad = max(0.0, -self.sdcor.min_eigenvalue(p[: self.m])) if self.has_cor else 0.0
        theta, sigma = self.sdcor.to_theta(p[: self.m])
        try:
            return self.problem.criterion(np.concatenate([theta, p[self.m :]]), sigma) + (
                PENALTY * bad
            )
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            # far out in a profile (an SD 1e6 times its estimate) the fixed-effects system can
            # lose definiteness in floating point: that point is far outside any interval
            return FAR

    def varpar_deviance(self, i: int, v: float, *, fresh: bool = False) -> float:
        """``min f`` with variance parameter ``i`` held at ``v``.

        The optimisation starts from the nearest solved point of the path; ``fresh`` starts from
        the estimate made valid at ``v`` instead (other correlations shrunk until the matrix is
        positive definite): the verification of a crossing, whose better optimum the path then
        follows.
        """
        free = np.arange(self.p_hat.size) != i
        path = self.paths.setdefault(i, _Path(float(self.p_hat[i])))
        p = self.p_hat.copy()
        p[i] = v
        p[: self.m] = self.sdcor.feasible(p[: self.m], i)
        start = p[free] / self.scale[free]
        x0 = start if fresh else path.nearest(v, start)

        def fun(x: FloatArray) -> float:
            p[free] = x * self.scale[free]
            return self._f(p) - self.dev_min

        lo, hi = self.p_lo[free] / self.scale[free], self.p_hi[free] / self.scale[free]
        x, f = _minimize(fun, x0, lo, hi)
        if not fresh or v not in path.points:
            path.points[v] = x
        elif f < fun(path.points[v]):
            path.points[v] = x  # the restart found the lower minimum: later points start here
        return f

    def fixed_deviance(self, j: int, v: float, *, fresh: bool = False) -> float:
        """``min f`` with fixed effect ``j`` held at ``v``.

        ``fresh`` starts from the estimate rather than the path (the verification of a crossing).
        """
        path = self.paths.setdefault(("beta", j), _Path(float(self.beta[j])))
        x0 = self.theta if fresh else path.nearest(v, self.theta)

        def fun(theta: FloatArray) -> float:
            self.n_evaluations += 1
            try:
                return self.problem.criterion_fixed(theta, j, v) - self.dev_min
            except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                return FAR

        x, f = _minimize(fun, x0, self.theta_lo, self.theta_hi)
        if not fresh or v not in path.points or f < fun(path.points[v]):
            path.points[v] = x
        return f

    # -------------------------------------------------------------------------- the crossings --

    def interval(
        self,
        deviance: Callable[[float], float],
        estimate: float,
        step: float,
        lo: float,
        hi: float,
        z: float,
        verify: Callable[[float], float] | None = None,
    ) -> tuple[Bound, Bound]:
        """Both crossings of ``|zeta| = z`` around ``estimate`` within ``[lo, hi]``.

        ``verify`` recomputes the profile at a crossing from an independent start: a crossing
        it does not confirm (the path's optimum was not the minimum there) is passed, and the
        search goes on outwards.
        """
        return (
            self._crossing(deviance, estimate, step, lo, z, -1.0, verify),
            self._crossing(deviance, estimate, step, hi, z, 1.0, verify),
        )

    def _crossing(
        self,
        deviance: Callable[[float], float],
        estimate: float,
        step: float,
        edge: float,
        z: float,
        direction: float,
        verify: Callable[[float], float] | None = None,
    ) -> Bound:
        if direction * (edge - estimate) <= 0.0:
            return Bound(edge, "the estimate is on the boundary of the parameter's range")

        def zeta(v: float) -> float:
            return float(np.sqrt(max(deviance(v), 0.0)))

        inside, z_in = estimate, 0.0
        note = ""
        h = step
        for _ in range(MAX_STEPS):
            v = estimate + direction * h
            at_edge = direction * (v - edge) >= 0.0
            if at_edge:
                v = edge
            zv = zeta(v)
            if zv < z_in - 1e-6:
                note = (
                    "the profile is not monotonic here; tiers took the crossing nearest the "
                    "estimate"
                )
            if zv >= z:
                scale = abs(v - inside)
                root = brentq(
                    lambda x: zeta(x) - z, inside, v, xtol=1e-7 * scale + 1e-300, rtol=1e-10
                )
                if verify is None or np.sqrt(max(verify(root), 0.0)) >= z - VERIFY_TOL:
                    return Bound(float(root), note)
                # a fresh start found a lower profile at the crossing: not a crossing; go on
                note = (
                    "the profile's optimiser had stopped short of the minimum on the way (a "
                    "restart found a lower criterion); the bound is the verified crossing beyond"
                )
                inside, z_in = root, 0.0
                h = abs(root - estimate)
                continue
            if at_edge:
                return Bound(
                    float(edge),
                    (note + "; " if note else "")
                    + "the profile stays below the critical value up to the end of the range",
                )
            inside, z_in = v, zv
            # step to where a straight zeta line through the last point would cross z, at least x1.5
            grow = z / zv * 1.2 if zv > 1e-3 else 4.0
            h *= min(max(grow, 1.5), 8.0)
        return Bound(
            float(direction * np.inf),
            "the profile stays below the critical value as far as it was followed: no end",
        )

    # ------------------------------------------------------------------------- parameters --

    def varpar_interval(self, i: int, z: float, se: float | None = None) -> tuple[Bound, Bound]:
        """Interval of variance parameter ``i`` (an SD, a correlation or sigma)."""
        est = float(self.p_hat[i])
        kind = self.sdcor.kinds[i]
        if kind == "cor":
            step = se if se is not None and np.isfinite(se) and se > 0 else 0.2
            step = min(step, 0.5)
        else:
            base = est if est > 0 else self.sigma
            step = se if se is not None and np.isfinite(se) and se > 0 else 0.3 * base
        return self.interval(
            lambda v: self.varpar_deviance(i, v),
            est,
            z * step,
            float(self.p_lo[i]) if kind != "sigma" else 1e-8 * self.sigma,
            float(self.p_hi[i]),
            z,
            verify=lambda v: self.varpar_deviance(i, v, fresh=True),
        )

    def fixed_interval(self, j: int, z: float) -> tuple[Bound, Bound]:
        """Interval of fixed effect ``j``."""
        se = float(np.sqrt(self.vcov[j, j]))
        return self.interval(
            lambda v: self.fixed_deviance(j, v),
            float(self.beta[j]),
            z * se,
            -np.inf,
            np.inf,
            z,
            verify=lambda v: self.fixed_deviance(j, v, fresh=True),
        )

    # ---------------------------------------------------------------------- variance shares --

    def share_deviance(self, group: tuple[int, ...], c: float) -> float:
        """``min f`` with the share of the components ``group`` in the total variance held at ``c``.

        ``group`` holds indices into the SDs, the residual last. For random-intercept models.
        A residual structure's ``rho`` is optimised with the total and the relative sizes.
        """
        m = self.m
        var_hat = self.p_hat[:m] ** 2
        rho_hat = self.p_hat[m:]
        total_hat = float(var_hat.sum())
        inside = np.zeros(m, dtype=bool)
        inside[list(group)] = True
        # one anchor per side keeps the weights identified (the largest component at the estimate)
        anchors = [
            int(np.flatnonzero(side)[np.argmax(var_hat[side])]) for side in (inside, ~inside)
        ]
        free_w = np.ones(m, dtype=bool)
        free_w[anchors] = False
        path = self.paths.setdefault(
            ("share", group), _Path(float(var_hat[list(group)].sum() / total_hat))
        )
        w0 = np.ones(m)
        for side, anchor in zip((inside, ~inside), anchors, strict=True):
            if var_hat[anchor] > 0:
                w0[side] = var_hat[side] / var_hat[anchor]
        nw = int(free_w.sum())
        x0 = path.nearest(c, np.r_[0.0, w0[free_w], rho_hat])

        def fun(x: FloatArray) -> float:
            w = np.ones(m)
            w[free_w] = x[1 : 1 + nw]
            shares = np.empty(m)
            for side, part in ((inside, c), (~inside, 1.0 - c)):
                shares[side] = part * w[side] / w[side].sum()
            p = np.sqrt(shares * total_hat * np.exp(x[0]))
            if p[-1] <= 0.0:
                return np.inf
            return self._f(np.concatenate([p, x[1 + nw :]])) - self.dev_min

        lo = np.r_[-np.inf, np.zeros(nw), np.full(rho_hat.size, -np.inf)]
        hi = np.full(lo.size, np.inf)
        x, f = _minimize(fun, x0, lo, hi)
        path.points[c] = x
        return f

    def share_interval(
        self, group: tuple[int, ...], z: float, se: float | None = None
    ) -> tuple[Bound, Bound]:
        """Interval of the share of the components ``group`` in the total variance."""
        var_hat = self.p_hat[: self.m] ** 2
        est = float(var_hat[list(group)].sum() / var_hat.sum())
        step = se if se is not None and np.isfinite(se) and se > 0 else 0.3 * min(est, 1 - est)
        step = min(max(step, 1e-3), 0.25)
        residual_in = (self.m - 1) in group
        # sigma = 0 is outside the model: a share that would need it stops just short
        lo = 1e-9 if residual_in else 0.0
        hi = 1.0 if residual_in else 1.0 - 1e-9
        return self.interval(lambda c: self.share_deviance(group, c), est, z * step, lo, hi, z)
