"""A GLMM's response parts on the model frame's rows: successes, trials and the offset.

The mixed-model frame (`tiers.data.frame.build_frame`) reads the successes (or the 0/1 outcome, or
the count) as its response; the trials (lme4's second ``cbind`` column added to the first, a
``trials=`` column, Stata's ``binomial(var)``) and the offset (``offset(expr)`` terms, Stata's
``offset(var)`` and ``exposure(var)``) are evaluated here on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.data.frame import ModelFrame, as_pandas, model_matrix
from tiers.errors import DataError
from tiers.formula.glm import GlmFormula
from tiers.formula.rspell import translate

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GlmResponse:
    """Successes, trials and offset of the rows used.

    Attributes
    ----------
    successes : array (n,)
        The outcome (0/1), the successes, or the count.
    trials : array (n,)
        Binomial trials (ones for a 0/1 outcome and for counts).
    offset : array (n,)
        Added to the linear predictor (zeros when there is none).
    trials_name : str or None
        How the trials were given (for messages), None for a 0/1 outcome or counts.
    offset_names : tuple of str
        The offset's expressions (``log(exposure)``).
    """

    successes: FloatArray
    trials: FloatArray
    offset: FloatArray
    trials_name: str | None
    offset_names: tuple[str, ...]


def _rows(frame: ModelFrame, data: Any) -> pd.DataFrame:
    df = as_pandas(data)
    if frame.rows is not None:
        df = df.iloc[frame.rows]
    return df.reset_index(drop=True)


def evaluate(expr: str, df: pd.DataFrame, what: str) -> FloatArray:
    """The values of a column or an expression of columns (R spellings read), all finite."""
    if expr in df.columns:
        col = df[expr]
        if not pd.api.types.is_numeric_dtype(col):
            raise DataError(f"the {what} {expr!r} is not numeric (dtype {col.dtype})")
        values = col.to_numpy(dtype=np.float64)
    else:
        code, _ = translate(expr, expr, 0)
        X, _names = model_matrix(f"0 + I({code})", df, what=what)
        values = X[:, 0]
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"the {what} {expr!r} is missing or not finite in {int(bad.sum()):,} of the rows used, "
            f"first at row {int(np.argmax(bad))}; remove those rows before fitting"
        )
    return np.ascontiguousarray(values)


def glm_response(
    frame: ModelFrame, data: Any, spec: GlmFormula, *, trials: str | None = None
) -> GlmResponse:
    """The successes, trials and offset of the frame's rows.

    Parameters
    ----------
    frame : ModelFrame
        Built from ``spec.base``; its response is the successes.
    data : DataFrame
        The data the frame was built from (the trials and offset columns are read from it).
    spec : GlmFormula
    trials : str, optional
        A column holding each row's number of trials (the response is then the successes, or a
        proportion when every value lies in [0, 1] and some are fractional).

    Raises
    ------
    DataError
        Both ways of giving trials, an unknown column, a missing or non-finite value, a
        non-positive exposure.
    """
    given = [g for g in (spec.failures, spec.trials, trials) if g is not None]
    if len(given) > 1:
        raise DataError(
            "the binomial trials are given twice: use one of cbind(successes, failures), "
            "trials='column' or Stata's binomial(column)"
        )
    df = _rows(frame, data)
    y = frame.y
    n = y.size
    trials_name = None
    wt = np.ones(n)
    if spec.failures is not None:
        wt = y + evaluate(spec.failures, df, "failures (second column of cbind)")
        trials_name = f"{frame.formula.response} + {spec.failures}"
    elif given:
        trials_name = given[0]
        if trials_name not in df.columns:
            raise DataError(f"the trials column {trials_name!r} is not in the data")
        wt = evaluate(trials_name, df, "trials column")
        frac = (y > 0) & (y < 1)
        if np.any(frac) and np.all((y >= 0) & (y <= 1)):
            y = y * wt  # a proportion with its trials: successes are proportion x trials
    offset = np.zeros(n)
    names = list(spec.offsets)
    for expr in spec.offsets:
        offset += evaluate(expr, df, "offset")
    if spec.exposure is not None:
        exposure = evaluate(spec.exposure, df, "exposure")
        if np.any(exposure <= 0):
            bad = exposure <= 0
            raise DataError(
                f"the exposure {spec.exposure!r} must be positive; {int(bad.sum()):,} rows are "
                f"not, first at row {int(np.argmax(bad))} (value {exposure[np.argmax(bad)]:g})"
            )
        offset += np.log(exposure)
        names.append(f"log({spec.exposure})")
    return GlmResponse(np.ascontiguousarray(y), wt, offset, trials_name, tuple(names))
