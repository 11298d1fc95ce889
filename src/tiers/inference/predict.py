"""Random-effect tables, predictions and prediction intervals.

DataFrames at the edges; the numbers come from the engine's `conditional_modes`.

Prediction interval for a new observation with fixed-effects row ``x`` and random-effects rows
``z_t`` (one per term) at ``level``: ``mean +- z_{(1+level)/2} sqrt(v)`` with

    v = x' Var(beta_hat) x + sum_t z_t' C_t z_t + sigma^2,

where ``C_t`` is the conditional covariance of the group's effects given the data
(``sigma^2 T (Lambda'Z'Z Lambda + I)^-1 T'``, lme4's ``condVar``) for a group seen in the fit, and
the full random-effect covariance ``sigma^2 T_t T_t'`` for a group not seen (or with
``re="exclude"``). The covariances between the estimates of different terms' effects and with
beta_hat are left out (as merTools' ``predictInterval`` does), which makes the interval slightly
conservative or liberal depending on their signs; sigma, theta and their uncertainty are taken as
known. Normal quantiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tiers.data.frame import as_pandas, model_matrix
from tiers.errors import DataError
from tiers.options import check_level, check_option
from tiers.results.result import FitResult

RE_OPTIONS: tuple[str, ...] = ("include", "exclude")
NEW_LEVELS: tuple[str, ...] = ("population", "error")
NA_ACTIONS: tuple[str, ...] = ("omit", "exclude")


# ---------------------------------------------------------------------------- random effects --


def ranef_frames(res: FitResult, *, cond_var: bool = True) -> dict[str, pd.DataFrame]:
    """Per grouping factor, the conditional modes (and ``<effect>_sd`` columns) by level label."""
    prep = res.design
    modes = res.conditional_modes(cond_var=cond_var)
    out: dict[str, pd.DataFrame] = {}
    for t, m in zip(prep.terms, modes, strict=True):
        labels = pd.Index(t.factor.labels(prep.frame.data), name=t.name)
        cols: dict[str, Any] = {z: m.b[:, j] for j, z in enumerate(t.znames)}
        if cond_var and m.cov is not None:
            for j, z in enumerate(t.znames):
                cols[f"{z}_sd"] = np.sqrt(np.clip(m.cov[:, j, j], 0.0, None))
        df = pd.DataFrame(cols, index=labels)
        if t.name in out:  # two terms on one factor, e.g. (1 | g) + (0 + x | g)
            df = out[t.name].join(df, rsuffix=".1")
        out[t.name] = df
    if cond_var:
        for name, df in out.items():
            effects = [c for c in df.columns if not c.endswith("_sd")]
            out[name] = df[effects + [f"{c}_sd" for c in effects if f"{c}_sd" in df.columns]]
    return out


def caterpillar(
    res: FitResult, group: str, term: str = "(Intercept)", level: float = 0.95
) -> pd.DataFrame:
    """Conditional modes of one effect with normal intervals from the conditional SDs.

    Sorted by mode; columns ``level, mode, lower, upper``.
    """
    check_level(level)
    frames = ranef_frames(res, cond_var=True)
    if group not in frames:
        raise ValueError(f"group must be one of {', '.join(frames)}; got {group!r}")
    df = frames[group]
    effects = [c for c in df.columns if not c.endswith("_sd")]
    if term not in effects:
        raise ValueError(
            f"term must be one of the effects of {group}: {', '.join(effects)}; got {term!r}"
        )
    q = float(stats.norm.ppf(0.5 + level / 2.0))
    mode = df[term].to_numpy()
    sd = df[f"{term}_sd"].to_numpy()
    out = pd.DataFrame(
        {
            "level": df.index.astype(str),
            "mode": mode,
            "lower": mode - q * sd,
            "upper": mode + q * sd,
        }
    )
    return out.sort_values("mode", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------- new data --


def _matrix(res: FitResult, rhs: str, data: pd.DataFrame, names: tuple[str, ...], what: str):
    """Columns ``names`` of the model matrix of ``rhs`` on new data, coded as in the fit."""
    prep = res.design
    terms = [t.strip() for t in rhs.split("+")]
    plain = [t for t in terms if t not in ("0", "1")]
    if all(t.isidentifier() for t in plain):
        missing = [t for t in plain if t not in data.columns]
        if missing:
            raise DataError(
                f"newdata has no column {missing[0]!r}, needed by the {what} (columns: "
                f"{', '.join(map(str, data.columns[:12]))})"
            )
    if all(t in data.columns and pd.api.types.is_numeric_dtype(data[t]) for t in plain) and all(
        pd.api.types.is_numeric_dtype(prep.frame.data[t]) for t in plain if t in prep.frame.data
    ):
        M, got = model_matrix(rhs, data, what=what)
    else:
        if rhs == prep.formula.fixed:
            spec = prep.fixed_spec
        else:
            from formulaic import model_matrix as fmm

            spec = fmm(rhs, prep.frame.data, na_action="ignore").model_spec
        try:
            mm = spec.get_model_matrix(data, na_action="ignore")
        except Exception as exc:
            raise DataError(f"cannot build the {what} on newdata: {exc}") from None
        got = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
        M = np.asarray(mm, dtype=np.float64)
    pos = {n: i for i, n in enumerate(got)}
    lost = [n for n in names if n not in pos]
    if lost:
        raise DataError(f"the {what} on newdata lacks the column(s) {', '.join(lost)}")
    return M[:, [pos[n] for n in names]]


def _keys(data: pd.DataFrame, t, like: pd.DataFrame) -> np.ndarray:
    """Group labels of new rows as `GroupingFactor.labels` writes them.

    As lme4's ``a:A`` for ``cask:batch``, with ids cast to the fit's types.
    """
    cols = list(t.factor.columns)
    if len(cols) > 1 and t.factor.name == ":".join(reversed(cols)):
        cols = cols[::-1]
    parts = []
    for c in cols:
        if c not in data.columns:
            raise DataError(f"newdata has no column {c!r}, a grouping factor of the model")
        col = data[c]
        ref = like[c]
        if pd.api.types.is_integer_dtype(ref) and pd.api.types.is_float_dtype(col):
            vals = col.to_numpy()
            whole = np.isfinite(vals) & (vals == np.round(vals))
            col = pd.Series(
                np.where(whole, np.nan_to_num(vals).astype(np.int64).astype(str), vals.astype(str))
            )
        parts.append(col.to_numpy().astype(str))
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, ":"), p)
    return out


def _codes(t, data: pd.DataFrame, like: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    labels = t.factor.labels(like)
    lookup = {lab: i for i, lab in enumerate(labels)}
    keys = _keys(data, t, like)
    return np.array([lookup.get(k, -1) for k in keys], dtype=np.int64), keys


def predict(
    res: FitResult,
    newdata: Any = None,
    *,
    re: str = "include",
    new_levels: str = "population",
    interval: bool = False,
    level: float = 0.95,
    na_action: str = "omit",
) -> pd.DataFrame:
    """Predictions (see `tiers.LmmResult.predict`), indexed as the rows they are for.

    Without ``newdata``: the rows used in the fit, by the input's labels; ``na_action="exclude"``
    adds the rows dropped for missing values as NaN, in the input's order (lme4's ``na.exclude``).
    With ``newdata``: its rows and index; ``"omit"`` leaves out the rows whose prediction is
    missing (a missing predictor), ``"exclude"`` keeps them as NaN.
    """
    check_option(re, RE_OPTIONS, "re")
    check_option(new_levels, NEW_LEVELS, "new_levels")
    check_option(na_action, NA_ACTIONS, "na_action")
    check_level(level)
    prep = res.design
    like = prep.frame.data
    if newdata is None:
        data = like
        X = prep.frame.X
        Zs = [t.Z for t in prep.terms]
        codes = [t.codes for t in prep.terms]
    else:
        data = as_pandas(newdata)
        X = _matrix(res, res.formula.fixed, data, res.xnames, "fixed part")
        Zs, codes = [], []
        for t in prep.terms:
            Z = np.ones((len(data), 1)) if t.intercept_only else _term_matrix(res, t, data)
            c, keys = _codes(t, data, like)
            if re == "include" and new_levels == "error" and np.any(c < 0):
                bad = list(dict.fromkeys(str(k) for k in keys[c < 0]))
                raise DataError(
                    f"newdata has level(s) of the grouping factor {t.name!r} not seen in the fit: "
                    f"{', '.join(repr(b) for b in bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                    "use new_levels='population' to predict them at the population mean"
                )
            Zs.append(Z)
            codes.append(c)
    beta = np.asarray(res.beta)
    mean = X @ beta
    modes = res.conditional_modes(cond_var=interval) if re == "include" else None
    var = np.zeros(len(data))
    if interval:
        var += np.einsum("ij,jk,ik->i", X, res.vcov.to_numpy(), X) + res.sigma**2
    at = 0
    theta = np.asarray(res.theta)
    for k, t in enumerate(prep.terms):
        th = theta[at : at + t.cov.n_theta]
        at += t.cov.n_theta
        seen = codes[k] >= 0 if modes is not None else np.zeros(len(data), dtype=bool)
        if modes is not None:
            b = modes[k].b[np.where(seen, codes[k], 0)]
            mean += np.where(seen, np.einsum("ij,ij->i", Zs[k], b), 0.0)
        if interval:
            full = res.sigma**2 * t.cov.covariance(th)
            v_new = np.einsum("ij,jk,ik->i", Zs[k], full, Zs[k])
            cov = modes[k].cov if modes is not None else None
            if cov is not None:
                C = cov[np.where(seen, codes[k], 0)]
                v_seen = np.einsum("ij,ijk,ik->i", Zs[k], C, Zs[k])
                var += np.where(seen, v_seen, v_new)
            else:
                var += v_new
    index = prep.frame.index if newdata is None else data.index
    out = pd.DataFrame({"mean": mean}, index=index)
    if interval:
        q = float(stats.norm.ppf(0.5 + level / 2.0))
        half = q * np.sqrt(var)
        out["lower"] = mean - half
        out["upper"] = mean + half
    if newdata is None:
        out = fitted_rows(res, out, na_action)
    elif na_action == "omit":
        out = out.loc[out["mean"].notna().to_numpy()]
    if interval:
        out.attrs["level"] = level
    out.attrs["re"] = re
    out.attrs["na_action"] = na_action
    return out


def fitted_rows(res: FitResult, values: pd.DataFrame, na_action: str) -> pd.DataFrame:
    """Values of the rows used (indexed by the input's labels), as ``na_action`` asks.

    ``"omit"``: the rows used only; ``"exclude"``: every input row, NaN for those dropped for
    missing values, in the input's order.
    """
    check_option(na_action, NA_ACTIONS, "na_action")
    frame = res.design.frame
    if na_action == "omit" or frame.rows is None or frame.input_index is None:
        return values
    full = np.full((len(frame.input_index), values.shape[1]), np.nan)
    full[frame.rows] = values.to_numpy(dtype=np.float64)
    return pd.DataFrame(full, index=frame.input_index, columns=values.columns)


def residuals(res: FitResult, na_action: str = "omit") -> pd.Series:
    """Response minus fitted values (X beta + Z b) of the rows used, by the input's labels."""
    fit = predict(res, re="include")["mean"].to_numpy()
    out = pd.DataFrame({"residual": np.asarray(res.y) - fit}, index=res.design.frame.index)
    return fitted_rows(res, out, na_action)["residual"]


def _term_matrix(res: FitResult, t, data: pd.DataFrame) -> np.ndarray:
    """A term's effects on new data (the formula term on the same factor that has its effects)."""
    candidates = [term for term in res.formula.random if term.name == t.name]
    error: DataError | None = None
    for term in candidates:
        try:
            return _matrix(res, term.expr, data, t.znames, f"random-effects term for {t.name}")
        except DataError as exc:
            error = exc
    raise error or DataError(f"no formula term for the random effects of {t.name}")
