"""Bad input gets a clear error naming the column or term and what to do; never a bare
numpy/pandas traceback, never a silent wrong answer, never rows lost without a count."""

from __future__ import annotations

import importlib
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import tiers
import tiers.data.io
from tiers.errors import (
    DataError,
    FormulaError,
    IdentificationWarning,
    NestingError,
    TiersError,
)

SEED_LME4 = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
SEED_STATA = "perform tutoring || dist_id: || school_id: || teach_id: || student_id:"
REVERSED_STATA = "perform tutoring || student_id: || teach_id: || school_id: || dist_id:"
REVERSED_LME4 = "perform ~ tutoring + (1|student_id/teach_id/school_id/dist_id)"
SMALL = "y ~ x + (1 | g)"


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    """20 groups of 10 rows: y, x, g, and z (a column no formula below uses)."""
    rng = np.random.default_rng(0)
    n = 200
    g = np.repeat(np.arange(1, 21), 10)
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + rng.normal(size=20)[g - 1],
            "x": rng.normal(size=n),
            "g": g,
            "z": rng.normal(size=n),
        }
    )


@pytest.fixture(scope="module")
def small_fit(small: pd.DataFrame) -> tiers.LmmResult:
    return tiers.fit(SMALL, small)


def _assert_same_fit(a: tiers.LmmResult, b: tiers.LmmResult, rtol: float = 1e-10) -> None:
    assert a.xnames == b.xnames
    assert a.nobs == b.nobs
    np.testing.assert_allclose(a.beta, b.beta, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.theta, b.theta, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=rtol)
    np.testing.assert_allclose(a.criterion, b.criterion, rtol=rtol)
    np.testing.assert_allclose(a.std_errors, b.std_errors, rtol=rtol)


def _caret_column(message: str, formula: str) -> int:
    """The column (in the formula) the caret line points at; fails when there is none."""
    lines = message.splitlines()
    quoted = [i for i, line in enumerate(lines) if line.strip() == formula.strip()]
    assert quoted, f"the formula is not quoted on a line of its own:\n{message}"
    i = quoted[-1]
    assert i + 1 < len(lines) and re.fullmatch(r"\s*\^", lines[i + 1]), (
        f"no caret line under the quoted formula:\n{message}"
    )
    return lines[i + 1].index("^") - lines[i].index(formula.strip()[0])


# ------------------------------------------------------------------------------ missing values --


@pytest.mark.parametrize("column", ["y", "x", "g"])
def test_missing_values_in_used_column_are_dropped_and_counted(
    small: pd.DataFrame, column: str
) -> None:
    data = small.copy()
    if column == "g":
        data["g"] = data["g"].astype("Int64")  # ids with a missing value, as read from a file
    rows = [3, 57, 58, 140]
    data.loc[rows, column] = pd.NA if column == "g" else np.nan
    res = tiers.fit(SMALL, data)
    assert res.n_dropped == 4
    assert res.nobs == len(small) - 4
    assert res.to_dict()["n_dropped"] == 4
    assert re.search(r"\b4 rows dropped because of missing values", str(res)), str(res)
    assert f"{column}: 4" in str(res)  # which column the missing values were in
    # the same fit as on the complete rows
    _assert_same_fit(res, tiers.fit(SMALL, small.drop(index=rows).reset_index(drop=True)))


def test_missing_values_listwise_count_rows_not_cells(small: pd.DataFrame) -> None:
    data = small.copy()
    data.loc[[0, 1], "y"] = np.nan
    data.loc[[1, 2], "x"] = np.nan  # row 1 misses both: counted once
    res = tiers.fit(SMALL, data)
    assert res.n_dropped == 3
    assert res.nobs == len(small) - 3
    assert res.to_dict()["n_dropped"] == 3
    assert "3 rows dropped because of missing values" in str(res)


def test_missing_values_in_unused_column_do_not_drop_rows(
    small: pd.DataFrame, small_fit: tiers.LmmResult
) -> None:
    data = small.copy()
    data.loc[[0, 5, 9, 100], "z"] = np.nan
    res = tiers.fit(SMALL, data)
    assert res.n_dropped == 0
    assert res.nobs == len(small)
    assert res.to_dict()["n_dropped"] == 0
    assert "dropped" not in str(res)
    _assert_same_fit(res, small_fit)


def test_no_rows_left_is_a_data_error(small: pd.DataFrame) -> None:
    data = small.assign(x=np.nan)
    with pytest.raises(DataError, match=r"no rows left.*\bx\b"):
        tiers.fit(SMALL, data)


# ------------------------------------------------------------------------------ unknown columns --


