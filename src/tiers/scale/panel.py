"""``xtreg, fe`` and ``xtreg, re`` of a Dask DataFrame, from per-group sums.

The within and Swamy-Arora estimators (`tiers.panel.estimators`) depend on the rows only through
the cross-products of ``[1 X y]`` and, per panel id, its size and column sums: the within
cross-product is ``C - sum_g S_g S_g' / n_g`` (``C`` and ``S_g`` about the column means, so nothing
cancels), the between regression runs on the group means, and the quasi-demeaned regression's
cross-product is ``sum_i zs_i zs_i'`` with ``zs_i = z_i - theta_g zbar_g``, expanded per group below.
The statistics are those of the random-intercept model ``y ~ x + (1 | id)``
(`tiers.scale.fit.prepare_dask`: two passes, rows never on the client), so every figure of the
in-memory result is reproduced. The cluster-robust covariance (by panel id) needs each panel's
cross-product as well: one more pass (`tiers.scale.panel_cluster`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats as sps

from tiers.design.summary import SummaryFrame
from tiers.engine.statistics import NestedStatistics
from tiers.errors import DataError
from tiers.panel.core import _check_args, _cluster_sandwich, _coef_table
from tiers.panel.estimators import FTest, PanelResult
from tiers.scale.fit import prepare_dask
from tiers.scale.panel_cluster import fe_scores, group_products, re_scores

FloatArray = NDArray[np.float64]

#: The in-memory estimators' tolerances (`tiers.panel.core`): relative spread of a column within
#: groups below which it is time-invariant, and relative residual sum of squares below which a
#: column is collinear with those kept before it.
_INVARIANT_TOL = 1e-12
_COLLINEAR_TOL = 1e-10
#: Relative rounding of a within sum of squares computed as a difference (a few hundred ulps).
_ROUNDING = 1e-13


class _Sums:
    """Centred cross-products and per-group sums of ``[1 X y]`` (intercept first, y last)."""

    def __init__(self, st: NestedStatistics, names: tuple[str, ...]) -> None:
        c = st.centred()
        self.N = st.n
        self.m = c.shift  # column means (0 for the intercept)
        self.C = c.dtd
        self.Ti = c.leaf[:, 0]
        self.S = c.leaf[:, 1:]  # per group, sum of (d - m)
        self.n = self.Ti.size
        self.names = names

    def within(self) -> FloatArray:
        """``sum_i (d_i - dbar_g)(d_i - dbar_g)'``."""
        return self.C - (self.S / self.Ti[:, None]).T @ self.S

    def group_means(self) -> FloatArray:
        """Raw group means of every column, (n, p + 1)."""
        return self.S / self.Ti[:, None] + self.m


def _greedy(G: FloatArray, cols: list[int]) -> list[int]:
    """`tiers.panel.core._independent` on a cross-product.

    Column j is kept unless its residual sum of squares on the kept columns is at most
    ``_COLLINEAR_TOL`` times its own.
    """
    kept: list[int] = []
    for j in cols:
        ss = float(G[j, j])
        if ss <= 0.0:
            continue
        r = ss
        if kept:
            B = G[np.ix_(kept, kept)]
            r = ss - float(G[j, kept] @ np.linalg.lstsq(B, G[kept, j], rcond=None)[0])
        if r > _COLLINEAR_TOL * ss:
            kept.append(j)
    return kept


def _varies(ss: float, total: float, top: float, N: int) -> bool:
    """A column's sum of squares (within groups, or about its mean) says it varies.

    In memory a column is constant when its spread is at most ``_INVARIANT_TOL`` times its
    largest magnitude, a sum of squares of at most ``N (tol top)^2``. A within sum of squares
    is a difference of sums (``C - sum S^2 / n``), exact only to rounding of ``total``: that
    noise (``_ROUNDING`` times it) counts as no variation.
    """
    return ss > max(N * (_INVARIANT_TOL * top) ** 2, _ROUNDING * total)


def _corr2(cov: float, va: float, vb: float) -> float | None:
    if va <= 0 or vb <= 0:
        return None
    return cov * cov / (va * vb)


def _corr2_arrays(a: FloatArray, b: FloatArray) -> float | None:
    ac, bc = a - a.mean(), b - b.mean()
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), np.finfo(float).tiny)
    if np.ptp(a) <= _INVARIANT_TOL * scale or np.ptp(b) <= _INVARIANT_TOL * scale:
        return None
    return _corr2(float(ac @ bc), float(ac @ ac), float(bc @ bc))


