"""Panel-data estimators as Stata's ``xtreg`` and R's ``plm`` report them.

``pooled_ols`` (``regress``), ``fixed_effects`` (``xtreg, fe`` / plm ``"within"``) and
``random_effects`` (``xtreg, re`` / plm ``"random"`` with ``random.method = "swar"``), each with
conventional or cluster-robust (by panel id) standard errors. The Hausman test is in
:mod:`tiers.panel_tests`.

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
from scipy import stats

from tiers.errors import DataError

__all__ = ["FTest", "PanelResult", "pooled_ols", "fixed_effects", "random_effects"]

Vce = Literal["conventional", "cluster"]
# Relative tolerances: a column whose range within every group is below _INVARIANT_TOL times its
# largest magnitude is time-invariant; one whose residual sum of squares, after projecting on the
# columns kept before it, is below _COLLINEAR_TOL times its own sum of squares is collinear.
_INVARIANT_TOL = 1e-12
_COLLINEAR_TOL = 1e-10


@dataclass(frozen=True, eq=False)
class FTest:
    """F test that all u_i = 0 after ``xtreg, fe`` (pooled OLS against the within model)."""

    F: float
    df1: int
    df2: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with keys F, df1, df2, p_value."""
        return {"F": float(self.F), "df1": self.df1, "df2": self.df2,
                "p_value": float(self.p_value)}


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
        """min / median / max of the per-group theta_i (``re`` only)."""
        if self.theta_i is None:
            return None
        t = self.theta_i.to_numpy()
        return {"min": float(t.min()), "median": float(np.median(t)), "max": float(t.max())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the result (NaN becomes None)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("estimator", "depvar", "id", "vce")}
        out["coefficients"] = [{"name": str(name), **{c: _num(row[c]) for c in self.coef.columns}}
                               for name, row in self.coef.iterrows()]
        out |= {k: _num(getattr(self, k))
                for k in ("sigma_u", "sigma_u_over_obs", "sigma_e", "rho", "corr_u_xb")}
        out["theta"] = (None if self.estimator != "re" else
                        _num(self.theta) if self.theta is not None else self.theta_summary)
        out["r2"] = {k: _num(getattr(self, f"r2_{k}")) for k in ("within", "between", "overall")}
        out |= {"f_test": self.f_test.to_dict() if self.f_test is not None else None,
                "df_resid": self.df_resid, "nobs": self.nobs, "ngroups": self.ngroups,
                "nobs_dropped": self.nobs_dropped, "omitted": list(self.omitted),
                "notes": list(self.notes)}
        return out

    def summary(self) -> str:
        """Plain-text table laid out like Stata's ``xtreg`` / ``regress`` output."""
        title = {
            "pooled": "Linear regression (pooled OLS)",
            "fe": "Fixed-effects (within) regression",
            "re": "Random-effects GLS regression",
        }[self.estimator]
        lines = [f"{title:<48}Number of obs     = {self.nobs:>10,}"]
        if self.ngroups is not None:
            lines.append(f"{'Group variable: ' + str(self.id):<48}Number of groups  = "
                         f"{self.ngroups:>10,}")
        if self.nobs_dropped:
            lines.append(f"({self.nobs_dropped} rows with missing values dropped)")
        r2 = [("within", self.r2_within), ("between", self.r2_between),
              ("overall", self.r2_overall)]
        lines.append("")
        if self.estimator == "pooled":
            lines.append(f"R-squared = {_fmt_r2(self.r2_overall)}")
        else:
            gmin, gavg, gmax = self.group_sizes or (0, 0.0, 0)
            sizes = [("min", f"{gmin:>10,}"), ("avg", f"{gavg:>10.1f}"), ("max", f"{gmax:>10,}")]
            lines.append(f"{'R-squared:':<48}Obs per group:")
            for (lab, val), (slab, sval) in zip(r2, sizes, strict=True):
                lines.append(f"     {lab:<7} = {_fmt_r2(val):<30}{slab:>20} = {sval}")
        if self.corr_u_xb is not None:
            lines.append(f"corr(u_i, Xb) = {self.corr_u_xb:.4f}")
        if self.estimator == "re":
            th = self.theta_summary
            if self.theta is not None:
                lines.append(f"theta = {self.theta:.7g}")
            elif th is not None:
                lines.append(f"theta: min {th['min']:.4f}  median {th['median']:.4f}  "
                             f"max {th['max']:.4f}")
        sname = "t" if self.df_resid is not None else "z"
        rule = "-" * 13 + "+" + "-" * 64
        lines += ["", "-" * 78]
        if self.vce == "cluster":
            lines.append(f"{'':>12} | {'':>11} {'Robust':>11}")
        lines += [f"{self.depvar[:12]:>12} | {'Coefficient':>11} {'Std. err.':>11} {sname:>7} "
                  f"{'P>|' + sname + '|':>6}   [{self.level:.0%} conf. interval]", rule]
        for name, row in self.coef.iterrows():
            lines.append(f"{str(name)[:12]:>12} | {_g(row.estimate)} {_g(row.std_error)} "
                         f"{row.stat:7.2f} {row.p_value:6.3f}   {_g(row.ci_lower)} "
                         f"{_g(row.ci_upper)}")
        if self.estimator != "pooled":
            lines.append(rule)
            lines.append(f"{'sigma_u':>12} | {_g(self.sigma_u)}")
            lines.append(f"{'sigma_e':>12} | {_g(self.sigma_e)}")
            lines.append(f"{'rho':>12} | {_g(self.rho)}   (fraction of variance due to u_i)")
        lines.append("-" * 78)
        if self.f_test is not None:
            f = self.f_test
            lines.append(f"F test that all u_i=0: F({f.df1}, {f.df2}) = {f.F:.2f}"
                         f"{'Prob > F = ':>24}{f.p_value:.4f}")
        lines += list(self.notes)
        return "\n".join(lines)


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
    data : DataFrame or mapping of column name to array
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
        estimator="pooled", depvar=y, id=cluster, vce=vce,
        coef=_coef_table(b, V, names, df_t, level), vcov=pd.DataFrame(V, names, names),
        nobs=p.N, ngroups=p.n if cluster is not None else None, nobs_dropped=p.dropped,
        df_resid=df_t, rss=rss, r2_overall=1.0 - rss / float(yc @ yc) if yc @ yc > 0 else None,
        omitted=tuple(p.names[j] for j in range(p.k) if j not in keep), notes=tuple(notes),
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
    _check_args(vce, level)
    p = _prepare(data, y, x, id)
    if p.n == p.N:
        raise DataError(
            f"fixed effects need repeated observations within {id!r}: each of its {p.n} groups "
            "has a single observation, so there is no within-group variation"
        )
    w = _within(p)
    notes = [f"note: {p.names[j]} omitted because of collinearity"
             for j in range(p.k) if j not in w.keep]
    if not w.keep:
        raise DataError(f"fixed effects: no regressor varies within {id!r} "
                        f"({', '.join(p.names)} are all constant within every group)")
    K, N, n = len(w.keep), p.N, p.n
    df_e = N - n - K
    if df_e <= 0:
        raise DataError(f"fixed effects: no residual degrees of freedom (N - n - K = {df_e})")
    names = [p.names[j] for j in w.keep] + ["_cons"]
    Xk = p.X[:, w.keep]
    xbar, ybar = Xk.mean(axis=0), float(p.y.mean())
    cons = ybar - float(xbar @ w.b)
    Z = np.column_stack([w.Xw + xbar, np.ones(N)])
    bread = np.linalg.inv(Z.T @ Z)
    s2 = w.rss / df_e
    if vce == "cluster":
        V, df_t = _cluster_vcov(Z, w.e, p.g, n, bread), n - 1
    else:
        V, df_t = s2 * bread, df_e
    beta = np.append(w.b, cons)
    u = p.ybar - p.means(Xk) @ w.b - cons
    xb = Xk @ w.b + cons
    sigma_u = float(np.std(u, ddof=1)) if n > 1 else math.nan
    sigma_u_obs = float(np.std(u[p.g], ddof=1))
    sigma_e = math.sqrt(s2)
    f_test = None
    if vce == "conventional" and n > 1:
        _, e_p, _ = _ols(np.column_stack([Xk, np.ones(N)]), p.y)
        F = ((float(e_p @ e_p) - w.rss) / (n - 1)) / s2
        f_test = FTest(F=F, df1=n - 1, df2=df_e, p_value=float(stats.f.sf(F, n - 1, df_e)))
    elif vce == "cluster":
        notes.append("F test that all u_i=0 not reported with vce='cluster' (as Stata)")
    tss_w = float(p.yw @ p.yw)
    r2_w = 1.0 - w.rss / tss_w if tss_w > 0 else None
    return PanelResult(
        estimator="fe", depvar=y, id=id, vce=vce,
        coef=_coef_table(beta, V, names, df_t, level), vcov=pd.DataFrame(V, names, names),
        nobs=N, ngroups=n, nobs_dropped=p.dropped, df_resid=df_t, rss=w.rss,
        group_sizes=p.group_sizes, sigma_u=sigma_u, sigma_u_over_obs=sigma_u_obs,
        sigma_e=sigma_e, rho=sigma_u**2 / (sigma_u**2 + s2) if n > 1 else None,
        r2_within=r2_w, r2_between=_corr2(p.ybar, p.means(Xk) @ w.b),
        r2_overall=_corr2(p.y, xb),
        r2_plm=r2_w, r2_plm_adj=None if r2_w is None else 1 - (1 - r2_w) * (N - 1) / df_e,
        corr_u_xb=_corr(u[p.g], xb), f_test=f_test,
        omitted=tuple(p.names[j] for j in range(p.k) if j not in w.keep), notes=tuple(notes),
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
        raise DataError(f"random effects: sigma_e needs within-{id!r} degrees of freedom "
                        f"(N - n - K = {df_e}); ids need repeated observations")
    s2_e = w.rss / df_e
    Zm = p.means(Z)  # group means, n x (k + 1)
    bkeep = _drop_pooled_collinear(Zm[:, :k], names[:k])[0] + [k]
    Zb = Zm[:, bkeep]
    sw = np.sqrt(p.Ti)
    bb = np.linalg.lstsq(Zb * sw[:, None], p.ybar * sw, rcond=None)[0]
    q = float(p.Ti @ (p.ybar - Zb @ bb) ** 2)
    df_b = n - len(bkeep)
    if df_b <= 0:
        raise DataError(f"random effects: the between regression needs more groups of {id!r} "
                        f"({n}) than coefficients ({len(bkeep)})")
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
        estimator="re", depvar=y, id=id, vce=vce,
        coef=_coef_table(b, V, names, None, level), vcov=pd.DataFrame(V, names, names),
        nobs=N, ngroups=n, nobs_dropped=p.dropped, df_resid=None, rss=rss,
        group_sizes=p.group_sizes, sigma_u=math.sqrt(s2_u), sigma_e=math.sqrt(s2_e),
        rho=s2_u / (s2_u + s2_e) if s2_u + s2_e > 0 else None,
        theta=float(th[0]) if balanced else None, theta_i=pd.Series(th, index=p.labels),
        r2_within=_corr2(xb - xbm[p.g], p.yw), r2_between=_corr2(xbm, p.ybar),
        r2_overall=_corr2(xb, p.y), r2_plm=r2_t,
        r2_plm_adj=None if r2_t is None else 1 - (1 - r2_t) * (N - 1) / (N - k - 1),
        omitted=tuple(p.names[j] for j in range(p.k) if j not in keep), notes=tuple(notes),
        level=level,
    )


