"""The fixed-effects model matrix held as its columns, assembled a block of rows at a time.

A fixed part that is a plain sum of columns (``y ~ x1 + x2``, the large-data case; InstEval's
``y ~ service``) needs no ``n x p`` float64 copy: a numeric column is the data frame's own array,
the intercept a constant, a factor's treatment dummies boolean arrays of one byte a row
(`model_columns` codes a right-hand side; `plain_columns` codes a plain sum as formulaic does,
without importing formulaic, 0.09 s of a fresh process). Whatever reads X a chunk at a time (the
nested engine's sufficient statistics, the design's checks) asks for `ColumnMatrix.rows`; whatever
needs the whole matrix (other engines, fitted values, residuals, predictions) asks for
`ColumnMatrix.dense`, which builds it and shares it while someone holds it. At 8 million rows and
two columns that is 128 MB not kept through the fit.

The frame's arrays are read-only views (pandas' copy-on-write): a later change to the caller's
DataFrame copies its own column and leaves these as they were, so X rebuilt later is X at the fit.
"""

from __future__ import annotations

import keyword
import weakref
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.crossprod import gram
from tiers.errors import FormulaError

FloatArray = NDArray[np.float64]

#: Rows per block of `ColumnMatrix.cross_product` and the column checks (8 MB of float64 for p = 1).
BLOCK_ROWS = 1 << 20

#: The terms that set the intercept in a plain sum; the last one written wins, as in formulaic
#: (``0 + 1 + x`` has an intercept, ``1 + 0 + x`` none).
_INTERCEPT_TERMS = {"1": True, "0": False, "-1": False}


