"""Formula + data -> ModelFrame: the columns used, complete rows, y, X, and what was dropped and why.

DataFrames live here and in the I/O layer only; everything downstream sees numpy arrays.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.columns import BLOCK_ROWS, ColumnMatrix, model_columns
from tiers.data.convert import polars_to_pandas
from tiers.data.crossprod import gram, lower_solver
from tiers.data.variables import evaluate_response, expression_variables, response_variables
from tiers.errors import DataError, TiersError
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
    x_columns : ColumnMatrix
        Fixed-effects model matrix, collinear columns removed, held as its columns
        (`tiers.data.columns`): `X` is the dense matrix.
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
    read_notes : tuple of str
        What `tiers.read_data` noted about the file (separator, encoding) and about the columns
        used (kept as text, words read as missing), so that the summary says it.
    """

    formula: Formula
    data: pd.DataFrame
    y: NDArray[np.float64]
    x_columns: ColumnMatrix
    xnames: tuple[str, ...]
    omitted: tuple[str, ...]
    n_dropped: int
    dropped_by_column: dict[str, int]
    input_index: pd.Index | None = None
    rows: NDArray[np.intp] | None = None
    source: str | None = None
    read_notes: tuple[str, ...] = ()

    @property
    def X(self) -> NDArray[np.float64]:
        """The fixed-effects model matrix (nobs, p), built from `x_columns` unless held."""
        return self.x_columns.dense()

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
        return tuple(out) + self.read_notes


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
    if formula.residuals is not None:
        for col in formula.residuals.columns:
            roles.setdefault(col, "a column of the residual structure")
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
    for name in re.findall(r"`([^`]+)`", formula.fixed):  # `1` is a column, not a number
        if name in df.columns:
            roles.setdefault(name, "a predictor")
    for col, role in roles.items():
        if col not in df.columns:
            raise _unknown(col, columns, role)
    try:
        df = _check_columns(df, roles)
        used, n_dropped, dropped_by_column = _complete_rows(df, list(roles))
        if len(used) == 0:
            raise DataError(
                f"no rows left: every row has a missing value in one of {', '.join(roles)}"
            )
        used = plain_text(used)
        column = formula.response_column
        resp = used[column] if column is not None else evaluate_response(formula.response, used)
        y = _response(resp, formula.response)
        X, names = model_columns(formula.fixed, used, what=f"fixed part of {formula.text!r}")
        _check_finite(X, names)
        keep, omitted = independent_columns(X, names)
        if keep != list(range(X.shape[1])):
            X = X.select(keep)
    except TiersError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        # the one place where pandas' and numpy's complaints about odd columns become ours
        kinds = ", ".join(f"{c} ({getattr(df[c], 'dtype', '?')})" for c in roles if c in df.columns)
        raise DataError(
            f"cannot use the data for {formula.text!r} ({type(exc).__name__}: {exc}); check the "
            f"types of the columns it uses: {kinds}"
        ) from exc
    return ModelFrame(
        formula=formula,
        data=used,
        y=y,
        x_columns=X,
        xnames=tuple(names[i] for i in keep),
        omitted=tuple(omitted),
        n_dropped=n_dropped,
        dropped_by_column=dropped_by_column,
        input_index=df.index,
        rows=_used_rows(df, list(roles)) if n_dropped else None,
        source=_source(data),
        read_notes=_read_notes(data, list(roles)),
    )