# ---------------------------------------------------------------------------------------------
# internals


@dataclass(frozen=True, eq=False)
class _Panel:
    y: np.ndarray
    X: np.ndarray
    names: tuple[str, ...]
    g: np.ndarray  # group code per row, 0..n-1
    labels: pd.Index
    Ti: np.ndarray  # rows per group, as float
    dropped: int

    N = property(lambda self: len(self.y))
    n = property(lambda self: len(self.Ti))
    k = property(lambda self: self.X.shape[1])
    ybar = property(lambda self: self.means(self.y))
    yw = property(lambda self: self.y - self.ybar[self.g])

    @property
    def group_sizes(self) -> tuple[int, float, int]:
        return int(self.Ti.min()), float(self.Ti.mean()), int(self.Ti.max())

    def means(self, a: np.ndarray) -> np.ndarray:
        """Group means of a vector (n,) or of each column of a matrix (n, p)."""
        if a.ndim == 1:
            return np.bincount(self.g, a, minlength=self.n) / self.Ti
        return np.column_stack([self.means(a[:, j]) for j in range(a.shape[1])])


@dataclass(frozen=True, eq=False)
class _Within:
    keep: list[int]
    Xw: np.ndarray
    b: np.ndarray
    e: np.ndarray
    rss: float


def _check_args(vce: str, level: float) -> None:
    if vce not in ("conventional", "cluster"):
        raise ValueError(f"vce must be 'conventional' or 'cluster', not {vce!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level!r}")


