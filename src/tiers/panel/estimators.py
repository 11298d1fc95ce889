"""Panel-data estimators as Stata's ``xtreg`` and R's ``plm`` report them.

``pooled_ols`` (``regress``), ``fixed_effects`` (``xtreg, fe`` / plm ``"within"``) and
``random_effects`` (``xtreg, re`` / plm ``"random"`` with ``random.method = "swar"``), each with
conventional or cluster-robust (by panel id) standard errors. The Hausman test is in
:mod:`tiers.panel.hausman`.

Formula sources: Stata [XT] xtreg "Methods and formulas" (and the ``xtreg_fe`` / ``xtreg_re``
programs it describes), Baltagi, *Econometric Analysis of Panel Data* (5th ed., 2013), ch. 2-3
and 9, and plm 2.6-2 (``ercomp``), whose Swamy-Arora components are the reference here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers.errors import DataError
from tiers.panel.core import (
    _INVARIANT_TOL,
    _check_args,
    _cluster_sandwich,
    _cluster_vcov,
    _coef_table,
    _corr2,
    _drop_pooled_collinear,
    _flat,
    _num,
    _ols,
    _prepare,
    _within,
)

__all__ = ["FTest", "PanelResult", "pooled_ols", "fixed_effects", "random_effects"]

Vce = Literal["conventional", "cluster"]


@dataclass(frozen=True, eq=False)
class FTest:
    """F test that all u_i = 0 after ``xtreg, fe`` (pooled OLS against the within model)."""

    F: float
    df1: int
    df2: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with keys F, df1, df2, p_value."""
        return {
            "F": float(self.F),
            "df1": self.df1,
            "df2": self.df2,
            "p_value": float(self.p_value),
        }


@dataclass(frozen=True, eq=False)
class PanelResult:
    """A fitted panel model; ``eq=False`` because it holds DataFrames, which have no truth value.

    Attributes
    ----------
    estimator : {"pooled", "fe", "re"}
    coef : DataFrame
        Index: coefficient names (``_cons`` for the constant, as Stata). Columns estimate,
        std_error, stat (t, or z for ``re``), p_value, ci_lower, ci_upper.
    vcov : DataFrame
        Covariance matrix of the estimates, labelled as ``coef``.
    df_resid : int or None
        Degrees of freedom of the t reference distribution; None means the normal (``re``).
    sigma_u, sigma_e, rho : float or None
        For ``fe``, sigma_u is Stata's: the SD over groups (divisor n - 1) of the estimated
        u_i; ``sigma_u_over_obs`` is the same SD taken over observations (divisor N - 1).
    theta : float or None
        ``re`` on a balanced panel; unbalanced panels have one theta per group in ``theta_i``.
    r2_within, r2_between, r2_overall : float or None
        Stata's definitions; None where undefined (a constant series in the correlation).
    r2_plm, r2_plm_adj : float or None
        R-squared of the transformed (within / quasi-demeaned) regression, as plm's summary.
    omitted : tuple of str
        Regressors dropped because of collinearity (each also has a note).
    """

    estimator: str
    depvar: str
    id: str | None
    vce: str
    coef: pd.DataFrame
    vcov: pd.DataFrame
    nobs: int
    ngroups: int | None
    nobs_dropped: int
    df_resid: int | None
    rss: float
    group_sizes: tuple[int, float, int] | None = None
    sigma_u: float | None = None
    sigma_u_over_obs: float | None = None
    sigma_e: float | None = None
    rho: float | None = None
    theta: float | None = None
    theta_i: pd.Series | None = None
    r2_within: float | None = None
    r2_between: float | None = None
    r2_overall: float | None = None
    r2_plm: float | None = None
    r2_plm_adj: float | None = None
    corr_u_xb: float | None = None
    f_test: FTest | None = None
    omitted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    level: float = 0.95

    @property
    def theta_summary(self) -> dict[str, float] | None:
        """Min / median / max of the per-group theta_i (``re`` only)."""
        if self.theta_i is None:
            return None
        t = self.theta_i.to_numpy()
        return {"min": float(t.min()), "median": float(np.median(t)), "max": float(t.max())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the result (NaN becomes None)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("estimator", "depvar", "id", "vce")}
        out["coefficients"] = [
            {"name": str(name), **{c: _num(row[c]) for c in self.coef.columns}}
            for name, row in self.coef.iterrows()
        ]
        out |= {
            k: _num(getattr(self, k))
            for k in ("sigma_u", "sigma_u_over_obs", "sigma_e", "rho", "corr_u_xb")
        }
        out["theta"] = (
            None
            if self.estimator != "re"
            else _num(self.theta)
            if self.theta is not None
            else self.theta_summary
        )
        out["r2"] = {k: _num(getattr(self, f"r2_{k}")) for k in ("within", "between", "overall")}
        out |= {
            "f_test": self.f_test.to_dict() if self.f_test is not None else None,
            "df_resid": self.df_resid,
            "nobs": self.nobs,
            "ngroups": self.ngroups,
            "nobs_dropped": self.nobs_dropped,
            "omitted": list(self.omitted),
            "notes": list(self.notes),
        }
        return out

    def summary(self) -> str:
        """Plain-text table laid out like Stata's ``xtreg`` / ``regress`` output."""
        from tiers.panel.text import panel_text

        return panel_text(self)