def test_unknown_column_in_fixed_part(seed_small: pd.DataFrame) -> None:
    match = r"'tutorng' \(a predictor\) is not in the data.*did you mean 'tutoring'"
    with pytest.raises(DataError, match=match):
        tiers.fit("perform ~ tutorng + (1 | dist_id/school_id)", seed_small)


def test_unknown_column_in_grouping_factor(seed_small: pd.DataFrame) -> None:
    match = r"'schol_id' \(a grouping factor\) is not in the data.*did you mean 'school_id'"
    with pytest.raises(DataError, match=match):
        tiers.fit("perform ~ tutoring + (1 | dist_id/schol_id)", seed_small)


def test_unknown_column_in_stata_level(seed_small: pd.DataFrame) -> None:
    match = r"'schol_id' \(a grouping factor\).*did you mean 'school_id'"
    with pytest.raises(DataError, match=match):
        tiers.fit("perform tutoring || dist_id: || schol_id:", seed_small)


def test_unknown_response(seed_small: pd.DataFrame) -> None:
    match = r"'perfom' \(the response\) is not in the data.*did you mean 'perform'"
    with pytest.raises(DataError, match=match):
        tiers.fit("perfom ~ tutoring + (1 | dist_id)", seed_small)


def test_unknown_column_without_close_match_lists_the_columns(seed_small: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"'qqq' \(a predictor\) is not in the data") as info:
        tiers.fit("perform ~ qqq + (1 | dist_id)", seed_small)
    msg = str(info.value)
    assert "did you mean" not in msg
    assert "tutoring" in msg and "student_id" in msg  # the columns that do exist


# ----------------------------------------------------------------------- non-numeric response --


def test_string_response_is_a_data_error(small: pd.DataFrame) -> None:
    data = small.assign(label=np.where(small["y"] > 0, "high", "low"))
    with pytest.raises(DataError, match=r"response 'label' is not numeric.*convert it to numbers"):
        tiers.fit("label ~ x + (1 | g)", data)


def test_mostly_numeric_response_shows_the_offending_value(small: pd.DataFrame) -> None:
    # A CSV column with one "n/a" among numbers: the example must be the value that is not a number.
    data = small.assign(y=small["y"].astype(object))
    data.loc[17, "y"] = "n/a"
    with pytest.raises(DataError, match=r"response 'y' is not numeric") as info:
        tiers.fit(SMALL, data)
    assert "'n/a'" in str(info.value), str(info.value)


# ------------------------------------------------------------------------------ formula syntax --


def test_missing_closing_parenthesis() -> None:
    formula = "y ~ x + (1 | g"
    with pytest.raises(FormulaError, match=r"missing '\)'") as info:
        tiers.parse(formula)
    assert _caret_column(str(info.value), formula) == len(formula)


def test_empty_term() -> None:
    formula = "y ~ x + + (1|g)"
    with pytest.raises(FormulaError, match=r"empty term") as info:
        tiers.parse(formula)
    assert _caret_column(str(info.value), formula) == formula.index("+ (")


def test_no_random_term() -> None:
    formula = "y ~ x + z"
    match = r"no random-effects term.*add one such as '\(1 \| group\)'"
    with pytest.raises(FormulaError, match=match) as info:
        tiers.parse(formula)
    _caret_column(str(info.value), formula)  # quoted, with a caret where the term is missing


def test_bar_outside_parentheses() -> None:
    formula = "y ~ x + 1 | school"
    with pytest.raises(FormulaError, match=r"must be in parentheses") as info:
        tiers.parse(formula)
    msg = str(info.value)
    assert _caret_column(msg, formula) == formula.index("1 |")
    assert "(1 | school)" in msg, f"the fix should use the user's own term:\n{msg}"


def test_stata_level_without_colon() -> None:
    formula = "perform tutoring || dist_id: || school"
    with pytest.raises(FormulaError, match=r"needs a colon") as info:
        tiers.parse(formula)
    msg = str(info.value)
    col = _caret_column(msg, formula)
    assert formula.rindex("||") < col <= formula.index("school")
    assert "|| school:" in msg, f"the fix should name the user's level:\n{msg}"


def test_formula_error_is_a_tiers_error() -> None:
    with pytest.raises(TiersError):
        tiers.fit("y ~ x + (1 | g", pd.DataFrame({"y": [1.0], "x": [1.0], "g": [1]}))


# ------------------------------------------------------------------------------- collinearity --


