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

import copy
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.data.frame import as_pandas, model_matrix, plain_text
from tiers.design.design import Design
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


def new_data_matrix(
    prep: Design, rhs: str, data: pd.DataFrame, names: tuple[str, ...], what: str
) -> np.ndarray:
    """Columns ``names`` of the model matrix of ``rhs`` on new data, coded as in the fit.

    Stateful transforms (``center(x)``, ``poly(x, 2)``) keep the state learned on the fit's rows
    (`tiers.design.design.Design.term_spec`), in the fixed part and in random terms alike.
    """
    data = _check_types(prep.frame.data, data, rhs)
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
        # a copy: formulaic updates a spec's encoders from the data it codes, so a bad newdata
        # would otherwise change how every later prediction is coded
        spec = copy.deepcopy(prep.fixed_spec if rhs == prep.formula.fixed else prep.term_spec(rhs))
        na_rows = _check_levels(spec, data, what)
        try:
            with warnings.catch_warnings():
                # levels were checked above; what remains is missing values, made NaN below
                warnings.filterwarnings("ignore", message="Data has categories outside")
                mm = spec.get_model_matrix(data, na_action="ignore")
        except Exception as exc:
            raise DataError(f"cannot build the {what} on newdata: {exc}") from None
        got = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
        M = np.array(mm, dtype=np.float64)
        M[na_rows] = np.nan
    pos = {n: i for i, n in enumerate(got)}
    lost = [n for n in names if n not in pos]
    if lost:
        raise DataError(f"the {what} on newdata lacks the column(s) {', '.join(lost)}")
    return M[:, [pos[n] for n in names]]


def fixed_matrix(res: FitResult, data: pd.DataFrame) -> np.ndarray:
    """The fixed-effects model matrix of ``data``, coded as in the fit (columns ``res.xnames``)."""
    return new_data_matrix(res.design, res.formula.fixed, data, res.xnames, "fixed part")


def _check_types(like: pd.DataFrame, data: pd.DataFrame, rhs: str) -> pd.DataFrame:
    """Newdata's columns of the fit's kinds: numbers where the fit had numbers.

    Text, complex numbers, dates or durations where the fit had numbers are refused (coded
    anyway, they would give a wrong prediction or change the coding); an object column of real
    numbers becomes a numeric one.
    """
    numeric: dict[str, pd.Series] = {}
    for c in like.columns:
        if c not in data.columns or c not in rhs or not pd.api.types.is_numeric_dtype(like[c]):
            continue
        col = data[c]
        if pd.api.types.is_bool_dtype(like[c]) or pd.api.types.is_bool_dtype(col):
            continue
        if (
            not pd.api.types.is_numeric_dtype(col)
            or pd.api.types.is_complex_dtype(col)
            or pd.api.types.is_timedelta64_dtype(col)
        ):
            if pd.api.types.is_object_dtype(col) and col.map(_is_real).all():
                numeric[c] = pd.to_numeric(col)
                continue
            raise DataError(
                f"newdata's column {c!r} has dtype {col.dtype} but holds numbers in the fit "
                f"({like[c].dtype}); give it real numbers (e.g. pd.to_numeric(newdata[{c!r}]))"
            )
    return data.assign(**numeric) if numeric else data


def _is_real(value: object) -> bool:
    return value is None or (
        isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    )


_CALL = re.compile(r"^C\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*[,)]")