def _check_columns(df: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    """Refuse used columns tiers cannot read as they are, at the edge, naming the column.

    A column name used twice, complex numbers (the imaginary part would be dropped), dates and
    durations (convert them to numbers in the unit you mean), and a grouping factor whose ids mix
    numbers and text (``1`` and ``"1"`` would print as one label). Text stored as bytes is
    decoded (UTF-8, else Latin-1) so that labels are text.
    """
    names = [str(c) for c in df.columns]
    dtypes = dict(zip(names, df.dtypes, strict=True))
    decoded: dict[str, pd.Series] = {}
    for col, role in roles.items():
        if names.count(col) > 1:
            raise DataError(
                f"the data has {names.count(col)} columns named {col!r} ({role}); rename or drop "
                "the duplicates so the column is unambiguous"
            )
        dtype = dtypes[col] if col in dtypes else df[col].dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            continue  # plain numbers: nothing below applies
        values = df[col]
        if pd.api.types.is_complex_dtype(dtype):
            raise DataError(
                f"column {col!r} ({role}) holds complex numbers; tiers fits real-valued data: "
                "use its real part, modulus or angle explicitly"
            )
        if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
            raise DataError(
                f"column {col!r} ({role}) holds dates or durations (dtype {dtype}); convert it to "
                "numbers in the unit you mean (e.g. .dt.total_seconds() or days since a date)"
            )
        pure = ("string", "integer", "floating", "mixed-integer-float", "boolean", "empty")
        if pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(values) not in pure:
            kinds = {type(v) for v in values.dropna().to_numpy()}
            if bytes in kinds:
                values = values.map(_decode)
                decoded[col] = values
                kinds = {type(v) for v in values.dropna().to_numpy()}
            nested = [k for k in kinds if issubclass(k, (list, tuple, dict, set, np.ndarray))]
            if nested:
                raise DataError(
                    f"column {col!r} ({role}) holds {nested[0].__name__} values, not single "
                    "numbers or labels; expand it into columns or convert each value to text"
                )
            numbers = {k for k in kinds if issubclass(k, (int, float, np.number))}
            if role == "a grouping factor" and numbers and kinds - numbers:
                raise DataError(
                    f"the grouping factor {col!r} mixes numbers and text (e.g. 1 and '1'), which "
                    f"would print as one label; convert it to one type (df[{col!r}].astype(str))"
                )
            if any(issubclass(k, complex) for k in kinds):
                raise DataError(f"column {col!r} ({role}) holds complex numbers; use real values")
    return df.assign(**decoded) if decoded else df


def plain_text(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns of other string dtypes (``string[pyarrow]``, ``string[python]``) as ``str``.

    formulaic codes pandas' default text dtype as a factor but passes the NA-valued string dtypes
    through as numbers, which then fail; one text dtype avoids that.
    """
    default = pd.StringDtype(na_value=np.nan)
    other = [
        c
        for c, dtype in zip(df.columns, df.dtypes, strict=True)
        if isinstance(dtype, pd.StringDtype)
        and dtype != default
        or (isinstance(dtype, pd.ArrowDtype) and "string" in str(dtype))
    ]
    if not other:
        return df
    return df.assign(**{c: df[c].astype(object).where(df[c].notna(), None) for c in other})


def _decode(value: Any) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _read_notes(data: Any, used: list[str]) -> tuple[str, ...]:
    """`tiers.read_data`'s notes (``attrs["notes"]``) on the file or on a column the model uses.

    A note on a column starts with its name (``"g kept as text: ..."``, ``"g: 3 values read as
    missing ..."``); a note on the file starts with the file's quoted name.
    """
    attrs = getattr(data, "attrs", None)
    notes = attrs.get("notes") if isinstance(attrs, dict) else None
    if not isinstance(notes, list):
        return ()
    source = attrs.get("source") if isinstance(attrs, dict) else None
    heads = tuple(f"{c} " for c in used) + tuple(f"{c}:" for c in used)
    keep = [
        str(n)
        for n in notes
        if str(n).startswith(heads) or (source and str(n).startswith(repr(str(source))))
    ]
    return tuple(keep)


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
    series = {c: df[c] for c in cols}
    # the columns themselves, not a copy: ``df[cols]`` copies every column that shares a block
    # with another (all the integer ids of a Parquet file), 250 MB at 8 million rows; from their
    # arrays with df's index, as they all have it (no alignment: 70 us against 200 us)
    used = pd.DataFrame(
        {c: s.array for c, s in series.items()}, index=df.index, copy=False
    ).__finalize__(df)  # and its attrs
    # numpy integer and bool columns cannot hold a missing value: no n-row isna mask for them
    masks = {c: _missing(s) for c, s in series.items() if _may_be_missing(s)}
    dropped_by_column = {c: int(np.count_nonzero(masks[c])) if c in masks else 0 for c in cols}
    if not any(dropped_by_column.values()):
        return (
            used.reset_index(drop=True) if not isinstance(used.index, pd.RangeIndex) else used,
            0,
            dropped_by_column,
        )
    incomplete = np.logical_or.reduce(list(masks.values()))
    used = used.loc[~incomplete].reset_index(drop=True)
    return used, int(incomplete.sum()), dropped_by_column


def _missing(values: pd.Series) -> NDArray[np.bool_]:
    """The rows where ``values`` is missing (``isna``; for numpy floats ``isnan``, 2x faster)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "f":
        return np.isnan(values.to_numpy())
    return np.asarray(values.isna().to_numpy(), dtype=bool)


def _may_be_missing(values: pd.Series) -> bool:
    """False for numpy integer and bool columns, which have no missing value."""
    return not (isinstance(values.dtype, np.dtype) and values.dtype.kind in "iub")


def _response(resp: pd.Series, name: str) -> NDArray[np.float64]:
    if pd.api.types.is_bool_dtype(resp):
        resp = resp.astype(np.float64)
    if not pd.api.types.is_numeric_dtype(resp):
        bad = resp[pd.to_numeric(resp, errors="coerce").isna()]
        if not len(bad):
            raise DataError(
                f"the response {name!r} holds numbers stored as text (dtype {resp.dtype}, e.g. "
                f"{resp.iloc[0]!r}); convert it with pd.to_numeric before fitting"
            )
        example = bad.iloc[0]
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


def _check_finite(X: ColumnMatrix | NDArray[np.float64], names: list[str]) -> None:
    """A non-finite entry in X comes from the data (inf) or a transform (log of a negative).

    Column by column in blocks of rows: integer and boolean columns are finite by type.
    """
    X = X if isinstance(X, ColumnMatrix) else ColumnMatrix.of_array(X)
    n = X.shape[0]
    for j, name in enumerate(names):
        col = X.column(j)
        if col.dtype.kind in "iub" or all(
            np.isfinite(col[a : a + BLOCK_ROWS]).all() for a in range(0, n, BLOCK_ROWS)
        ):
            continue
        rows = np.flatnonzero(~np.isfinite(col))
        raise DataError(
            f"the term {name!r} has {rows.size:,} non-finite values (infinite, or NaN from a "
            f"transformation such as log of a non-positive number), first at row {int(rows[0])}; "
            "remove or recode those rows before fitting"
        )


def model_matrix(
    rhs: str, data: pd.DataFrame, *, what: str
) -> tuple[NDArray[np.float64], list[str]]:
    """A dense model matrix for a formulaic right-hand side, with lme4-style column names."""
    X, names = model_columns(rhs, data, what=what)
    return X.dense(), names


def independent_columns(
    X: ColumnMatrix | NDArray[np.float64], names: list[str]
) -> tuple[list[int], list[str]]:
    """Keep a maximal set of linearly independent columns, preferring earlier ones.

    Greedy in the original order, as Stata drops the later of two collinear columns: column ``j``
    is kept when its residual after projection on the kept columns has norm above
    `COLLINEARITY_TOL` times its own (scaled QR, lme4's rank tolerance). Above `_QR_ROWS` rows the
    same test runs on the cross-product matrix, where the tolerance is squared; exact
    collinearity there leaves a residual of order 1e-15, far below it.
    """
    X = X if isinstance(X, ColumnMatrix) else ColumnMatrix.of_array(X)
    n, p = X.shape
    # the cross-product a block of rows at a time: no n x p copy of columns held as the data's
    xtx_raw = X.cross_product() if n > _QR_ROWS else np.zeros((p, p))
    diag = np.diag(xtx_raw)
    moderate = bool(np.all(np.isfinite(diag) & ((diag == 0) | (diag > 1e-200))))
    if moderate and n > _QR_ROWS:
        # a zero cross-product is a zero column, or one so small that its squares underflow
        moderate = not any(np.any(X.column(int(j))) for j in np.flatnonzero(diag == 0))
    D = np.zeros((0, p))
    if n > _QR_ROWS and moderate:
        # the cross-product of the unscaled columns is safe: no copy of the n-row matrix
        norms = np.sqrt(diag)
    else:
        # scale-free: each column divided by its largest magnitude first, so 1e300 or 1e-300
        # columns neither overflow nor underflow to zero
        D = X.dense()
        top = np.abs(D).max(axis=0) if n else np.zeros(p)
        D = D / np.where(top == 0, 1.0, top)
        norms = np.sqrt(np.einsum("ij,ij->j", D, D))
        xtx_raw = gram(D) if n > _QR_ROWS else np.zeros((p, p))
    keep: list[int] = []
    # one pass, O(n p^2) (issue 19: a QR or solve per column made ~860 dummies 8x slower than lme4)
    if n <= _QR_ROWS:
        # Gram-Schmidt twice (CGS2, as accurate as Householder QR) against the kept columns
        Xs = D / np.where(norms == 0, 1.0, norms)
        Q = np.empty((n, min(n, p)))
        for j in range(p):
            if norms[j] == 0 or len(keep) >= n:  # n kept columns span every column
                continue
            v = Xs[:, j].copy()
            for _ in range(2):
                v -= Q[:, : len(keep)] @ (Q[:, : len(keep)].T @ v)
            r = float(np.linalg.norm(v))
            if r > COLLINEARITY_TOL:
                Q[:, len(keep)] = v / r
                keep.append(j)
    else:
        solve = lower_solver(p)
        scale = np.where(norms == 0, 1.0, norms)
        xtx = xtx_raw / np.outer(scale, scale)
        L = np.zeros((p, p))  # Cholesky factor of the kept columns' cross-product, grown in order
        for j in range(p):
            if norms[j] == 0:
                continue
            k = len(keep)
            w = solve(L[:k, :k], xtx[keep, j]) if k else np.zeros(0)
            resid = xtx[j, j] - float(w @ w)
            if resid > COLLINEARITY_TOL**2 * 100:
                L[k, :k] = w
                L[k, k] = np.sqrt(resid)
                keep.append(j)
    omitted = [names[j] for j in range(p) if j not in keep]
    return keep, omitted