def _prepare(
    ddf: Any, y: str, x: Sequence[str], id: str, vce: str, level: float
) -> tuple[_Sums, pd.Index, int, tuple[str, ...]]:
    _check_args(vce, level)
    xs = [x] if isinstance(x, str) else list(x)
    if not xs or len(set(xs)) != len(xs) or y in xs:
        raise DataError(f"y and x must name distinct columns, x at least one (y={y!r}, x={xs!r})")
    meta = ddf._meta
    for col in [y, *xs]:
        if col in meta.columns and not pd.api.types.is_numeric_dtype(meta[col]):
            raise DataError(f"column {col!r} is not numeric (dtype {meta[col].dtype})")
    formula = f"`{y}` ~ {' + '.join(f'`{c}`' for c in xs)} + (1 | {id})"
    design = prepare_dask(formula, ddf)
    frame = design.frame
    assert isinstance(frame, SummaryFrame)
    stats = frame.statistics
    assert isinstance(stats, NestedStatistics)
    if stats.intercept != 0:  # pragma: no cover - the formula has an intercept, first
        raise DataError("the intercept was dropped")
    names = tuple(n.strip("`") for n in frame.xnames[1:])
    codes = design.factors[0].codes  # per id (a row of frame.data), in sorted order of the ids
    labels = pd.Index(pd.Series(frame.data[id].to_numpy()).groupby(codes).first(), name=id)
    omitted = tuple(n.strip("`") for n in frame.omitted)
    return _Sums(stats, names), labels, frame.n_dropped, omitted


def fixed_effects(
    ddf: Any, y: str, x: Sequence[str], id: str, *, vce: str = "conventional", level: float = 0.95
) -> PanelResult:
    """`tiers.panel.estimators.fixed_effects` of a Dask DataFrame."""
    s, labels, dropped, omitted0 = _prepare(ddf, y, x, id, vce, level)
    xs = [x] if isinstance(x, str) else list(x)
    N, n, k = s.N, s.n, len(s.names)
    if n == N:
        raise DataError(
            f"fixed effects need repeated observations within {id!r}: each of its {n} groups "
            "has a single observation, so there is no within-group variation"
        )
    W = s.within()
    xcols = list(range(1, k + 1))
    scale = np.maximum(np.abs(s.m[1 : k + 1]) + np.sqrt(np.diag(s.C)[1 : k + 1] / N), 1e-300)
    varying = [j for j in xcols if _varies(W[j, j], s.C[j, j], scale[j - 1], N)]
    keep = _greedy(W, varying)
    notes = [f"note: {nm} omitted because of collinearity" for nm in omitted0] + [
        f"note: {s.names[j - 1]} omitted because of collinearity" for j in xcols if j not in keep
    ]
    if not keep:
        raise DataError(f"fixed effects: no regressor varies within {id!r}")
    K = len(keep)
    yc = k + 1
    df_e = N - n - K
    if df_e <= 0:
        raise DataError(f"fixed effects: no residual degrees of freedom (N - n - K = {df_e})")
    Wxx, Wxy = W[np.ix_(keep, keep)], W[keep, yc]
    b = np.linalg.solve(Wxx, Wxy)
    rss = float(W[yc, yc] - Wxy @ b)
    s2 = rss / df_e
    xbar, ybar = s.m[keep], float(s.m[yc])
    cons = ybar - float(xbar @ b)
    ZZ = np.zeros((K + 1, K + 1))
    ZZ[:K, :K] = Wxx + N * np.outer(xbar, xbar)
    ZZ[:K, K] = ZZ[K, :K] = N * xbar
    ZZ[K, K] = N
    df_t = df_e
    if vce == "cluster":
        P = group_products(ddf, y, xs, id, s.m[1:], labels)
        scores = fe_scores(P, s.S[:, 1:], s.Ti, [j - 1 for j in keep], b)
        V, df_t = _cluster_sandwich(scores, N, np.linalg.inv(ZZ)), n - 1
    else:
        V = s2 * np.linalg.inv(ZZ)
    means = s.group_means()
    u = means[:, yc] - means[:, keep] @ b - cons
    sigma_u = float(np.std(u, ddof=1)) if n > 1 else math.nan
    u_obs = float(s.Ti @ u) / N
    var_u_obs = float(s.Ti @ (u - u_obs) ** 2)
    Cxx, Cxy, Cyy = s.C[np.ix_(keep, keep)], s.C[keep, yc], float(s.C[yc, yc])
    xb_var = float(b @ Cxx @ b)
    cov_u_xb = float((u - u_obs) @ (s.S[:, keep] @ b))
    f_test = None
    if vce == "cluster":
        notes.append("F test that all u_i=0 not reported with vce='cluster' (as Stata)")
    elif n > 1:
        rss_p = Cyy - float(Cxy @ np.linalg.solve(Cxx, Cxy))
        F = ((rss_p - rss) / (n - 1)) / s2
        f_test = FTest(F=F, df1=n - 1, df2=df_e, p_value=float(sps.f.sf(F, n - 1, df_e)))
    tss_w = float(W[yc, yc])
    r2_w = 1.0 - rss / tss_w if tss_w > 0 else None
    names = [s.names[j - 1] for j in keep] + ["_cons"]
    return PanelResult(
        estimator="fe",
        depvar=y,
        id=id,
        vce=vce,
        coef=_coef_table(np.append(b, cons), V, names, df_t, level),
        vcov=pd.DataFrame(V, names, names),
        nobs=N,
        ngroups=n,
        nobs_dropped=dropped,
        df_resid=df_t,
        rss=rss,
        group_sizes=(int(s.Ti.min()), float(s.Ti.mean()), int(s.Ti.max())),
        sigma_u=sigma_u,
        sigma_u_over_obs=math.sqrt(var_u_obs / (N - 1)),
        sigma_e=math.sqrt(s2),
        rho=sigma_u**2 / (sigma_u**2 + s2) if n > 1 else None,
        r2_within=r2_w,
        r2_between=_corr2_arrays(means[:, yc], means[:, keep] @ b),
        r2_overall=_corr2(float(Cxy @ b), Cyy, xb_var),
        r2_plm=r2_w,
        r2_plm_adj=None if r2_w is None else 1 - (1 - r2_w) * (N - 1) / df_e,
        corr_u_xb=None
        if var_u_obs <= 0 or xb_var <= 0
        else cov_u_xb / math.sqrt(var_u_obs * xb_var),
        f_test=f_test,
        omitted=omitted0 + tuple(s.names[j - 1] for j in xcols if j not in keep),
        notes=tuple(notes),
        level=level,
    )


