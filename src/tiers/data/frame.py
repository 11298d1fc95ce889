"""Formula + data -> ModelFrame: the columns used, complete rows, y, X, and what was dropped and why.

DataFrames live here and in the I/O layer only; everything downstream sees numpy arrays.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.convert import polars_to_pandas
from tiers.data.variables import evaluate_response, expression_variables, response_variables
from tiers.errors import DataError, FormulaError
from tiers.formula.types import Formula

#: Columns with |R_jj| below this (relative to the largest) in a pivoted QR are collinear, the
#: rank tolerance lme4 uses (1e-7) for its fixed-effects model matrix.
COLLINEARITY_TOL = 1e-7
_QR_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class ModelFrame:
    """The rows and columns a model is fitted to.

    Attributes
    ----------
    formula : Formula
    data : pandas.DataFrame
        Used columns only, complete rows only, index reset to 0..nobs-1.
    y : array (nobs,)
    X : array (nobs, p)
        Fixed-effects model matrix, collinear columns removed.
    xnames : tuple of str
        Column names of X (formulaic's, with ``Intercept`` renamed ``(Intercept)`` as in lme4).
    omitted : tuple of str
        Columns dropped because of collinearity, as Stata's "omitted because of collinearity".
    n_dropped : int
        Rows dropped because a used column was missing.
    dropped_by_column : dict
        Missing values per used column (a row can count in several).
    input_index : pandas.Index or None
        The input's index, all rows (fitted values and residuals carry its labels).
    rows : array or None
        Positions in the input of the rows used; None when every row was used.
    source : str or None
        The data's file name when `tiers.read_data` read it (printed as lme4's ``Data:``).
    """

    formula: Formula
    data: pd.DataFrame
    y: NDArray[np.float64]
    X: NDArray[np.float64]
    xnames: tuple[str, ...]
    omitted: tuple[str, ...]
    n_dropped: int
    dropped_by_column: dict[str, int]
    input_index: pd.Index | None = None
    rows: NDArray[np.intp] | None = None
    source: str | None = None

    @property
    def index(self) -> pd.Index:
        """The input's labels of the rows used (0..nobs-1 when not known)."""
        if self.input_index is None:
            return pd.RangeIndex(self.nobs)
        return self.input_index if self.rows is None else self.input_index[self.rows]

    @property
    def nobs(self) -> int:
        """Number of rows used."""
        return int(self.y.shape[0])

    @property
    def notes(self) -> tuple[str, ...]:
        """Plain-language notes on rows and columns dropped."""
        out = []
        if self.n_dropped:
            detail = ", ".join(f"{c}: {k:,}" for c, k in self.dropped_by_column.items() if k)
            out.append(
                f"{self.n_dropped:,} rows dropped because of missing values ({detail}); "
                f"{self.nobs:,} rows used"
            )
        for name in self.omitted:
            out.append(f"{name} omitted because of collinearity")
        return tuple(out)


def as_pandas(data: Any) -> pd.DataFrame:
    """Accept a pandas or polars DataFrame (or a dict of columns) and return pandas."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas") and type(data).__module__.startswith("polars"):
        return polars_to_pandas(data)
    if isinstance(data, dict):
        return pd.DataFrame(data)
    raise DataError(
        f"data must be a pandas or polars DataFrame, got {type(data).__name__}; read files with "
        "tiers.read_data(path)"
    )


def _unknown(name: str, columns: list[str], role: str) -> DataError:
    close = difflib.get_close_matches(name, columns, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return DataError(f"column {name!r} ({role}) is not in the data{hint} (columns: {shown})")


def _variables(formula: Formula) -> dict[str, str]:
    """Every column the formula reads, with its role (for messages), response first.

    Variables used only inside stateful transforms (``center(x)``, ``poly(x, 2)``) are found too
    (`tiers.data.variables`), so formulaic gets every column it evaluates.
    """
    what = f"{{}} of {formula.text!r}"
    roles: dict[str, str] = {}
    for col in response_variables(
        formula.response, formula.response_column, what=what.format("the response")
    ):
        roles.setdefault(col, "the response")
    for col in formula.group_columns:
        roles.setdefault(col, "a grouping factor")
    predictors = expression_variables(formula.fixed, what=what.format("the fixed part"))
    for term in formula.random:
        if not term.is_intercept_only:
            predictors += expression_variables(
                term.expr, what=what.format(f"the term ({term.expr} | {term.name})")
            )
    for col in sorted(set(predictors)):
        roles.setdefault(col, "a predictor")
    return roles


def build_frame(formula: Formula, data: Any) -> ModelFrame:
    """Select the used columns, drop incomplete rows (counted), build y and X.

    Raises
    ------
    DataError
        Unknown column, non-numeric response, no rows left.
    FormulaError
        The fixed part cannot be built.
    """
    df = as_pandas(data)
    columns = [str(c) for c in df.columns]
    roles = _variables(formula)
    for col, role in roles.items():
        if col not in df.columns:
            raise _unknown(col, columns, role)
    used, n_dropped, dropped_by_column = _complete_rows(df, list(roles))
    if len(used) == 0:
        raise DataError(f"no rows left: every row has a missing value in one of {', '.join(roles)}")
    column = formula.response_column
    resp = used[column] if column is not None else evaluate_response(formula.response, used)
    y = _response(resp, formula.response)
    X, names = model_matrix(formula.fixed, used, what=f"fixed part of {formula.text!r}")
    _check_finite(X, names)
    keep, omitted = independent_columns(X, names)
    X = np.ascontiguousarray(X[:, keep])
    return ModelFrame(
        formula=formula,
        data=used,
        y=y,
        X=X,
        xnames=tuple(names[i] for i in keep),
        omitted=tuple(omitted),
        n_dropped=n_dropped,
        dropped_by_column=dropped_by_column,
        input_index=df.index,
        rows=_used_rows(df, list(roles)) if n_dropped else None,
        source=_source(data),
    )


def _source(data: Any) -> str | None:
    """The data's file name when `tiers.read_data` read it (``attrs["source"]``), else None."""
    attrs = getattr(data, "attrs", None)
    source = attrs.get("source") if isinstance(attrs, dict) else None
    return str(source) if source else None