@pytest.mark.parametrize(
    ("extra", "column"),
    [(lambda d: 2.0 * d["x"], "x2"), (lambda d: np.full(len(d), 3.0), "c")],
    ids=["x2=2*x", "constant"],
)
def test_collinear_predictor_is_omitted_with_a_note(
    small: pd.DataFrame, small_fit: tiers.LmmResult, extra, column: str
) -> None:
    data = small.assign(**{column: extra(small)})
    res = tiers.fit(f"y ~ x + {column} + (1 | g)", data)
    note = f"{column} omitted because of collinearity"
    assert any(note in n for n in res.notes), res.notes
    assert note in str(res)
    assert column not in res.xnames
    assert res.xnames == ("(Intercept)", "x")
    _assert_same_fit(res, small_fit)


def test_collinearity_note_is_not_prefixed_twice(small: pd.DataFrame) -> None:
    res = tiers.fit("y ~ x + x2 + (1 | g)", small.assign(x2=2.0 * small["x"]))
    text = str(res)
    assert "x2 omitted because of collinearity" in text
    assert "Note: note:" not in text, [ln for ln in text.splitlines() if "omitted" in ln]


# ----------------------------------------------------------------------------- group sizes --


def test_grouping_factor_with_one_level(small: pd.DataFrame) -> None:
    data = small.assign(site=1)
    with pytest.raises(DataError, match=r"grouping factor 'site' has 1 group.*drop the term"):
        tiers.fit("y ~ x + (1 | g) + (1 | site)", data)


def test_grouping_factor_with_one_group_per_observation(small: pd.DataFrame) -> None:
    data = small.assign(row=np.arange(len(small)))
    match = r"'row' has 200 groups for 200 observations.*remove the term"
    with pytest.raises(DataError, match=match):
        tiers.fit("y ~ x + (1 | row)", data)


def test_nested_level_with_one_group_per_observation(small: pd.DataFrame) -> None:
    data = small.assign(row=np.arange(len(small)))
    with pytest.raises(DataError, match=r"'row:g' has 200 groups for 200 observations"):
        tiers.fit("y ~ x + (1 | g/row)", data)


# ---------------------------------------------------------------------------------- nesting --


@pytest.fixture(scope="module")
def moved(seed_small: pd.DataFrame) -> pd.DataFrame:
    """Students 1-3 spend their second semester with teacher 7: not nested in teachers."""
    data = seed_small.copy()
    data.loc[data["student_id"].isin([1, 2, 3]) & (data["semester"] == 2), "teach_id"] = 7
    return data


def test_non_nested_child_in_stata_syntax(moved: pd.DataFrame) -> None:
    with pytest.raises(NestingError, match=r"student_id is not nested in") as info:
        tiers.fit(SEED_STATA, moved)
    msg = str(info.value)
    assert "3 of 4,000 student_id values" in msg
    assert re.search(r"student_id 1 under \S+ 1:1:1, 1:1:7", msg), msg  # offending ids
    assert "crossed" in msg
    assert "force=True" in msg


def test_non_nested_child_fits_with_force(moved: pd.DataFrame) -> None:
    res = tiers.fit(SEED_STATA, moved, force=True)
    assert res.nobs == len(moved)
    assert res.ngroups["student_id"] == 4003  # students 1-3 counted once under each teacher
    assert any("student_id" in n and "4,003 groups" in n for n in res.notes), res.notes


def test_unit_moved_wholly_is_still_nested(seed_small: pd.DataFrame) -> None:
    data = seed_small.copy()
    data.loc[data["student_id"].isin([1, 2, 3]), "teach_id"] = 7
    res = tiers.fit(SEED_STATA, data)
    assert res.ngroups["student_id"] == 4000


@pytest.mark.parametrize(
    ("formula", "proposal"),
    [
        (REVERSED_STATA, "|| dist_id: || school_id: || teach_id: || student_id:"),
        (REVERSED_LME4, "(1 | dist_id/school_id/teach_id/student_id)"),
    ],
    ids=["stata", "lme4"],
)
def test_reversed_nesting_proposes_corrected_order(
    seed_small: pd.DataFrame, formula: str, proposal: str
) -> None:
    with pytest.raises(NestingError, match=r"not\s+identified") as info:
        tiers.fit(formula, seed_small)
    msg = str(info.value)
    assert proposal in msg, msg
    assert "force=True" in msg


@pytest.fixture(scope="module")
def reversed_forced(seed_small: pd.DataFrame) -> dict[str, tuple[tiers.LmmResult, list]]:
    out = {}
    for key, formula in (("stata", REVERSED_STATA), ("lme4", REVERSED_LME4)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = tiers.fit(formula, seed_small, force=True)
        out[key] = (res, list(caught))
    return out


@pytest.mark.parametrize("syntax", ["stata", "lme4"])
def test_reversed_nesting_fits_with_force(reversed_forced, syntax: str) -> None:
    res, caught = reversed_forced[syntax]
    assert res.nobs == 8000
    assert np.all(np.isfinite(res.beta))
    assert any("not identified" in w for w in res.warnings), res.warnings
    assert any(issubclass(w.category, IdentificationWarning) for w in caught)
    assert "not identified" in str(res)


@pytest.mark.parametrize("syntax", ["stata", "lme4"])
def test_reversed_nesting_with_force_leaks_no_numpy_warning(reversed_forced, syntax: str) -> None:
    _, caught = reversed_forced[syntax]
    leaked = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, RuntimeWarning)
    ]
    assert not leaked, leaked