def _pooled_keep(s: _Sums) -> list[int]:
    """`tiers.panel.core._drop_pooled_collinear` on the centred cross-product."""
    k = len(s.names)
    xcols = list(range(1, k + 1))
    top = np.abs(s.m[1 : k + 1]) + np.sqrt(np.diag(s.C)[1 : k + 1] / s.N)
    varying = [j for j in xcols if _varies(s.C[j, j], s.C[j, j], top[j - 1], s.N)]
    return _greedy(s.C, varying)


def random_effects(
    ddf: Any, y: str, x: Sequence[str], id: str, *, vce: str = "conventional", level: float = 0.95
) -> PanelResult:
    """`tiers.panel.estimators.random_effects` (Swamy-Arora) of a Dask DataFrame.

    The quasi-demeaned regression's cross-product, with ``d_i = m + e_i`` (``m`` the column
    means, ``S_g`` the group sums of ``e``) and ``zs_i = d_i - theta_g dbar_g``, is
    ``C - sum_g (2 theta_g - theta_g^2) S_g S_g' / n_g + sum_g (1 - theta_g)^2 (n_g m m' + m S_g' +
    S_g m')``.
    """
    from tiers.panel.core import _drop_pooled_collinear

    s, labels, dropped, omitted0 = _prepare(ddf, y, x, id, vce, level)
    xs = [x] if isinstance(x, str) else list(x)
    N, n, k0 = s.N, s.n, len(s.names)
    yc = k0 + 1
    keep = _pooled_keep(s)
    notes = [f"note: {nm} omitted because of collinearity" for nm in omitted0] + [
        f"note: {s.names[j - 1]} omitted because of collinearity"
        for j in range(1, k0 + 1)
        if j not in keep
    ]
    k = len(keep)
    W = s.within()
    top = np.abs(s.m[1 : k0 + 1]) + np.sqrt(np.diag(s.C)[1 : k0 + 1] / N)
    wkeep = _greedy(W, [j for j in keep if _varies(W[j, j], s.C[j, j], top[j - 1], N)])
    df_e = N - n - len(wkeep)
    if df_e <= 0:
        raise DataError(
            f"random effects: sigma_e needs within-{id!r} degrees of freedom "
            f"(N - n - K = {df_e}); ids need repeated observations"
        )
    Wk = W[np.ix_(wkeep, wkeep)]
    w_rss = (
        float(W[yc, yc] - W[wkeep, yc] @ np.linalg.solve(Wk, W[wkeep, yc]))
        if wkeep
        else float(W[yc, yc])
    )
    s2_e = w_rss / df_e
    means = s.group_means()
    ybar = means[:, yc]
    Zm = np.column_stack([means[:, keep], np.ones(n)])
    names = [s.names[j - 1] for j in keep] + ["_cons"]
    bkeep = _drop_pooled_collinear(Zm[:, :k], names[:k])[0] + [k]
    Zb = Zm[:, bkeep]
    Ti = s.Ti
    sw = np.sqrt(Ti)
    bb = np.linalg.lstsq(Zb * sw[:, None], ybar * sw, rcond=None)[0]
    q = float(Ti @ (ybar - Zb @ bb) ** 2)
    df_b = n - len(bkeep)
    if df_b <= 0:
        raise DataError(
            f"random effects: the between regression needs more groups of {id!r} "
            f"({n}) than coefficients ({len(bkeep)})"
        )
    zz = Zb.T @ (Zb * Ti[:, None])
    trace = float(np.trace(np.linalg.solve(zz, Zb.T @ (Zb * (Ti**2)[:, None]))))
    s2_u = (q - df_b * s2_e) / (N - trace)
    if s2_u < 0:
        notes.append(f"sigma_u^2 estimate {s2_u:.6g} < 0 set to 0: the model reduces to pooled OLS")
        s2_u = 0.0
    th = 1.0 - np.sqrt(s2_e / (Ti * s2_u + s2_e)) if s2_e > 0 else np.ones(n)
    order = [*keep, 0, yc]  # the panel's column order: regressors, constant, response
    S, m = s.S[:, order], s.m[order]
    one_minus2 = (1.0 - th) ** 2
    M = (
        s.C[np.ix_(order, order)]
        - (S * ((2.0 * th - th**2) / Ti)[:, None]).T @ S
        + float(Ti @ one_minus2) * np.outer(m, m)
    )
    u = one_minus2 @ S
    M += np.outer(m, u) + np.outer(u, m)
    b = np.linalg.solve(M[: k + 1, : k + 1], M[: k + 1, k + 1])
    rss = float(M[k + 1, k + 1] - M[k + 1, : k + 1] @ b)
    bread = np.linalg.inv(M[: k + 1, : k + 1])
    if vce == "cluster":
        P = group_products(ddf, y, xs, id, s.m[1:], labels)
        V = _cluster_sandwich(re_scores(P, s.S, Ti, s.m, th, order, b), N, bread)
    else:
        V = rss / (N - k - 1) * bread
    bx = b[:k]
    ys_sum = float(Ti @ ((1.0 - th) * ybar))
    ys_ss = float(M[k + 1, k + 1]) - ys_sum**2 / N
    r2_t = 1.0 - rss / ys_ss if ys_ss > 0 else None
    balanced = bool(np.all(Ti == Ti[0]))
    Cxx, Cxy = s.C[np.ix_(keep, keep)], s.C[keep, yc]
    return PanelResult(
        estimator="re",
        depvar=y,
        id=id,
        vce=vce,
        coef=_coef_table(b, V, names, None, level),
        vcov=pd.DataFrame(V, names, names),
        nobs=N,
        ngroups=n,
        nobs_dropped=dropped,
        df_resid=None,
        rss=rss,
        group_sizes=(int(Ti.min()), float(Ti.mean()), int(Ti.max())),
        sigma_u=math.sqrt(s2_u),
        sigma_e=math.sqrt(s2_e),
        rho=s2_u / (s2_u + s2_e) if s2_u + s2_e > 0 else None,
        theta=float(th[0]) if balanced else None,
        theta_i=pd.Series(th, index=labels),
        r2_within=_corr2(
            float(bx @ W[keep, yc]), float(bx @ W[np.ix_(keep, keep)] @ bx), float(W[yc, yc])
        ),
        r2_between=_corr2_arrays(Zm @ b, ybar),
        r2_overall=_corr2(float(Cxy @ bx), float(bx @ Cxx @ bx), float(s.C[yc, yc])),
        r2_plm=r2_t,
        r2_plm_adj=None if r2_t is None else 1 - (1 - r2_t) * (N - 1) / (N - k - 1),
        omitted=omitted0 + tuple(s.names[j - 1] for j in range(1, k0 + 1) if j not in keep),
        notes=tuple(notes),
        level=level,
    )
