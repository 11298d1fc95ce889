"""A plain sum of columns coded without formulaic (`tiers.data.columns.plain_columns`): the same
names, order, levels, coding and values as formulaic's ``model_matrix``; new data coded as the
fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix as fmm
from hypothesis import given, settings
from hypothesis import strategies as st

import tiers
from tiers.data.columns import ColumnMatrix, model_columns, plain_columns
from tiers.errors import DataError, SingularFitWarning
from tiers.inference.predict import fixed_matrix

LETTERS = ["b", "a", "d", "c", "e"]
KINDS = ["float", "int", "bool", "text", "str", "categorical", "ordered", "int_categorical"]


@st.composite
def columns(draw: st.DrawFn, kind: str, n: int) -> pd.Series:
    """One column of ``kind``: numbers, booleans, or a factor with 1-5 levels (some missing)."""
    if kind == "float":
        return pd.Series(draw(st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n)))
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)))
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    k = draw(st.integers(1, len(LETTERS)))
    pool = LETTERS[:k] + ([None] if draw(st.booleans()) else [])
    # the first row holds a level: a factor with none is left to formulaic (tested below)
    values = [draw(st.sampled_from(LETTERS[:k]))]
    values += draw(st.lists(st.sampled_from(pool), min_size=n - 1, max_size=n - 1))
    if kind == "text":
        return pd.Series(values, dtype=object)
    if kind == "str":
        return pd.Series(values, dtype="str")
    if kind == "int_categorical":
        numbers = [None if v is None else LETTERS.index(v) * 10 for v in values]
        return pd.Series(pd.Categorical(numbers))
    # categories in a drawn order, unused ones included
    extra = draw(st.integers(0, len(LETTERS) - k))
    categories = draw(st.permutations(LETTERS[: k + extra]))
    return pd.Series(pd.Categorical(values, categories=categories, ordered=kind == "ordered"))


@st.composite
def frames_and_sums(draw: st.DrawFn) -> tuple[pd.DataFrame, str]:
    n = draw(st.integers(1, 25))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
    data = pd.DataFrame({f"v{i}": draw(columns(kind, n)) for i, kind in enumerate(kinds)})
    terms = draw(st.lists(st.sampled_from(list(data.columns)), min_size=1, max_size=4))
    for _ in range(draw(st.integers(0, 2))):  # intercept terms anywhere; the last one decides
        at = draw(st.integers(0, len(terms)))
        terms.insert(at, draw(st.sampled_from(["0", "1", "-1"])))
    return data, " + ".join(terms)


def formulaic_columns(rhs: str, data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    mm = fmm(rhs, data, na_action="ignore")
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
    return np.asarray(mm, dtype=np.float64), names


@settings(max_examples=400, deadline=None)
@given(frames_and_sums())
def test_plain_sum_is_coded_as_formulaic_codes_it(case) -> None:
    data, rhs = case
    got = plain_columns(rhs, data)
    assert got is not None, rhs
    cols, names = got
    want, want_names = formulaic_columns(rhs, data)
    assert names == want_names, rhs
    X = ColumnMatrix(tuple(cols), len(data)).dense()
    np.testing.assert_array_equal(X, want, err_msg=rhs)
    # a factor's dummies are one byte a row, not float64 copies
    for name, col in zip(names, cols, strict=True):
        if "[" in name:
            assert col is not None and col.dtype == np.bool_


@pytest.mark.parametrize(
    "rhs",
    ["g:x", "g * x", "C(g)", "C(g, contr.sum)", "np.log(x)", "x - 1", "`g`", "g + u", ""],
)
def test_other_right_hand_sides_are_left_to_formulaic(rhs) -> None:
    data = pd.DataFrame({"g": ["a", "b", "a"], "x": [1.0, 2.0, 3.0], "u": ["p", "q", "p"]})
    data["u"] = data["u"].astype("string[python]")  # formulaic reads it as numbers, and fails
    assert plain_columns(rhs, data) is None


def test_a_factor_without_levels_is_left_to_formulaic() -> None:
    data = pd.DataFrame({"g": pd.Series([None, None], dtype=object), "x": [1.0, 2.0]})
    assert plain_columns("x + g", data) is None


def test_fallback_still_builds_an_interaction() -> None:
    data = pd.DataFrame({"g": ["a", "b", "a", "b"], "x": [1.0, 2.0, 3.0, 5.0]})
    X, names = model_columns("g:x", data, what="fixed part")
    want, want_names = formulaic_columns("g:x", data)
    assert names == want_names
    np.testing.assert_array_equal(X.dense(), want)


# ---------------------------------------------------------------- new data coded as the fit --


@pytest.fixture(scope="module")
def factor_fit() -> tiers.LmmResult:
    rng = np.random.default_rng(11)
    n = 150
    data = pd.DataFrame(
        {
            "g": np.repeat(np.arange(15), 10),
            "c": pd.Series(np.tile(["lo", "mid", "hi"], n // 3), dtype="str"),
            "x": rng.normal(size=n),
        }
    )
    # a Categorical with an unused category: its column is zeros, omitted as collinear
    data["k"] = pd.Categorical(np.tile(["v", "u"], n // 2), categories=["v", "w", "u"])
    effect = data["c"].map({"lo": 0.0, "mid": 0.5, "hi": 1.5}).to_numpy()
    data["y"] = data["x"] + effect + np.repeat(rng.normal(size=15), 10) + rng.normal(size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return tiers.fit("y ~ c + x + k + (1 | g)", data)


def test_the_fits_rows_are_coded_for_prediction_as_in_the_fit(factor_fit) -> None:
    """The fit codes X without formulaic; new data is coded by formulaic's spec of the fit's rows:
    on the fit's own rows the two agree exactly."""
    assert list(factor_fit.fixef.index) == ["(Intercept)", "c[T.lo]", "c[T.mid]", "x", "k[T.u]"]
    assert factor_fit.design.frame.omitted == ("k[T.w]",)
    frame = factor_fit.design.frame
    np.testing.assert_array_equal(fixed_matrix(factor_fit, frame.data), frame.X)


def test_new_data_without_a_level_is_coded_with_the_fits_columns(factor_fit) -> None:
    new = pd.DataFrame(
        {"g": [1, 2, 3], "c": ["mid", "mid", "lo"], "x": [0.5, -1.0, 2.0], "k": ["u"] * 3}
    )
    got = factor_fit.predict(new, re="exclude")["mean"].to_numpy()
    b = factor_fit.fixef
    want = b["(Intercept)"] + b["x"] * new["x"].to_numpy() + b["k[T.u]"]
    want += np.where(new["c"] == "mid", b["c[T.mid]"], b["c[T.lo]"])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_new_data_with_an_unseen_level_is_refused_by_name(factor_fit) -> None:
    new = pd.DataFrame({"g": [1, 2], "c": ["mid", "top"], "x": [0.0, 0.0], "k": ["u", "v"]})
    with pytest.raises(DataError, match=r"column 'c' has level\(s\) 'top' not seen in the fit"):
        factor_fit.predict(new)