def _prepare(data: Any, y: str, x: Sequence[str], group: str | None) -> _Panel:
    if isinstance(data, pd.DataFrame):
        df = data
    elif isinstance(data, Mapping):
        try:
            df = pd.DataFrame({str(c): np.asarray(v) for c, v in data.items()})
        except ValueError as exc:
            raise DataError(f"data columns cannot form a table: {exc}") from exc
    else:
        raise DataError("data must be a pandas DataFrame or a mapping of column name to array")
    xs = [x] if isinstance(x, str) else list(x)
    if not xs:
        raise DataError("at least one regressor is needed in x")
    if len(set(xs)) != len(xs) or y in xs:
        raise DataError(f"y and x must name distinct columns (y={y!r}, x={xs!r})")
    for col in [y, *xs] + ([group] if group is not None else []):
        if col not in df.columns:
            raise DataError(f"unknown column {col!r}; columns are {list(map(str, df.columns))}")
    for col in [y, *xs]:
        s = df[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_complex_dtype(s):
            raise DataError(f"column {col!r} is not numeric (dtype {s.dtype})")
    cols = list(dict.fromkeys([y, *xs] + ([group] if group is not None else [])))
    ok = df[cols].notna().all(axis=1).to_numpy()
    if not ok.any():
        raise DataError("no rows left after dropping rows with missing values")
    yv = df[y].to_numpy(dtype=float, na_value=np.nan)[ok]
    X = np.column_stack([df[c].to_numpy(dtype=float, na_value=np.nan)[ok] for c in xs])
    bad = [c for c, v in zip([y, *xs], [yv, *X.T], strict=True) if not np.isfinite(v).all()]
    if bad:
        raise DataError(f"column {bad[0]!r} has infinite values")
    if group is None:
        codes, labels = np.zeros(len(yv), dtype=np.intp), pd.Index([0])
    else:
        ids = df[group][ok]
        try:
            codes, labels = pd.factorize(ids, sort=True)
        except TypeError:  # ids of mixed types cannot be sorted; keep first-seen order
            codes, labels = pd.factorize(ids, sort=False)
        labels = pd.Index(labels, name=group)
    Ti = np.bincount(codes, minlength=len(labels)).astype(float)
    return _Panel(yv, X, tuple(xs), codes, labels, Ti, int((~ok).sum()))


def _independent(M: np.ndarray) -> list[int]:
    """Columns of M (already centred or demeaned) kept greedily, left to right, dropping each
    one that lies in the span of those kept before it (Stata's _rmcoll keeps the first)."""
    kept: list[int] = []
    for j in range(M.shape[1]):
        c = M[:, j]
        ss = float(c @ c)
        if ss == 0.0:
            continue
        if kept:
            B = M[:, kept]
            c = c - B @ np.linalg.lstsq(B, c, rcond=None)[0]
        if float(c @ c) > _COLLINEAR_TOL * ss:
            kept.append(j)
    return kept


def _constant(M: np.ndarray, groups: np.ndarray | None = None, n: int = 1) -> np.ndarray:
    """Whether each column is constant (within every group, when groups are given)."""
    scale = np.maximum(np.abs(M).max(axis=0), np.finfo(float).tiny)
    if groups is None:
        spread = np.ptp(M, axis=0)
    else:
        spread = np.zeros(M.shape[1])
        for j in range(M.shape[1]):
            hi = np.full(n, -np.inf)
            lo = np.full(n, np.inf)
            np.maximum.at(hi, groups, M[:, j])
            np.minimum.at(lo, groups, M[:, j])
            spread[j] = np.max(hi - lo)
    return spread <= _INVARIANT_TOL * scale


def _drop_pooled_collinear(X: np.ndarray, names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Regressors kept next to an intercept, with Stata's note for each one dropped."""
    cand = [j for j in range(X.shape[1]) if not _constant(X)[j]]
    kept = [cand[i] for i in _independent(X[:, cand] - X[:, cand].mean(axis=0))]
    notes = [f"note: {names[j]} omitted because of collinearity"
             for j in range(X.shape[1]) if j not in kept]
    return kept, notes


def _within(p: _Panel, cols: Sequence[int] | None = None) -> _Within:
    """Within regression on the columns `cols` that vary within groups and are not collinear
    after demeaning (Baltagi 2013, sec. 2.2; Stata drops the others with a note)."""
    cols = list(range(p.k)) if cols is None else list(cols)
    Xw_all = p.X - p.means(p.X)[p.g]
    inv = _constant(p.X, p.g, p.n)
    tv = [j for j in cols if not inv[j]]
    keep = [tv[i] for i in _independent(Xw_all[:, tv])]
    Xw = Xw_all[:, keep]
    yw = p.yw
    b = np.linalg.lstsq(Xw, yw, rcond=None)[0] if keep else np.zeros(0)
    e = yw - Xw @ b
    return _Within(keep, Xw, b, e, float(e @ e))


def _ols(Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS coefficients, residuals and (Z'Z)^-1."""
    bread = np.linalg.inv(Z.T @ Z)
    b = np.linalg.lstsq(Z, y, rcond=None)[0]
    return b, y - Z @ b, bread


def _cluster_vcov(Z: np.ndarray, e: np.ndarray, g: np.ndarray, G: int,
                  bread: np.ndarray) -> np.ndarray:
    """Cluster-robust sandwich (Arellano 1987) with Stata's small-sample factor
    G/(G-1) (N-1)/(N-K), K = columns of Z ([U] 20.22; [XT] xtreg, vce(cluster))."""
    if G < 2:
        raise DataError("cluster-robust standard errors need at least two clusters")
    N, K = Z.shape
    scores = np.zeros((G, K))
    np.add.at(scores, g, Z * e[:, None])
    meat = scores.T @ scores
    return G / (G - 1) * (N - 1) / (N - K) * (bread @ meat @ bread)


def _coef_table(b: np.ndarray, V: np.ndarray, names: list[str], df: int | None,
                level: float) -> pd.DataFrame:
    se = np.sqrt(np.clip(np.diag(V), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = b / se
    dist = stats.norm if df is None else stats.t(df)
    crit = float(dist.ppf(0.5 + level / 2))
    return pd.DataFrame(
        {"estimate": b, "std_error": se, "stat": stat, "p_value": 2 * dist.sf(np.abs(stat)),
         "ci_lower": b - crit * se, "ci_upper": b + crit * se},
        index=pd.Index(names, name="name"),
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None where either series is constant (Stata reports '.')."""
    if len(a) < 2 or _constant(np.column_stack([a, b])).any():
        return None
    ac, bc = a - a.mean(), b - b.mean()
    return float(ac @ bc / math.sqrt(float(ac @ ac) * float(bc @ bc)))


def _corr2(a: np.ndarray, b: np.ndarray) -> float | None:
    r = _corr(a, b)
    return None if r is None else r * r


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _g(v: float | None) -> str:
    return f"{'.':>11}" if v is None or math.isnan(v) else f"{v:11.7g}"


def _fmt_r2(v: float | None) -> str:
    return "     ." if v is None else f"{v:6.4f}"