def _check_levels(spec: Any, data: pd.DataFrame, what: str) -> np.ndarray:
    """Refuse levels of a fixed-effect factor the fit did not see; mark rows where it is missing.

    Coded by formulaic, an unseen level would become a row of zeros, the reference level's
    prediction: a silent wrong answer. A missing value makes the row's prediction missing (as a
    missing numeric predictor does; ``na_action`` decides whether the row is kept as NaN).
    """
    missing = np.zeros(len(data), dtype=bool)
    for var, (kind, state) in getattr(spec, "encoder_state", {}).items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        match = _CALL.match(var)
        column = var if var in data.columns else match.group(1) if match else None
        if column is None or column not in data.columns:
            continue
        values = data[column]
        na = values.isna().to_numpy()
        missing |= na
        seen = set(state["categories"])
        unseen = [v for v in pd.unique(values[~na]) if v not in seen]
        if unseen:
            shown = ", ".join(repr(v) for v in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
            levels = ", ".join(repr(v) for v in list(state["categories"])[:12])
            raise DataError(
                f"newdata's column {column!r} has level(s) {shown} not seen in the fit, so the "
                f"{what} has no coefficient for them (levels in the fit: {levels}); remove those "
                "rows or map them to a level the model knows"
            )
    return missing


def _key_kind(values: pd.Series) -> str:
    """``number`` or ``text`` (or ``mixed``): how the ids of a column are compared."""
    if pd.api.types.is_bool_dtype(values):
        return "text"
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = pd.Series(values.cat.categories)
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    kinds = {
        "number" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else "text"
        for v in values.dropna()
    }
    return kinds.pop() if len(kinds) == 1 else ("text" if not kinds else "mixed")


def _id_keys(values: pd.Series, kind: str) -> np.ndarray:
    """Ids as comparable keys: numbers by value (3, 3.0 and Int64 3 agree), text as text."""
    out = np.empty(len(values), dtype=object)
    na = values.isna().to_numpy()
    vals = values.to_numpy(dtype=object)
    for i, v in enumerate(vals):
        if na[i]:
            out[i] = None
        elif kind == "number":
            if isinstance(v, (int, np.integer)):
                out[i] = int(v)
            else:  # an integral float is its (exact) integer
                f = float(v)
                out[i] = int(f) if f.is_integer() else f
        else:
            out[i] = str(v)
    return out


def _columns(t) -> list[str]:
    cols = list(t.factor.columns)
    if len(cols) > 1 and t.factor.name == ":".join(reversed(cols)):
        cols = cols[::-1]
    return cols


def _codes(t, data: pd.DataFrame, like: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The fit's group of each new row (-1 when not seen), and the rows' labels for messages.

    Ids are matched by value: numbers with numbers whatever their dtype (3.0 in the fit is 3 in
    newdata), text with text. A column that holds numbers in the fit and text in newdata (or the
    reverse) is refused: ``"007"`` and ``7`` need not be one group, and guessing would be silent.
    """
    cols = _columns(t)
    first = np.unique(np.asarray(t.factor.codes), return_index=True)[1]
    fit_parts, new_parts = [], []
    for c in cols:
        if c not in data.columns:
            raise DataError(f"newdata has no column {c!r}, a grouping factor of the model")
        fit_kind, new_kind = _key_kind(like[c]), _key_kind(data[c])
        if "mixed" in (fit_kind, new_kind) or (fit_kind != new_kind and data[c].notna().any()):
            raise DataError(
                f"the grouping factor column {c!r} holds {fit_kind} ids in the fit and "
                f"{new_kind} ids in newdata; ids are matched by value, so give newdata's "
                f"{c!r} the fit's type (e.g. newdata[{c!r}].astype(...))"
            )
        fit_parts.append(_id_keys(like[c].iloc[first], fit_kind))
        new_parts.append(_id_keys(data[c], fit_kind))
    lookup = {key: i for i, key in enumerate(zip(*fit_parts, strict=True))}
    keys = list(zip(*new_parts, strict=True))
    codes = np.array(
        [-1 if any(k is None for k in key) else lookup.get(key, -1) for key in keys],
        dtype=np.int64,
    )
    labels = np.array([":".join(map(str, key)) for key in keys], dtype=object)
    return codes, labels


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

    Levels of a fixed-effect factor not seen in the fit are a DataError naming the column and
    the levels (their coefficient is unknown; coding them as the reference level would be a
    silent wrong answer); a missing level makes the row's prediction missing. Grouping-factor ids
    are matched by value: numbers with numbers whatever their dtype (3.0 in the fit is 3 in
    newdata), text with text; numbers in one and text in the other is a DataError, as ``"007"``
    and ``7`` need not be one group. A missing id predicts at the population mean (as an unseen
    one does with ``new_levels="population"``).
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
        data = plain_text(as_pandas(newdata))
        X = fixed_matrix(res, data)
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
            return new_data_matrix(
                res.design, term.expr, data, t.znames, f"random-effects term for {t.name}"
            )
        except DataError as exc:
            error = exc
    raise error or DataError(f"no formula term for the random effects of {t.name}")