class ColumnMatrix:
    """An ``n x p`` float64 matrix given by its columns: 1-D arrays, or None for a column of ones.

    Parameters
    ----------
    columns : tuple of (array or None)
        Column ``j`` of X: a 1-D numeric array of ``n`` values (read as float64), or None for the
        intercept's ones.
    n : int
        Rows.
    held : array, optional
        The dense matrix itself, when it exists anyway (formulaic's, a replicate's): `dense`
        returns it and the columns are its views.
    """

    __slots__ = ("columns", "n", "_held", "_cache", "__weakref__")

    def __init__(
        self,
        columns: tuple[NDArray[Any] | None, ...],
        n: int,
        held: FloatArray | None = None,
    ) -> None:
        self.columns = columns
        self.n = n
        self._held = held
        self._cache: weakref.ref[FloatArray] | None = None

    @classmethod
    def of_array(cls, X: FloatArray) -> ColumnMatrix:
        """A matrix that exists already, held as it is."""
        X = np.asarray(X, dtype=np.float64)
        return cls(tuple(X[:, j] for j in range(X.shape[1])), X.shape[0], held=X)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, p)``."""
        return self.n, len(self.columns)

    @property
    def held(self) -> bool:
        """Whether the dense matrix is kept (not rebuilt on each `dense`)."""
        return self._held is not None

    def column(self, j: int) -> NDArray[Any]:
        """Column ``j`` in its own dtype (no float copy); the intercept as ones broadcast."""
        col = self.columns[j]
        if col is None:
            return np.broadcast_to(np.ones(1), (self.n,))
        return col

    def rows(self, a: int, b: int, out: FloatArray | None = None) -> FloatArray:
        """Rows ``a:b`` as a dense float64 block (written into ``out`` when given)."""
        block = np.empty((b - a, len(self.columns))) if out is None else out
        if self._held is not None:
            block[...] = self._held[a:b]
            return block
        for j, col in enumerate(self.columns):
            block[:, j] = 1.0 if col is None else col[a:b]
        return block

    def dense(self) -> FloatArray:
        """The whole matrix; built from the columns unless held or still held by a caller."""
        if self._held is not None:
            return self._held
        X = None if self._cache is None else self._cache()
        if X is None:
            X = self.rows(0, self.n)
            # shared while a caller keeps it (an engine, a loop over replicates), then freed
            self._cache = weakref.ref(X)
        return X

    def select(self, keep: list[int]) -> ColumnMatrix:
        """The columns ``keep``, in that order."""
        if self._held is not None:
            return ColumnMatrix.of_array(np.ascontiguousarray(self._held[:, keep]))
        return ColumnMatrix(tuple(self.columns[j] for j in keep), self.n)

    def cross_product(self) -> FloatArray:
        """``X'X``, a block of rows at a time (no ``n x p`` copy)."""
        p = len(self.columns)
        if self._held is not None:
            return gram(self._held)
        out = np.zeros((p, p))
        step = max(1, BLOCK_ROWS // max(p, 1))
        buf = np.empty((min(step, self.n), p))
        for a in range(0, self.n, step):
            b = min(self.n, a + step)
            block = self.rows(a, b, buf[: b - a])
            out += gram(block)
        return out

    def __getstate__(self) -> dict[str, Any]:
        # the weak reference is a cache and cannot be pickled
        return {"columns": self.columns, "n": self.n, "held": self._held}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.columns, self.n, self._held = state["columns"], state["n"], state["held"]
        self._cache = None


def model_columns(rhs: str, data: pd.DataFrame, *, what: str) -> tuple[ColumnMatrix, list[str]]:
    """The model matrix of a formulaic right-hand side, held as columns, with lme4-style names.

    A plain sum of columns (the common case, and the large-data case) keeps the data's own numeric
    arrays and codes factors as boolean dummies (`plain_columns`); anything else goes through
    formulaic.
    """
    plain = plain_columns(rhs, data)
    if plain is not None:
        columns, names = plain
        return ColumnMatrix(tuple(columns), len(data)), names
    from formulaic import model_matrix as fmm

    try:
        mm = fmm(rhs, data, na_action="ignore")
    except Exception as exc:
        raise FormulaError(f"cannot build the {what} ({rhs!r}): {exc}") from None
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
    return ColumnMatrix.of_array(np.asarray(mm, dtype=np.float64)), names


def plain_columns(
    rhs: str, data: pd.DataFrame
) -> tuple[list[NDArray[Any] | None], list[str]] | None:
    """The columns and names formulaic gives a plain sum of columns, or None for any other ``rhs``.

    ``rhs`` is terms joined by ``+``: ``0``, ``1`` or ``-1`` (the last one decides the intercept),
    and column names, each once (a repeat is dropped, as formulaic drops it). A numeric or boolean
    column is its own array. A factor (text, object or Categorical column: what formulaic's pandas
    materializer codes as categorical) has formulaic's levels (``astype("category")``: the sorted
    values of text, a Categorical's categories in their order, unused and ordered ones included)
    and treatment coding: ``g[T.level]`` for each level but the first, or ``g[level]`` for every
    level in the first factor of a model without an intercept, which then spans it. Missing values
    code as rows of zeros, as in formulaic. A factor named in backticks, or with no levels, or a
    column of another kind is left to formulaic (None).
    """
    terms = [t.strip() for t in rhs.split("+")]
    intercept = True
    used: dict[str, pd.Series] = {}
    for term in terms:
        if term in _INTERCEPT_TERMS:
            intercept = _INTERCEPT_TERMS[term]
            continue
        # a backticked column name (`1`, `my x`) is that column, never the intercept
        quoted = len(term) > 2 and term[0] == term[-1] == "`"
        name = term[1:-1] if quoted else term
        if name not in data.columns:
            return None
        values = data[name]
        if not isinstance(values, pd.Series):  # a name the frame holds twice
            return None
        if not pd.api.types.is_numeric_dtype(values) and (
            quoted or not name.isidentifier() or keyword.iskeyword(name)
        ):
            return None  # formulaic's name of such a factor's columns is its own affair
        used.setdefault(name, values)
    names = ["(Intercept)"] if intercept else []
    columns: list[NDArray[Any] | None] = [None] * intercept
    spanned = intercept
    for name, values in used.items():
        if pd.api.types.is_numeric_dtype(values):
            names.append(name)
            columns.append(_numeric(values))
            continue
        if not (values.dtype in ("object", "str") or isinstance(values.dtype, pd.CategoricalDtype)):
            return None  # formulaic reads it as numbers (and may refuse it): its own message
        coded = _treatment(values, reduced=spanned)
        if coded is None:
            return None
        dummies, levels = coded
        pattern = "{}[T.{}]" if spanned else "{}[{}]"
        names += [pattern.format(name, level) for level in levels]
        columns += dummies
        spanned = True
    return columns, names


def _treatment(
    values: pd.Series, *, reduced: bool
) -> tuple[list[NDArray[np.bool_]], list[Hashable]] | None:
    """A factor's dummy columns (boolean, one a level kept) and those levels; None with no levels.

    The levels are formulaic's (`encode_contrasts`: ``astype("category")``); ``reduced`` leaves
    out the first, the reference of treatment contrasts.
    """
    category = values.astype("category")
    levels = list(category.cat.categories)
    if not levels:
        return None
    codes = category.cat.codes.to_numpy()
    first = int(reduced)
    kept = levels[first:]
    n = codes.size
    dummies = np.zeros((len(kept), n), dtype=np.bool_)
    # one scatter a block of rows: the reference level (code 0 when reduced) and missing values
    # (code -1) fall below 0 and set nothing, so their rows are zeros
    for a in range(0, n, BLOCK_ROWS):
        shifted = codes[a : a + BLOCK_ROWS] - first
        rows = np.flatnonzero(shifted >= 0)
        dummies[shifted[rows], a + rows] = True
    return list(dummies), kept


def _numeric(values: pd.Series) -> NDArray[Any]:
    """A numeric column's values as a numpy array of a numpy numeric dtype (a view when it is one)."""
    arr = values.to_numpy()
    return arr if arr.dtype.kind in "iufb" else values.to_numpy(dtype=np.float64)
