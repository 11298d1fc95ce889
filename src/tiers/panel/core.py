"""Private building blocks of the panel estimators.

Data preparation, within transforms, OLS, cluster-robust covariance, coefficient tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.errors import DataError

# Relative tolerances: a column whose range within every group is below _INVARIANT_TOL times its
# largest magnitude is time-invariant; one whose residual sum of squares, after projecting on the
# columns kept before it, is below _COLLINEAR_TOL times its own sum of squares is collinear.
_INVARIANT_TOL = 1e-12
_COLLINEAR_TOL = 1e-10


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
    first).
    """
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
    notes = [
        f"note: {names[j]} omitted because of collinearity"
        for j in range(X.shape[1])
        if j not in kept
    ]
    return kept, notes


def _within(p: _Panel, cols: Sequence[int] | None = None) -> _Within:
    """Within regression on the columns `cols` that vary within groups.

    Only columns that are not collinear after demeaning are kept (Baltagi 2013, sec. 2.2; Stata
    drops the others with a note).
    """
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


def _cluster_vcov(
    Z: np.ndarray, e: np.ndarray, g: np.ndarray, G: int, bread: np.ndarray
) -> np.ndarray:
    """Cluster-robust sandwich (Arellano 1987) with Stata's small-sample factor.

    The factor is G/(G-1) (N-1)/(N-K), K = columns of Z ([U] 20.22; [XT] xtreg, vce(cluster)).
    """
    if G < 2:
        raise DataError("cluster-robust standard errors need at least two clusters")
    N, K = Z.shape
    scores = np.zeros((G, K))
    np.add.at(scores, g, Z * e[:, None])
    meat = scores.T @ scores
    return G / (G - 1) * (N - 1) / (N - K) * (bread @ meat @ bread)


def _coef_table(
    b: np.ndarray, V: np.ndarray, names: list[str], df: int | None, level: float
) -> pd.DataFrame:
    se = np.sqrt(np.clip(np.diag(V), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = b / se
    dist = stats.norm if df is None else stats.t(df)
    crit = float(dist.ppf(0.5 + level / 2))
    return pd.DataFrame(
        {
            "estimate": b,
            "std_error": se,
            "stat": stat,
            "p_value": 2 * dist.sf(np.abs(stat)),
            "ci_lower": b - crit * se,
            "ci_upper": b + crit * se,
        },
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