# ----------------------------------------------------------------------------- value checks --


def test_summary_bogus_style(small_fit: tiers.LmmResult) -> None:
    with pytest.raises(ValueError, match=r"style must be one of stata, lme4; got 'bogus'"):
        small_fit.summary(style="bogus")


@pytest.mark.parametrize("level", [1.5, 0.0, 1.0, -0.1])
def test_coef_table_bad_level(small_fit: tiers.LmmResult, level: float) -> None:
    match = r"level must be strictly between 0 and 1 \(e\.g\. 0\.95\)"
    with pytest.raises(ValueError, match=match):
        small_fit.coef_table(level=level)


def test_non_finite_predictor_is_a_data_error(small: pd.DataFrame) -> None:
    data = small.copy()
    data.loc[3, "x"] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the check is on the exception
        with pytest.raises(DataError, match=r"'x'.*infinite"):
            tiers.fit(SMALL, data)


def test_transform_giving_nan_is_a_data_error(small: pd.DataFrame) -> None:
    # log of negative values: NaN inside the model matrix must be reported, not crash in scipy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(DataError, match=r"log\(x\)"):
            tiers.fit("y ~ log(x) + (1 | g)", small)


def test_wrong_data_type_names_a_function_that_exists() -> None:
    with pytest.raises(DataError, match=r"must be a pandas or polars DataFrame, got list") as info:
        tiers.fit(SMALL, [1, 2, 3])
    for ref in re.findall(r"\btiers(?:\.\w+)+", str(info.value)):
        module, _, attr = ref.rpartition(".")
        assert hasattr(importlib.import_module(module), attr), f"{ref} does not exist: {info.value}"


# ------------------------------------------------------------------------------------ polars --


@pytest.fixture(scope="module")
def pl():
    return pytest.importorskip("polars")


def test_polars_input_fits_the_same(pl, seed_small: pd.DataFrame) -> None:
    a = tiers.fit(SEED_LME4, seed_small)
    b = tiers.fit(SEED_LME4, pl.from_pandas(seed_small))
    _assert_same_fit(a, b)
    assert a.ngroups == b.ngroups


def test_polars_nulls_are_dropped_and_counted(pl, small: pd.DataFrame) -> None:
    frame = pl.from_pandas(small).with_columns(
        pl.when(pl.int_range(pl.len()).is_in([3, 57])).then(None).otherwise(pl.col("y")).alias("y"),
        pl.when(pl.int_range(pl.len()) == 140).then(None).otherwise(pl.col("g")).alias("g"),
        pl.when(pl.int_range(pl.len()) == 9).then(None).otherwise(pl.col("z")).alias("z"),
    )
    res = tiers.fit(SMALL, frame)
    assert res.n_dropped == 3
    assert "3 rows dropped because of missing values" in str(res)
    _assert_same_fit(res, tiers.fit(SMALL, small.drop(index=[3, 57, 140]).reset_index(drop=True)))


def test_polars_unknown_column(pl, small: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"'xx' \(a predictor\).*did you mean 'x'"):
        tiers.fit("y ~ xx + (1 | g)", pl.from_pandas(small))


def test_polars_string_response(pl, small: pd.DataFrame) -> None:
    frame = pl.from_pandas(small.assign(label=np.where(small["y"] > 0, "high", "low")))
    with pytest.raises(DataError, match=r"response 'label' is not numeric"):
        tiers.fit("label ~ x + (1 | g)", frame)


# ---------------------------------------------------------------------------------------- io --


def test_read_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"nope\.csv.*does not exist"):
        tiers.data.io.read_data(path)


def test_read_unsupported_extension(tmp_path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(DataError, match=r"data\.xlsx.*\.csv, \.parquet.*\.dta"):
        tiers.data.io.read_data(path)


def test_read_corrupt_parquet(tmp_path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not a parquet file")
    with pytest.raises(DataError, match=r"cannot read 'broken\.parquet'"):
        tiers.data.io.read_data(path)


def test_read_truncated_parquet(tmp_path, small: pd.DataFrame) -> None:
    path = tmp_path / "cut.parquet"
    small.to_parquet(path, index=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cannot read 'cut\.parquet'"):
        tiers.data.io.read_data(path)
