"""t and F tests of the fixed effects with Satterthwaite's denominator degrees of freedom.

The method is lmerTest's (Kuznetsova, Brockhoff and Christensen 2017, JSS 82(13)).

The variance parameters are ``varpar = (theta, sigma)``; ``f(varpar)`` is the criterion the model
was fitted with (REML or ML) with beta profiled out and sigma *not* (the engine's ``criterion``).
Their asymptotic covariance is ``A = 2 H^-1``, ``H`` the Hessian of ``f`` at the estimates
(a pseudo-inverse over the eigenvalues above 1e-8, as lmerTest). The covariance of beta_hat is
``V(varpar) = sigma^2 (X'V^-1X)^-1``. For a contrast ``L`` (a vector),

    var = L' V L,   g_i = L' (dV / d varpar_i) L,   df = 2 var^2 / (g' A g),

and ``t = L'beta / sqrt(var)`` is referred to t(df). For a matrix ``L`` of q rows (an F test),
``L V L' = P D P'``; each eigen-contrast ``P_m' L`` has its own ``nu_m`` as above; ``F = sum_m
(P_m' L beta)^2 / d_m / q`` and the denominator df is ``2 E / (E - q)`` with ``E = sum_m nu_m /
(nu_m - 2)`` (2 when some ``nu_m <= 2``; the common value when all ``nu_m`` agree).

Derivatives: ``H`` and ``dV/dtheta`` by central differences with Richardson extrapolation over
four halvings of a step of 10% of each coordinate (1e-4 at zero), as numDeriv does for lmerTest;
``dV/dsigma = 2 V / sigma`` exactly. Kenward-Roger's method is in `tiers.inference.kenward_roger`;
`coef_table` and `anova` take either (`DdfTests`).

`anova` tests each term of the fixed part (all of its columns jointly equal to zero, as coded):
lmerTest's type III test for terms not contained in an interaction, and for all terms when the
factors are coded with sum-to-zero contrasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers._lazy import stats
from tiers.optimize.derivatives import hessian, jacobian, lmertest_steps
from tiers.results.result import FitResult

FloatArray = NDArray[np.float64]

#: Eigenvalues of H below this are dropped from its inverse (lmerTest's tolerance).
EIG_TOL = 1e-8


class DdfTests(Protocol):
    """t and F tests of the fixed effects with a denominator-df method (its ``method`` name)."""

    method: ClassVar[str]

    def contest1d(self, L: FloatArray) -> tuple[float, float, float, float, float]:
        """Estimate, SE, df, t and two-sided p of ``L'beta``."""
        ...

    def contest(self, L: FloatArray) -> tuple[float, int, float, float]:
        """F, numerator df, denominator df and p of ``L beta = 0``."""
        ...