def _used_rows(df: pd.DataFrame, cols: list[str]) -> NDArray[np.intp]:
    """Positions of the complete rows (those `_complete_rows` keeps), for the input's labels."""
    return np.flatnonzero(df[cols].notna().all(axis=1).to_numpy())


def _complete_rows(df: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """The used columns with incomplete rows removed, and the counts of what was missing."""
    used = df[cols]
    masks = {c: used[c].isna().to_numpy() for c in cols}
    dropped_by_column = {c: int(m.sum()) for c, m in masks.items()}
    if not any(dropped_by_column.values()):
        return (
            used.reset_index(drop=True) if not isinstance(used.index, pd.RangeIndex) else used,
            0,
            dropped_by_column,
        )
    incomplete = np.logical_or.reduce(list(masks.values()))
    used = used.loc[~incomplete].reset_index(drop=True)
    return used, int(incomplete.sum()), dropped_by_column


def _response(resp: pd.Series, name: str) -> NDArray[np.float64]:
    if pd.api.types.is_bool_dtype(resp):
        resp = resp.astype(np.float64)
    if not pd.api.types.is_numeric_dtype(resp):
        bad = resp[pd.to_numeric(resp, errors="coerce").isna()]
        example = bad.iloc[0] if len(bad) else resp.iloc[0]
        raise DataError(
            f"the response {name!r} is not numeric (dtype {resp.dtype}): {len(bad):,} values are "
            f"not numbers, e.g. {example!r}; convert it to numbers (or remove those rows) before fitting"
        )
    y = np.ascontiguousarray(resp.to_numpy(dtype=np.float64))
    if not np.all(np.isfinite(y)):
        raise DataError(
            f"the response {name!r} has {int((~np.isfinite(y)).sum()):,} non-finite values "
            "(infinite, or NaN from a transformation such as log of a non-positive number); "
            "remove or recode them"
        )
    return y


def _check_finite(X: NDArray[np.float64], names: list[str]) -> None:
    """A non-finite entry in X comes from the data (inf) or a transform (log of a negative)."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    j = int(np.flatnonzero(bad.any(axis=0))[0])
    rows = np.flatnonzero(bad[:, j])
    raise DataError(
        f"the term {names[j]!r} has {rows.size:,} non-finite values (infinite, or NaN from a "
        f"transformation such as log of a non-positive number), first at row {int(rows[0])}; "
        "remove or recode those rows before fitting"
    )


def model_matrix(
    rhs: str, data: pd.DataFrame, *, what: str
) -> tuple[NDArray[np.float64], list[str]]:
    """A dense model matrix for a formulaic right-hand side, with lme4-style column names.

    A plain sum of numeric columns (the common case, and the large-data case) is assembled directly;
    anything else goes through formulaic.
    """
    terms = [t.strip() for t in rhs.split("+")]
    intercept = "0" not in terms and "-1" not in rhs.replace(" ", "")
    plain = [t for t in terms if t not in ("0", "1")]
    if all(t in data.columns and pd.api.types.is_numeric_dtype(data[t]) for t in plain) and not (
        set(terms) - set(plain) - {"0", "1"}
    ):
        cols = [np.ones(len(data))] if intercept else []
        cols += [data[t].to_numpy(dtype=np.float64) for t in plain]
        names = (["(Intercept)"] if intercept else []) + plain
        X = np.column_stack(cols) if cols else np.empty((len(data), 0))
        return X, names
    from formulaic import model_matrix as fmm

    try:
        mm = fmm(rhs, data, na_action="ignore")
    except Exception as exc:
        raise FormulaError(f"cannot build the {what} ({rhs!r}): {exc}") from None
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
    return np.asarray(mm, dtype=np.float64), names


def independent_columns(X: NDArray[np.float64], names: list[str]) -> tuple[list[int], list[str]]:
    """Keep a maximal set of linearly independent columns, preferring earlier ones.

    Greedy in the original order, as Stata drops the later of two collinear columns: column ``j``
    is kept when its residual after projection on the kept columns has norm above
    `COLLINEARITY_TOL` times its own (scaled QR, lme4's rank tolerance). Above `_QR_ROWS` rows the
    same test runs on the cross-product matrix, where the tolerance is squared; exact
    collinearity there leaves a residual of order 1e-15, far below it.
    """
    from scipy.linalg import qr

    n, p = X.shape
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    keep: list[int] = []
    if n <= _QR_ROWS:
        Xs = X / np.where(norms == 0, 1.0, norms)
        for j in range(p):
            if norms[j] == 0:
                continue
            r = qr(Xs[:, keep + [j]], mode="r")[0]
            if abs(r[len(keep), len(keep)]) > COLLINEARITY_TOL:
                keep.append(j)
    else:
        scale = np.where(norms == 0, 1.0, norms)
        xtx = (X.T @ X) / np.outer(scale, scale)
        for j in range(p):
            if norms[j] == 0:
                continue
            if keep:
                sub = xtx[np.ix_(keep, keep)]
                b = np.linalg.solve(sub, xtx[keep, j])
                resid = xtx[j, j] - xtx[j, keep] @ b
            else:
                resid = xtx[j, j]
            if resid > COLLINEARITY_TOL**2 * 100:
                keep.append(j)
    omitted = [names[j] for j in range(p) if j not in keep]
    return keep, omitted