def pooled_ols(
    data: pd.DataFrame | Mapping[str, Any],
    y: str,
    x: Sequence[str],
    *,
    vce: Vce = "conventional",
    cluster: str | None = None,
    level: float = 0.95,
) -> PanelResult:
    """Pooled OLS with an intercept, as Stata's ``regress`` (optionally ``vce(cluster c)``).

    Parameters
    ----------
    data : pandas or polars DataFrame, or mapping of column name to array
    y, x : response column and regressor columns
    vce : {"conventional", "cluster"}
        ``"cluster"`` needs ``cluster``: Stata's factor G/(G-1) (N-1)/(N-K), K counting the
        intercept, with t(G-1) inference.
    cluster : column of cluster ids (only with ``vce="cluster"``)
    level : confidence level of the intervals

    Returns
    -------
    PanelResult
        ``r2_overall`` holds the usual R-squared; ``ngroups`` the number of clusters, if any.
    """
    _check_args(vce, level)
    if (vce == "cluster") != (cluster is not None):
        raise ValueError("pooled_ols: give cluster= together with vce='cluster', and only then")
    p = _prepare(data, y, x, cluster)
    keep, notes = _drop_pooled_collinear(p.X, p.names)
    names = [p.names[j] for j in keep] + ["_cons"]
    Z = np.column_stack([p.X[:, keep], np.ones(p.N)])
    b, e, bread = _ols(Z, p.y)
    df = p.N - Z.shape[1]
    if df <= 0:
        raise DataError(f"pooled OLS needs more rows than coefficients ({p.N} <= {Z.shape[1]})")
    rss = float(e @ e)
    if vce == "cluster":
        V, df_t = _cluster_vcov(Z, e, p.g, p.n, bread), p.n - 1
    else:
        V, df_t = rss / df * bread, df
    yc = p.y - p.y.mean()
    return PanelResult(
        estimator="pooled",
        depvar=y,
        id=cluster,
        vce=vce,
        coef=_coef_table(b, V, names, df_t, level),
        vcov=pd.DataFrame(V, names, names),
        nobs=p.N,
        ngroups=p.n if cluster is not None else None,
        nobs_dropped=p.dropped,
        df_resid=df_t,
        rss=rss,
        r2_overall=1.0 - rss / float(yc @ yc) if yc @ yc > 0 else None,
        omitted=tuple(p.names[j] for j in range(p.k) if j not in keep),
        notes=tuple(notes),
        level=level,
    )