@dataclass(frozen=True)
class Satterthwaite:
    """What the tests need: beta, its covariance, dV/dvarpar and the covariance of varpar."""

    method: ClassVar[str] = "Satterthwaite"

    beta: FloatArray
    vcov: FloatArray
    jac: FloatArray  # (n_varpar, p, p)
    A: FloatArray
    xnames: tuple[str, ...]

    @classmethod
    def from_result(cls, res: FitResult) -> Satterthwaite:
        """The derivatives at a fit's estimates (`tiers.FitResult` keeps one per result)."""
        problem = res.devfun
        theta = np.asarray(res.theta, dtype=np.float64)
        x = np.append(theta, res.sigma)

        def f(v: FloatArray) -> float:
            return problem.criterion(v[:-1], float(v[-1]))

        try:
            H = hessian(f, x, lmertest_steps(x), richardson=4)
            if not np.all(np.isfinite(H)):
                raise FloatingPointError
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            # steps of 10% left the parameter space (e.g. an exchangeable correlation near its
            # bound): smaller first steps
            H = hessian(f, x, lmertest_steps(x, 1e-3), richardson=4)
        w, V = np.linalg.eigh(H)
        pos = w > EIG_TOL
        A = 2.0 * (V[:, pos] / w[pos]) @ V[:, pos].T

        def unscaled(th: FloatArray) -> FloatArray:
            return problem.solve(th).unscaled_vcov

        U = unscaled(theta)
        s2 = res.sigma**2
        jac = np.concatenate(
            [
                s2 * jacobian(unscaled, theta, lmertest_steps(theta), richardson=4),
                (2.0 * res.sigma * U)[None],
            ]
        )
        return cls(np.asarray(res.beta), s2 * U, jac, A, tuple(res.xnames))

    def df(self, L: FloatArray) -> float:
        """Satterthwaite's df of the contrast ``L'beta``."""
        var = float(L @ self.vcov @ L)
        g = np.einsum("i,kij,j->k", L, self.jac, L)
        denom = float(g @ self.A @ g)
        return 2.0 * var**2 / denom if denom > 0 else np.inf

    def contest1d(self, L: FloatArray) -> tuple[float, float, float, float, float]:
        """Estimate, SE, df, t and two-sided p of ``L'beta``."""
        L = np.asarray(L, dtype=np.float64)
        est = float(L @ self.beta)
        se = float(np.sqrt(L @ self.vcov @ L))
        df = self.df(L)
        t = est / se
        return est, se, df, t, float(2.0 * stats.t.sf(abs(t), df))

    def contest(self, L: FloatArray) -> tuple[float, int, float, float]:
        """F, numerator df, denominator df and p of ``L beta = 0`` (rows of ``L``)."""
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        if L.shape[0] == 1:
            _, _, df, t, p = self.contest1d(L[0])
            return t * t, 1, df, p
        d, P = np.linalg.eigh(L @ self.vcov @ L.T)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        pos = d > max(np.sqrt(np.finfo(float).eps) * d[0], 0.0)
        q = int(pos.sum())
        PtL = (P.T @ L)[:q]
        if q == 1:
            _, _, df, t, p = self.contest1d(PtL[0])
            return t * t, 1, df, p
        F = float(np.sum((PtL @ self.beta) ** 2 / d[:q]) / q)
        nu = np.array([self.df(row) for row in PtL])
        if np.all(np.abs(np.diff(nu)) < 1e-8):
            ddf = float(nu.mean())
        elif np.any(nu <= 2):
            ddf = 2.0
        else:
            E = float(np.sum(nu / (nu - 2.0)))
            ddf = 2.0 * E / (E - q)
        return F, q, ddf, float(stats.f.sf(F, q, ddf))


def coef_table(res: FitResult, s: DdfTests, level: float = 0.95) -> pd.DataFrame:
    """Estimate, SE, df, t, p and the t interval of each fixed effect (``attrs["method"]``).

    The SE is the method's (Kenward-Roger's is adjusted).
    """
    rows = []
    for j, name in enumerate(res.xnames):
        L = np.zeros(len(res.xnames))
        L[j] = 1.0
        est, se, df, t, p = s.contest1d(L)
        q = float(stats.t.ppf(0.5 + level / 2.0, df))
        rows.append(
            {
                "name": name,
                "estimate": est,
                "std_error": se,
                "df": df,
                "t": t,
                "p_value": p,
                "ci_lower": est - q * se,
                "ci_upper": est + q * se,
            }
        )
    out = pd.DataFrame(rows).set_index("name").rename_axis(None)
    out.attrs["method"] = s.method
    return out


def term_columns(res: FitResult) -> dict[str, list[int]]:
    """The fixed part's terms and the columns of X each one owns (the intercept left out)."""
    names = list(res.xnames)
    rhs = res.formula.fixed
    plain = [t.strip() for t in rhs.split("+") if t.strip() not in ("0", "1")]
    if all(t in names for t in plain):
        return {t: [names.index(t)] for t in plain}
    spec = res.design.fixed_spec
    out: dict[str, list[int]] = {}
    for term, sl in spec.term_slices.items():
        label = str(term)
        if label == "1":
            continue
        cols = ["(Intercept)" if c == "Intercept" else c for c in spec.column_names[sl]]
        idx = [names.index(c) for c in cols if c in names]
        if idx:
            out[label] = idx
    return out


def anova(res: FitResult, s: DdfTests) -> pd.DataFrame:
    """F test of each fixed term (all its columns zero) with the method's denominator df."""
    rows = []
    p = len(res.xnames)
    for term, idx in term_columns(res).items():
        L = np.zeros((len(idx), p))
        L[np.arange(len(idx)), idx] = 1.0
        F, ndf, ddf, pv = s.contest(L)
        rows.append({"term": term, "num_df": ndf, "den_df": ddf, "F": F, "p_value": pv})
    out = pd.DataFrame(rows, columns=["term", "num_df", "den_df", "F", "p_value"])
    out.attrs["method"] = s.method
    return out.set_index("term")
