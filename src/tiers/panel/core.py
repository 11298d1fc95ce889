"""Private building blocks of the panel estimators.

Data preparation, within transforms, OLS, cluster-robust covariance, coefficient tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from tiers.errors import DataError

# Relative tolerances: a column whose range within every group is below _INVARIANT_TOL times its
# largest magnitude is time-invariant; one whose residual sum of squares, after projecting on the
# columns kept before it, is below _COLLINEAR_TOL times its own sum of squares is collinear.
_INVARIANT_TOL = 1e-12
_COLLINEAR_TOL = 1e-10


@dataclass(frozen=True, eq=False)
class _Panel:
    y: np.ndarray
    X: np.ndarray  # (N, k), Fortran order: each column contiguous for bincount
    names: tuple[str, ...]
    g: np.ndarray  # group code per row, 0..n-1
    labels: pd.Index
    Ti: np.ndarray  # rows per group, as float
    dropped: int

    N = property(lambda self: len(self.y))
    n = property(lambda self: len(self.Ti))
    k = property(lambda self: self.X.shape[1])

    @cached_property
    def ybar(self) -> np.ndarray:
        return self.means(self.y)

    @cached_property
    def yw(self) -> np.ndarray:
        return self.y - self.ybar[self.g]

    @cached_property
    def Xbar(self) -> np.ndarray:
        """Group means of the regressors, (n, k)."""
        return self.means(self.X)

    @property
    def group_sizes(self) -> tuple[int, float, int]:
        return int(self.Ti.min()), float(self.Ti.mean()), int(self.Ti.max())

    def means(self, a: np.ndarray) -> np.ndarray:
        """Group means of a vector (n,) or of each column of a matrix (n, p)."""
        if a.ndim == 1:
            return np.bincount(self.g, a, minlength=self.n) / self.Ti
        return np.column_stack([self.means(a[:, j]) for j in range(a.shape[1])])

    def demeaned(self, cols: Sequence[int]) -> np.ndarray:
        """Columns ``cols`` of X less their group means, (N, len(cols)) in Fortran order."""
        out = np.empty((self.N, len(cols)), order="F")
        for i, j in enumerate(cols):
            np.subtract(self.X[:, j], self.Xbar[self.g, j], out=out[:, i])
        return out


@dataclass(frozen=True, eq=False)
class _Within:
    keep: list[int]
    Xw: np.ndarray
    b: np.ndarray
    e: np.ndarray
    rss: float
    G: np.ndarray  # Xw'Xw, (K, K)
    Xy: np.ndarray  # Xw'yw, (K,)


def _check_args(vce: str, level: float) -> None:
    if vce not in ("conventional", "cluster"):
        raise ValueError(f"vce must be 'conventional' or 'cluster', not {vce!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level!r}")


def _prepare(data: Any, y: str, x: Sequence[str], group: str | None) -> _Panel:
    if isinstance(data, pd.DataFrame):
        df = data
    elif type(data).__module__.startswith("polars") and hasattr(data, "to_pandas"):
        from tiers.data.convert import polars_to_pandas

        df = polars_to_pandas(data)
    elif isinstance(data, Mapping):
        try:
            df = pd.DataFrame({str(c): np.asarray(v) for c, v in data.items()})
        except ValueError as exc:
            raise DataError(f"data columns cannot form a table: {exc}") from exc
    else:
        raise DataError(
            "data must be a pandas or polars DataFrame or a mapping of column name to array; got "
            f"{type(data).__name__}"
        )
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
    # one n-row mask, no copy of the frame; rows are taken out only when some are missing
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        missing = df[c].isna().to_numpy()
        if missing.any():
            ok &= ~missing
    every = bool(ok.all())
    if not ok.any():
        raise DataError("no rows left after dropping rows with missing values")

    def column(c: str) -> np.ndarray:
        v = df[c].to_numpy(dtype=float, na_value=np.nan)
        return v if every else v[ok]

    yv = column(y)
    X = np.empty((len(yv), len(xs)), order="F")
    for j, c in enumerate(xs):
        X[:, j] = column(c)
    bad = [c for c, v in zip([y, *xs], [yv, *X.T], strict=True) if not np.isfinite(v).all()]
    if bad:
        raise DataError(f"column {bad[0]!r} has infinite values")
    if group is None:
        codes, labels = np.zeros(len(yv), dtype=np.intp), pd.Index([0])
    else:
        ids = df[group] if every else df[group][ok]
        try:
            codes, labels = pd.factorize(ids, sort=True)
        except TypeError:  # ids of mixed types cannot be sorted; keep first-seen order
            codes, labels = pd.factorize(ids, sort=False)
        labels = pd.Index(labels, name=group)
    Ti = np.bincount(codes, minlength=len(labels)).astype(float)
    if group is not None and Ti.max() > 1:  # one row per id: the "repeated observations" error
        means = np.bincount(codes, weights=yv, minlength=len(labels)) / np.maximum(Ti, 1.0)
        if np.all(np.abs(yv - means[codes]) <= 1e-12 * np.max(np.abs(yv))):
            raise DataError(
                f"the response {y!r} is constant within every group of {group!r}: there is no "
                "within-group variation to estimate the residual variance (or the within "
                f"estimator) from; fit {y!r} at the level of {group!r} (one row per group) instead"
            )
    return _Panel(yv, X, tuple(xs), codes, labels, Ti, int((~ok).sum()))


def _independent(M: np.ndarray) -> list[int]:
    """Columns of M (already centred or demeaned) kept greedily, left to right.

    Each one that lies in the span of those kept before it is dropped (Stata's _rmcoll keeps the
    first). Decided on the cross-product M'M, see `_independent_gram`.
    """
    return _independent_gram(M.T @ M)


def _independent_gram(G: np.ndarray) -> list[int]:
    """`_independent` from the cross-product ``G = M'M`` of the centred columns.

    Column j is kept unless its residual sum of squares on the kept columns,
    ``G_jj - G_jK G_KK^-1 G_Kj``, is at most ``_COLLINEAR_TOL`` times ``G_jj``: one pass over
    the rows (the product) instead of a least-squares solve on them per column.
    """
    kept: list[int] = []
    for j in range(G.shape[0]):
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


def _constant(M: np.ndarray, groups: np.ndarray | None = None, n: int = 1) -> np.ndarray:
    """Whether each column is constant (within every group, when groups are given)."""
    scale = np.maximum(np.abs(M).max(axis=0), np.finfo(float).tiny)
    if groups is None:
        spread = np.ptp(M, axis=0)
    else:
        spread = np.zeros(M.shape[1])
        for j in range(M.shape[1]):
            spread[j] = _within_spread(M[:, j], groups, n)
    return spread <= _INVARIANT_TOL * scale


def _within_spread(x: np.ndarray, groups: np.ndarray, n: int) -> float:
    """Largest range of ``x`` within a group."""
    hi = np.full(n, -np.inf)
    lo = np.full(n, np.inf)
    np.maximum.at(hi, groups, x)
    np.minimum.at(lo, groups, x)
    return float(np.max(hi - lo))


def _drop_pooled_collinear(X: np.ndarray, names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Regressors kept next to an intercept, with Stata's note for each one dropped."""
    cand = [j for j in range(X.shape[1]) if not _constant(X)[j]]
    kept = [cand[i] for i in _independent(X[:, cand] - X[:, cand].mean(axis=0))]
    notes = [
        f"note: {names[j]} omitted because of collinearity"
        for j in range(X.shape[1])
        if j not in kept
    ]
    return kept, notes