def fixed_effects(
    data: pd.DataFrame | Mapping[str, Any],
    y: str,
    x: Sequence[str],
    id: str,
    *,
    vce: Vce = "conventional",
    level: float = 0.95,
) -> PanelResult:
    """Within (fixed-effects) estimator, as Stata's ``xtreg, fe`` and plm's ``"within"``.

    Regressors constant within every id are dropped with Stata's note ("note: x omitted because
    of collinearity"), as are regressors collinear with earlier ones after demeaning.

    Reported as Stata does ([XT] xtreg, Methods and formulas):

    * slopes from OLS of y_it - ybar_i on x_it - xbar_i; sigma_e = sqrt(RSS / (N - n - K));
      t statistics on N - n - K df (conventional) or G - 1 df (cluster);
    * ``_cons`` = ybar - xbar b, with the covariance of the regression of y_it - ybar_i + ybar on
      x_it - xbar_i + xbar and a constant (df N - n - K), so Var(_cons) = sigma_e^2 / N +
      xbar' V_b xbar. Under ``vce="cluster"`` the within residuals sum to zero in every panel, so
      the constant's score vanishes and Var(_cons) = xbar' V_b xbar;
    * u_i = ybar_i - xbar_i b - _cons; sigma_u is their SD over groups: ``xtreg_fe.ado`` (v2.1.0)
      summarizes a variable that is non-missing on one row per panel. ``sigma_u_over_obs``
      gives the SD over rows (divisor N - 1) as well; rho = sigma_u^2 / (sigma_u^2 + sigma_e^2);
      corr(u_i, Xb) over rows;
    * R-squared within (of the demeaned regression), between (squared correlation over groups
      of ybar_i and xbar_i b) and overall (squared correlation of y and x b);
    * F test that all u_i = 0: ((RSS_pooled - RSS) / (n - 1)) / (RSS / (N - n - K)), the pooled
      regression using the same kept regressors plus a constant (plm's ``pFtest`` also keeps
      time-invariant ones in the pooled model, so its df1 differs then). Not reported with
      ``vce="cluster"`` (as Stata, since it assumes iid errors).

    ``vce="cluster"`` clusters by ``id`` with Stata's ``xtreg, fe`` factor G/(G-1) (N-1)/(N-K),
    K = slopes + 1 (the constant): panels are nested in clusters, so the absorbed effects are not
    counted (Wooldridge 2010, sec. 10.5.4; xtreg's default, not ``areg``'s). plm's
    ``vcovHC(type="sss")`` counts the slopes only, so its SEs are smaller by
    sqrt((N - K - 1) / (N - K)) with K slopes; the raw sandwich is the same.

    Raises
    ------
    DataError
        Unknown or non-numeric columns, every id observed once (no within variation), no
        time-varying regressor, or no residual degrees of freedom.
    """
    from scipy.special import fdtrc  # F's survival function, as scipy.stats.f.sf computes it

    _check_args(vce, level)
    p = _prepare(data, y, x, id)
    if p.n == p.N:
        raise DataError(
            f"fixed effects need repeated observations within {id!r}: each of its {p.n} groups "
            "has a single observation, so there is no within-group variation"
        )
    w = _within(p)
    notes = [
        f"note: {p.names[j]} omitted because of collinearity" for j in range(p.k) if j not in w.keep
    ]
    if not w.keep:
        raise DataError(
            f"fixed effects: no regressor varies within {id!r} "
            f"({', '.join(p.names)} are all constant within every group)"
        )
    K, N, n = len(w.keep), p.N, p.n
    df_e = N - n - K
    if df_e <= 0:
        raise DataError(f"fixed effects: no residual degrees of freedom (N - n - K = {df_e})")
    names = [p.names[j] for j in w.keep] + ["_cons"]
    # Everything below works from the K x K cross-products of the within regression and the
    # n group means: the rows are split into within and between parts, x_it b = xw_it b +
    # xbar_i b, and sums over rows of products become xw'xw + sum_i T_i (between products).
    Xbar = p.Xbar[:, w.keep]
    xbar, ybar = p.Ti @ Xbar / N, float(p.Ti @ p.ybar) / N
    cons = ybar - float(xbar @ w.b)
    # Z = [Xw + xbar, 1]: Z'Z from Xw'Xw, as the demeaned columns sum to zero
    ZZ = np.empty((K + 1, K + 1))
    ZZ[:K, :K] = w.G + N * np.outer(xbar, xbar)
    ZZ[:K, K] = ZZ[K, :K] = N * xbar
    ZZ[K, K] = N
    bread = np.linalg.inv(ZZ)
    s2 = w.rss / df_e
    if vce == "cluster":
        se_g = np.bincount(p.g, w.e, minlength=n)
        scores = np.empty((n, K + 1))
        for i in range(K):
            scores[:, i] = np.bincount(p.g, w.Xw[:, i] * w.e, minlength=n) + xbar[i] * se_g
        scores[:, K] = se_g
        V, df_t = _cluster_sandwich(scores, N, bread), n - 1
    else:
        V, df_t = s2 * bread, df_e
    beta = np.append(w.b, cons)
    xbg = Xbar @ w.b + cons  # group means of x b
    u = p.ybar - xbg
    Ti = p.Ti
    sigma_u = float(np.std(u, ddof=1)) if n > 1 else math.nan
    mu = float(Ti @ u) / N  # u over rows
    sigma_u_obs = math.sqrt(float(Ti @ (u - mu) ** 2) / (N - 1)) if N > 1 else math.nan
    sigma_e = math.sqrt(s2)
    # centred sums over rows: within part + between part
    dy, dxb, du = p.ybar - ybar, xbg - cons - float(xbar @ w.b), u - mu
    wxb = w.G @ w.b  # Xw'(Xw b)
    s_yy = float(p.yw @ p.yw) + float(Ti @ dy**2)
    s_xbxb = float(w.b @ wxb) + float(Ti @ dxb**2)
    s_yxb = float(w.Xy @ w.b) + float(Ti @ (dy * dxb))
    s_uxb = float(Ti @ (du * dxb))  # u is constant within groups
    s_uu = float(Ti @ du**2)
    f_test = None
    if vce == "conventional" and n > 1:
        # pooled OLS of y on (Xk, 1) from the centred cross-products, within + between
        dX = Xbar - xbar
        Sxx = w.G + dX.T @ (dX * Ti[:, None])
        Sxy = w.Xy + dX.T @ (Ti * dy)
        rss_p = s_yy - float(Sxy @ np.linalg.solve(Sxx, Sxy))
        F = ((rss_p - w.rss) / (n - 1)) / s2
        f_test = FTest(F=F, df1=n - 1, df2=df_e, p_value=float(fdtrc(n - 1, df_e, F)))
    elif vce == "cluster":
        notes.append("F test that all u_i=0 not reported with vce='cluster' (as Stata)")
    tss_w = float(p.yw @ p.yw)
    r2_w = 1.0 - w.rss / tss_w if tss_w > 0 else None
    # x b over rows is constant when its sum of squares is within rounding of its size
    flat_xb = s_xbxb <= N * (_INVARIANT_TOL * float(np.abs(xbg).max())) ** 2
    r_y_xb = _corr_sums(s_yxb, s_yy, s_xbxb, _flat(p.y) or N < 2, flat_xb)
    return PanelResult(
        estimator="fe",
        depvar=y,
        id=id,
        vce=vce,
        coef=_coef_table(beta, V, names, df_t, level),
        vcov=pd.DataFrame(V, names, names),
        nobs=N,
        ngroups=n,
        nobs_dropped=p.dropped,
        df_resid=df_t,
        rss=w.rss,
        group_sizes=p.group_sizes,
        sigma_u=sigma_u,
        sigma_u_over_obs=sigma_u_obs,
        sigma_e=sigma_e,
        rho=sigma_u**2 / (sigma_u**2 + s2) if n > 1 else None,
        r2_within=r2_w,
        r2_between=_corr2(p.ybar, Xbar @ w.b),
        r2_overall=None if r_y_xb is None else r_y_xb**2,
        r2_plm=r2_w,
        r2_plm_adj=None if r2_w is None else 1 - (1 - r2_w) * (N - 1) / df_e,
        corr_u_xb=_corr_sums(s_uxb, s_uu, s_xbxb, _flat(u) or N < 2, flat_xb),
        f_test=f_test,
        omitted=tuple(p.names[j] for j in range(p.k) if j not in w.keep),
        notes=tuple(notes),
        level=level,
    )


