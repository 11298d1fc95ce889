"""Design planning without simulation: expected standard errors from the Fisher information.

For a balanced nested random-intercept design with levels ``k = 0..K-1`` (outermost first),
``N_k`` units at level ``k``, ``m_k = n / N_k`` observations per level-``k`` unit and

    y = X beta + sum_k Z_k b_k + e,   V = Cov(y) = sigma^2 I + sum_k sigma_k^2 Z_k Z_k',

``Z_k Z_k' = m_k P_k`` with ``P_k`` the projection onto level-``k`` unit means. The projections
nest (``P_0 <= P_1 <= ... <= I``), so with the strata ``E_0 = P_0``, ``E_s = P_s - P_{s-1}``
(``0 < s < K``) and ``E_K = I - P_{K-1}``, every matrix of the model is diagonal in the strata:

    V = sum_s lambda_s E_s,   lambda_s = sigma^2 + sum_{k >= s} m_k sigma_k^2,
    dV/d sigma_k^2 = Z_k Z_k' = sum_s a_ks E_s,   a_ks = m_k [s <= k],   dV/d sigma^2 = I  (a_Ks = 1),

and ``tr(E_s) = d_s`` with ``d_0 = N_0``, ``d_s = N_s - N_{s-1}``, ``d_K = n - N_{K-1}``. The
``lambda_s`` are the expected mean squares of the nested ANOVA (Searle, Casella and McCulloch 1992,
*Variance Components*, sec. 4.6); ``lambda = A' theta`` for the variance parameters
``theta = (sigma_0^2, ..., sigma_{K-1}^2, sigma^2)``.

Variance components
-------------------
The ML information is ``I_ij = 1/2 tr(V^-1 V_i V^-1 V_j)`` (Searle et al. eq. 6.66), here

    I_ML = 1/2 A diag(d / lambda^2) A'.

REML replaces ``V^-1`` by ``P = V^-1 - V^-1 X (X'V^-1 X)^-1 X'V^-1`` (eq. 6.92). Write
``P = V^-1/2 (I - Pi) V^-1/2`` with ``Pi`` the projection onto the columns of ``V^-1/2 X``. With
``D_i = V^-1/2 V_i V^-1/2`` (diagonal in the strata: ``a_is / lambda_s``),

    tr(P V_i P V_j) = tr(D_i D_j) - 2 tr(Pi D_i D_j) + tr(Pi D_i Pi D_j).

For the intercept ``V^-1/2 1`` lies in stratum 0, so the correction is ``- a_i0 a_j0 / lambda_0^2``:
exactly one degree of freedom lost at the top stratum (``d_0 -> N_0 - 1``). A covariate centred at
its mean is V^-1-orthogonal to the intercept (``V^-1 1 = 1 / lambda_0``), so it adds its own
rank-one correction ``-2 sum_s w_s a_is a_js / lambda_s^2 + (sum_s w_s a_is / lambda_s)
(sum_s w_s a_js / lambda_s)``, where ``w_s`` is its share of ``x'V^-1 x`` in stratum ``s``; for a
covariate drawn independently per observation ``w_s`` is taken at its expectation,
``(d'_s / lambda_s) / sum_t (d'_t / lambda_t)`` with ``d' = d`` except ``d'_0 = N_0 - 1`` (first
order in 1/n; cross terms of two independent covariates vanish in expectation).

Fixed effects
-------------
For covariates drawn independently per observation with mean ``mu_j`` and variance ``v_j``
(Bernoulli(p): ``p`` and ``p(1-p)``), ``E[x_j' A x_k] = delta_jk v_j tr(A) + mu_j mu_k 1'A 1``,
so with ``tr(V^-1) = sum_s d_s / lambda_s`` and ``V^-1 1 = 1 / lambda_0``

    E[X'V^-1 X] = [[n / lambda_0, n mu' / lambda_0], [n mu / lambda_0, n mu mu' / lambda_0 + diag(v) T]],
    T = sum_s d_s / lambda_s.

The precision of slope ``j`` after profiling the intercept, ``x_j'V^-1 x_j - (1'V^-1 x_j)^2 /
1'V^-1 1``, has expectation ``v_j (T - 1 / lambda_0) = v_j sum_s d'_s / lambda_s``: the
within-stratum variance of x spread over the strata by their dimensions. The SEs reported are
``1 / sqrt(v_j sum_s d'_s / lambda_s)`` for a slope and ``sqrt(lambda_0 / n + sum_j mu_j^2
se_j^2)`` for the intercept (the expected information plugged into the inverse: first order).

SDs are reported by the delta method, ``se(sd) = se(var) / (2 sd)`` (NaN for an SD of zero, where
it does not apply). Everything is a sum over K + 1 strata: no n x n matrix, microseconds at any n.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.errors import DesignError
from tiers.results.display import Table, html_tables, latex_tables, markdown_tables
from tiers.simulation.data import NestedDesign

__all__ = [
    "DesignPlan",
    "expected_se",
    "expected_xtvx",
    "plan_design",
    "power",
    "strata",
    "variance_information",
]


@dataclass(frozen=True, slots=True)
class Strata:
    """The strata of a balanced nested design and V's eigenvalue on each.

    ``names[s]`` is the level whose units differ in stratum ``s`` (``"residual"``: within the
    innermost units); ``dims`` their dimensions ``d_s``; ``m`` observations per unit of each
    level; ``A`` the (K+1, K+1) coefficients ``a_js`` of each variance parameter on each stratum;
    ``eigenvalues`` the ``lambda_s`` at the design's SDs.
    """

    names: tuple[str, ...]
    dims: np.ndarray
    m: np.ndarray
    A: np.ndarray
    eigenvalues: np.ndarray
    n: int


def strata(design: NestedDesign) -> Strata:
    """Dimensions and eigenvalues of the strata (module docstring), from the unit counts."""
    N = np.array(list(design.ngroups.values()), dtype=float)
    n = design.nrows
    K = N.size
    dims = np.diff(np.concatenate([[0.0], N, [float(n)]]))
    m = n / N
    A = np.zeros((K + 1, K + 1))
    for k in range(K):
        A[k, : k + 1] = m[k]  # sigma_k^2 loads on the strata of level k and those above it
    A[K, :] = 1.0
    theta = np.array([lv.sd**2 for lv in design.levels] + [design.residual_sd**2])
    names = tuple(lv.name for lv in design.levels) + ("residual",)
    return Strata(names, dims, m, A, A.T @ theta, n)


def _dims_reml(st: Strata) -> np.ndarray:
    d = st.dims.copy()
    d[0] -= 1.0  # the grand mean: one degree of freedom at the top stratum
    return d


def variance_information(design: NestedDesign, *, reml: bool = True) -> np.ndarray:
    """Expected Fisher information of ``(sigma_0^2, ..., sigma_{K-1}^2, sigma^2)``.

    Levels outermost first, under ML or REML (with the design's covariates in the mean).
    """
    st = strata(design)
    lam, A = st.eigenvalues, st.A
    info = 0.5 * (A * (st.dims / lam**2)) @ A.T
    if not reml:
        return info
    w0 = np.zeros_like(lam)
    w0[0] = 1.0
    weights = [w0]
    dr = _dims_reml(st)
    for cv in design.covariates:
        if _moments(cv)[1] > 0:
            weights.append((dr / lam) / np.sum(dr / lam))
    for w in weights:
        u = A @ (w / lam)
        info -= 0.5 * (2.0 * (A * (w / lam**2)) @ A.T - np.outer(u, u))
    return info


def _moments(cv: Any) -> tuple[float, float]:
    if cv.kind == "bernoulli":
        return cv.p, cv.p * (1.0 - cv.p)
    return cv.mean, cv.sd**2


def expected_xtvx(design: NestedDesign) -> np.ndarray:
    """``E[X'V^-1 X]`` for ``X = [1, covariates]`` with the covariates drawn per observation."""
    st = strata(design)
    mu = np.array([1.0] + [_moments(cv)[0] for cv in design.covariates])
    v = np.array([0.0] + [_moments(cv)[1] for cv in design.covariates])
    T = float(np.sum(st.dims / st.eigenvalues))
    return st.n * np.outer(mu, mu) / st.eigenvalues[0] + np.diag(v) * T


def expected_se(design: NestedDesign, *, reml: bool = True) -> dict[str, float]:
    """Expected SEs keyed as ``design.true_parameters()``.

    Keys ``sd_<level>``, ``sd_residual``, ``beta_intercept``, ``beta_<covariate>``. NaN where
    undefined (an SD of zero, a singular information such as one top-level unit under REML, a
    constant covariate).
    """
    st = strata(design)
    info = variance_information(design, reml=reml)
    sds = np.array([lv.sd for lv in design.levels] + [design.residual_sd])
    try:
        cov = np.linalg.inv(info)
        var = np.diag(cov)
    except np.linalg.LinAlgError:
        var = np.full(sds.size, np.nan)
    if not (np.all(np.isfinite(var)) and np.all(var > 0)) or np.linalg.cond(info) > 1e14:
        var = np.full(sds.size, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_sd = np.where(sds > 0, np.sqrt(var) / (2.0 * sds), np.nan)
    names = [f"sd_{lv.name}" for lv in design.levels] + ["sd_residual"]
    out = {k: float(v) for k, v in zip(names, se_sd, strict=True)}
    lam0 = st.eigenvalues[0]
    precision = float(np.sum(_dims_reml(st) / st.eigenvalues))
    slopes = {}
    for cv in design.covariates:
        mu, v = _moments(cv)
        slopes[cv.name] = (mu, 1.0 / (v * precision) if v > 0 else math.nan)
    out["beta_intercept"] = math.sqrt(lam0 / st.n + sum(mu**2 * s2 for mu, s2 in slopes.values()))
    out |= {f"beta_{name}": math.sqrt(s2) for name, (_, s2) in slopes.items()}
    return out


def power(se: float, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided Wald z test of ``beta = 0`` at level ``alpha``.

    For a true coefficient ``effect`` whose SE is ``se``.
    """
    if not math.isfinite(se) or se <= 0:
        return math.nan
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    r = abs(effect) / se
    return float(stats.norm.cdf(r - z) + stats.norm.cdf(-r - z))


def _smallest_units(ok: Callable[[int], bool], max_units: int) -> int | None:
    """Smallest u in 1..max_units with ok(u); doubling, then bisection.

    Assumes ok is monotone (more units never hurt: every stratum's dimension grows with them).
    """
    if ok(1):
        return 1
    lo, hi = 1, 2
    while not ok(hi):
        if hi >= max_units:
            return None
        lo, hi = hi, min(2 * hi, max_units)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class DesignPlan:
    """Expected SEs of a design, and the units needed for targets (``plan_design``)."""

    design: NestedDesign
    reml: bool
    level: str
    expected_se: dict[str, float]
    strata: Strata
    target_se: dict[str, dict[str, Any]] = field(default_factory=dict)
    power: dict[str, dict[str, Any]] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Parameter, truth, expected SE and SE relative to the truth."""
        truth = self.design.true_parameters()
        se = pd.Series(self.expected_se)
        t = pd.Series({k: truth[k] for k in se.index})
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = (se / t.abs()).where(t != 0)
        return pd.DataFrame({"truth": t, "expected_se": se, "relative_se": rel}).rename_axis(
            "parameter"
        )

    def tables(self) -> list[Table]:
        """Expected SEs, the units for the target SEs and the power, as display tables."""
        method = "REML" if self.reml else "ML"

        def cell(v: Any) -> str:
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return "."
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        se = [(str(k), cell(r.truth), cell(r.expected_se), cell(r.relative_se))
              for k, r in self.table().iterrows()]  # fmt: skip
        out = [Table.of(f"Expected standard errors ({method} information, "
                        f"{self.design.nrows:,} rows)",
                        ("Parameter", "Truth", "Expected SE", "SE / |truth|"), se)]  # fmt: skip

        if self.target_se:
            rows = [(k, cell(v["target"]), cell(v["units"]), cell(v["expected_se"]))
                    for k, v in self.target_se.items()]  # fmt: skip
            out.append(Table.of(f"Units of {self.level} per parent for a target SE",
                                ("Parameter", "Target SE", "Units", "Expected SE there"), rows))  # fmt: skip
        if self.power:
            prow = [(k, cell(v["effect"]), cell(v["alpha"]), cell(v["power"]),
                     cell(v.get("units"))) for k, v in self.power.items()]  # fmt: skip
            out.append(Table.of("Power of the Wald test of each coefficient",
                                ("Coefficient", "Effect", "alpha", "Power", "Units for target"),
                                prow))  # fmt: skip
        return out

    def __repr__(self) -> str:
        return (
            f"<DesignPlan {'REML' if self.reml else 'ML'}: {self.design.nrows:,} rows, "
            f"{len(self.expected_se)} parameters, searching {self.level}>"
        )

    def _repr_html_(self) -> str:
        return html_tables(self.tables(), cls="tiers-plan")

    def _repr_markdown_(self) -> str:
        return markdown_tables(self.tables())

    def _repr_latex_(self) -> str:
        return latex_tables(self.tables())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able document: NaN becomes None."""

        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        st = self.strata
        return {
            "design": self.design.to_dict(),
            "method": "REML" if self.reml else "ML",
            "nrows": self.design.nrows,
            "level": self.level,
            "truth": self.design.true_parameters(),
            "expected_se": {k: num(v) for k, v in self.expected_se.items()},
            "strata": [
                {"stratum": nm, "dimension": int(d), "eigenvalue": float(lam)}
                for nm, d, lam in zip(st.names, st.dims, st.eigenvalues, strict=True)
            ],
            "target_se": {
                k: {kk: num(vv) if isinstance(vv, float) else vv for kk, vv in v.items()}
                for k, v in self.target_se.items()
            },
            "power": {
                k: {kk: num(vv) if isinstance(vv, float) else vv for kk, vv in v.items()}
                for k, v in self.power.items()
            },
        }


def plan_design(
    design: NestedDesign,
    *,
    reml: bool = True,
    level: str | None = None,
    target_se: Mapping[str, float] | None = None,
    power_target: float | None = None,
    alpha: float = 0.05,
    max_units: int = 10**9,
) -> DesignPlan:
    """Expected SEs at the assumed true values, and the units needed for targets.

    Parameters
    ----------
    design : NestedDesign
        Balanced by construction; its SDs and coefficients are the assumed truth.
    reml : bool, default True
        Information of the REML criterion (else ML).
    level : str, optional
        The level whose units per parent vary when searching (default the outermost).
    target_se : mapping PARAM -> SE, optional
        For each, the smallest number of ``level`` units per parent whose expected SE is at or
        below the target (None when ``max_units`` does not reach it).
    power_target : float, optional
        For each covariate, the smallest number of units giving this power to the two-sided
        Wald test of its coefficient at ``alpha`` (None if the coefficient is 0 or unreachable).

    Raises
    ------
    DesignError
        Unknown level or parameter, a target SE that is not positive, power or alpha outside (0, 1),
        a GLMM design (planned by simulation instead: `tiers.study.plan_sim`).
    """
    if not isinstance(design, NestedDesign):
        raise DesignError(f"plan_design needs a NestedDesign, got {type(design).__name__}")
    if design.is_glmm:
        raise DesignError(
            f"a {design.family} design has no closed-form expected information (it depends on the "
            "integral the fit approximates): plan it by simulation with "
            "tiers.study.plan_sim.plan_by_simulation, as `tiers plan` does for a GLMM design"
        )
    levels = [lv.name for lv in design.levels]
    level = levels[0] if level is None else level
    if level not in levels:
        raise DesignError(f"no level named {level!r}; the levels are {levels}")
    se = expected_se(design, reml=reml)
    for what, value in (("alpha", alpha), ("power", power_target)):
        if value is not None and not 0.0 < value < 1.0:
            raise DesignError(f"{what} must lie strictly between 0 and 1, got {value!r}")

    def at(units: int) -> dict[str, float]:
        return expected_se(design.with_units(level, units), reml=reml)

    targets: dict[str, dict[str, Any]] = {}
    for param, target in (target_se or {}).items():
        if param not in se:
            raise DesignError(f"unknown parameter {param!r}; the parameters are {list(se)}")
        if not (isinstance(target, int | float) and target > 0):
            raise DesignError(f"the target SE of {param} must be a positive number, got {target!r}")

        def meets_se(k: int, p: str = param, t: float = target) -> bool:
            return at(k)[p] <= t

        u = _smallest_units(meets_se, max_units)
        targets[param] = {"target": float(target), "units": u, "level": level,
                          "expected_se": at(u)[param] if u else math.nan}  # fmt: skip
    powers: dict[str, dict[str, Any]] = {}
    for cv in design.covariates:
        name = f"beta_{cv.name}"
        entry: dict[str, Any] = {"effect": cv.coef, "alpha": float(alpha),
                                 "power": power(se[name], cv.coef, alpha)}  # fmt: skip
        if power_target is not None:
            u = None
            if cv.coef != 0:

                def meets_power(k: int, n: str = name, b: float = cv.coef) -> bool:
                    return power(at(k)[n], b, alpha) >= power_target

                u = _smallest_units(meets_power, max_units)
            entry |= {"target_power": float(power_target), "units": u, "level": level}
        powers[name] = entry
    return DesignPlan(design, reml, level, se, strata(design), targets, powers)