def _within(p: _Panel, cols: Sequence[int] | None = None) -> _Within:
    """Within regression on the columns `cols` that vary within groups.

    Only columns that are not collinear after demeaning are kept (Baltagi 2013, sec. 2.2; Stata
    drops the others with a note). The slopes solve the normal equations of the demeaned
    regressors (K x K, one pass over the rows), as Stata's ``xtreg, fe`` does.
    """
    cols = list(range(p.k)) if cols is None else list(cols)
    Xw_all = p.demeaned(cols)
    inv = _within_constant_cols(p, Xw_all, cols)
    tv = [i for i, j in enumerate(cols) if not inv[j]]
    G_all = Xw_all.T @ Xw_all
    kept = [tv[i] for i in _independent_gram(G_all[np.ix_(tv, tv)])]
    keep = [cols[i] for i in kept]
    Xw = Xw_all if kept == list(range(len(cols))) else np.asfortranarray(Xw_all[:, kept])
    G = G_all[np.ix_(kept, kept)]
    yw = p.yw
    Xy = Xw.T @ yw
    b = np.linalg.solve(G, Xy) if keep else np.zeros(0)
    e = yw - Xw @ b if keep else yw.copy()
    return _Within(keep, Xw, b, e, float(e @ e), G, Xy)


def _within_constant_cols(p: _Panel, Xw: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    """`_within_constant` for the columns ``cols`` of ``p.X`` (``Xw`` holds them demeaned)."""
    out = np.zeros(p.k, dtype=bool)
    for i, j in enumerate(cols):
        x = p.X[:, j]
        scale = max(float(np.abs(x).max()), np.finfo(float).tiny)
        if float(np.abs(Xw[:, i]).max()) > 2 * _INVARIANT_TOL * scale:
            continue
        out[j] = _within_spread(x, p.g, p.n) <= _INVARIANT_TOL * scale
    return out


def _ols(Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS coefficients, residuals and (Z'Z)^-1."""
    bread = np.linalg.inv(Z.T @ Z)
    b = np.linalg.lstsq(Z, y, rcond=None)[0]
    return b, y - Z @ b, bread


def _cluster_vcov(
    Z: np.ndarray, e: np.ndarray, g: np.ndarray, G: int, bread: np.ndarray
) -> np.ndarray:
    """Cluster-robust sandwich (Arellano 1987) with Stata's small-sample factor.

    The factor is G/(G-1) (N-1)/(N-K), K = columns of Z ([U] 20.22; [XT] xtreg, vce(cluster)).
    """
    scores = np.column_stack([np.bincount(g, Z[:, j] * e, minlength=G) for j in range(Z.shape[1])])
    return _cluster_sandwich(scores, Z.shape[0], bread)


def _cluster_sandwich(scores: np.ndarray, N: int, bread: np.ndarray) -> np.ndarray:
    """The sandwich of `_cluster_vcov` from the per-cluster score sums, (G, K)."""
    G, K = scores.shape
    if G < 2:
        raise DataError("cluster-robust standard errors need at least two clusters")
    meat = scores.T @ scores
    return G / (G - 1) * (N - 1) / (N - K) * (bread @ meat @ bread)


def _coef_table(
    b: np.ndarray, V: np.ndarray, names: list[str], df: int | None, level: float
) -> pd.DataFrame:
    # scipy.special's t and normal functions, which scipy.stats' t and norm call, without the
    # 0.3-0.5 s import of scipy.stats in a one-shot process
    from scipy.special import ndtr, ndtri, stdtr, stdtrit

    se = np.sqrt(np.clip(np.diag(V), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = b / se
    q = 0.5 + level / 2
    if df is None:
        crit, p = float(ndtri(q)), 2 * ndtr(-np.abs(stat))
    else:
        crit, p = float(stdtrit(df, q)), 2 * stdtr(df, -np.abs(stat))
    return pd.DataFrame(
        {
            "estimate": b,
            "std_error": se,
            "stat": stat,
            "p_value": p,
            "ci_lower": b - crit * se,
            "ci_upper": b + crit * se,
        },
        index=pd.Index(names, name="name"),
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None where either series is constant (Stata reports '.')."""
    if len(a) < 2 or _flat(a) or _flat(b):
        return None
    ac, bc = a - a.mean(), b - b.mean()
    return float(ac @ bc / math.sqrt(float(ac @ ac) * float(bc @ bc)))


def _flat(a: np.ndarray) -> bool:
    """`_constant` of one column: two reductions, no temporary of its length."""
    lo, hi = float(a.min()), float(a.max())
    return hi - lo <= _INVARIANT_TOL * max(abs(lo), abs(hi), np.finfo(float).tiny)


def _corr2(a: np.ndarray, b: np.ndarray) -> float | None:
    r = _corr(a, b)
    return None if r is None else r * r


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f