def random_effects(
    data: pd.DataFrame | Mapping[str, Any],
    y: str,
    x: Sequence[str],
    id: str,
    *,
    vce: Vce = "conventional",
    level: float = 0.95,
) -> PanelResult:
    """Random-effects GLS with Swamy-Arora variance components, as plm ``random.method="swar"``.

    Variance components (Baltagi 2013, eqs. 2.24-2.25 and, unbalanced, sec. 9.2.1; plm 2.6-2
    ``ercomp``):

    * sigma_e^2 = RSS_within / (N - n - K_w), K_w the regressors that vary within ids;
    * between regression: OLS of ybar_i on (1, xbar_i) over rows (plm's ``"Between"`` model,
      i.e. groups weighted by T_i), q = sum_i T_i e_i^2 and K_b its non-aliased slopes;
    * sigma_u^2 = (q - (n - K_b - 1) sigma_e^2) / (N - tr[(Z_B'Z_B)^-1 Z_S'Z]) with Z_B the group
      means and Z_S the group sums per row; for balanced panels this reduces to
      (q / (n - K_b - 1) - sigma_e^2) / T. A negative value is set to 0 (as plm), with a note;
    * theta_i = 1 - sqrt(sigma_e^2 / (T_i sigma_u^2 + sigma_e^2)); OLS of y_it - theta_i ybar_i
      on (1 - theta_i, x_it - theta_i xbar_i).

    Stata's default ``xtreg, re`` matches this for balanced panels; for unbalanced ones Stata
    uses a harmonic-mean-T approximation unless ``sa`` is given, and that is not reproduced.
    The covariance is that of the OLS on transformed data (RSS* / (N - K - 1) times the inverse
    cross-product, as both plm and ``xtreg_re`` compute it), with z statistics. Under
    ``vce="cluster"`` (by ``id``) the sandwich of that regression is scaled by Stata's
    ``regress`` factor G/(G-1) (N-1)/(N-K), K counting the constant. R-squareds follow
    ``xtreg_re``: within = corr(xb - mean_i xb, y - ybar_i)^2, between and overall as in
    :func:`fixed_effects`.
    """
    _check_args(vce, level)
    p = _prepare(data, y, x, id)
    keep, notes = _drop_pooled_collinear(p.X, p.names)
    names = [p.names[j] for j in keep] + ["_cons"]
    Z = np.column_stack([p.X[:, keep], np.ones(p.N)])
    N, n, k = p.N, p.n, len(keep)
    w = _within(p, keep)
    df_e = N - n - len(w.keep)
    if df_e <= 0:
        raise DataError(
            f"random effects: sigma_e needs within-{id!r} degrees of freedom "
            f"(N - n - K = {df_e}); ids need repeated observations"
        )
    s2_e = w.rss / df_e
    Zm = p.means(Z)  # group means, n x (k + 1)
    bkeep = _drop_pooled_collinear(Zm[:, :k], names[:k])[0] + [k]
    Zb = Zm[:, bkeep]
    sw = np.sqrt(p.Ti)
    bb = np.linalg.lstsq(Zb * sw[:, None], p.ybar * sw, rcond=None)[0]
    q = float(p.Ti @ (p.ybar - Zb @ bb) ** 2)
    df_b = n - len(bkeep)
    if df_b <= 0:
        raise DataError(
            f"random effects: the between regression needs more groups of {id!r} "
            f"({n}) than coefficients ({len(bkeep)})"
        )
    zz = Zb.T @ (Zb * p.Ti[:, None])
    trace = float(np.trace(np.linalg.solve(zz, Zb.T @ (Zb * (p.Ti**2)[:, None]))))
    s2_u = (q - df_b * s2_e) / (N - trace)
    if s2_u < 0:
        notes.append(f"sigma_u^2 estimate {s2_u:.6g} < 0 set to 0: the model reduces to pooled OLS")
        s2_u = 0.0
    th = 1.0 - np.sqrt(s2_e / (p.Ti * s2_u + s2_e)) if s2_e > 0 else np.ones(n)
    ys = p.y - th[p.g] * p.ybar[p.g]
    Zs = Z - th[p.g, None] * Zm[p.g]
    b, e, bread = _ols(Zs, ys)
    rss = float(e @ e)
    if vce == "cluster":
        V = _cluster_vcov(Zs, e, p.g, n, bread)
    else:
        V = rss / (N - k - 1) * bread
    xb = Z @ b
    xbm = p.means(xb)
    ysc = ys - ys.mean()
    r2_t = 1.0 - rss / float(ysc @ ysc) if ysc @ ysc > 0 else None
    balanced = bool(np.all(p.Ti == p.Ti[0]))
    return PanelResult(
        estimator="re",
        depvar=y,
        id=id,
        vce=vce,
        coef=_coef_table(b, V, names, None, level),
        vcov=pd.DataFrame(V, names, names),
        nobs=N,
        ngroups=n,
        nobs_dropped=p.dropped,
        df_resid=None,
        rss=rss,
        group_sizes=p.group_sizes,
        sigma_u=math.sqrt(s2_u),
        sigma_e=math.sqrt(s2_e),
        rho=s2_u / (s2_u + s2_e) if s2_u + s2_e > 0 else None,
        theta=float(th[0]) if balanced else None,
        theta_i=pd.Series(th, index=p.labels),
        r2_within=_corr2(xb - xbm[p.g], p.yw),
        r2_between=_corr2(xbm, p.ybar),
        r2_overall=_corr2(xb, p.y),
        r2_plm=r2_t,
        r2_plm_adj=None if r2_t is None else 1 - (1 - r2_t) * (N - 1) / (N - k - 1),
        omitted=tuple(p.names[j] for j in range(p.k) if j not in keep),
        notes=tuple(notes),
        level=level,
    )


def _corr_sums(s_ab: float, s_aa: float, s_bb: float, flat_a: bool, flat_b: bool) -> float | None:
    """Pearson correlation from centred sums, None where either series is constant (`_corr`)."""
    if flat_a or flat_b or s_aa <= 0 or s_bb <= 0:
        return None
    return s_ab / math.sqrt(s_aa * s_bb)


# ---------------------------------------------------------------------------------------------
# internals
