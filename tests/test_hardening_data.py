"""Odd data at the edge (issue 19, items 4, 6, 7, 10, 17, 18): nothing lost, nothing silently wrong."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.errors import ComparisonError, DataError, SingularFitWarning


def quiet_fit(formula: str, data, **kw) -> tiers.LmmResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return tiers.fit(formula, data, **kw)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 120
    df = pd.DataFrame({"g": np.repeat(np.arange(12), 10), "x": rng.normal(size=n)})
    df["c"] = np.tile(["a", "b", "c"], n // 3)
    df["y"] = (
        df.x
        + np.repeat(rng.normal(size=12), 10)
        + df.c.map({"a": 0.0, "b": 1.0, "c": 2.0})
        + rng.normal(size=n)
    )
    return df


# ------------------------------------------------------------------ item 4: ids are labels --


def test_integer_ids_with_a_missing_value_stay_integers(tmp_path, base) -> None:
    frame = base.astype({"g": object})
    frame.loc[5, "g"] = None
    path = tmp_path / "ids.csv"
    frame.to_csv(path, index=False)
    data = tiers.read_data(path)
    assert pd.api.types.is_integer_dtype(data["g"])
    assert data["g"].isna().sum() == 1
    res = quiet_fit("y ~ x + (1 | g)", data)
    assert res.ngroups == {"g": 12}
    assert set(res.ranef()["g"].index) == {str(k) for k in range(12)}


def test_long_ids_with_a_missing_value_stay_distinct(tmp_path, base) -> None:
    frame = base.assign(g=[str(123456789012345000 + k) for k in base.g]).astype({"g": object})
    frame.loc[3, "g"] = None
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    data = tiers.read_data(path)
    assert data["g"].isna().sum() == 1  # a missing id is missing, not the label ""
    res = quiet_fit("y ~ x + (1 | g)", data)
    assert res.ngroups == {"g": 12}


# ---------------------------------------------------------------- item 6: Stata value labels --


def test_stata_value_labels_keep_numbers_numeric(tmp_path, base) -> None:
    frame = base.assign(educ=(base.g % 5 + 1).astype(np.int8), yi=base.y.round().astype(np.int8))
    frame = frame.drop(columns="c")
    path = tmp_path / "lab.dta"
    labels = {1: "none", 2: "primary", 3: "secondary", 4: "college", 5: "grad"}
    yl = {int(v): f"v{v}" for v in frame.yi.unique()}
    frame.to_stata(path, write_index=False, value_labels={"educ": labels, "yi": yl})
    data = tiers.read_data(path)
    assert pd.api.types.is_numeric_dtype(data["educ"])
    assert data.attrs["value_labels"]["educ"] == labels
    res = quiet_fit("yi ~ educ + x + (1 | g)", data)  # a labelled numeric response fits
    assert list(res.fixef.index) == ["(Intercept)", "educ", "x"]


# --------------------------------------------------- item 7: predict with unseen categories --


def test_predict_refuses_an_unseen_fixed_effect_level(base) -> None:
    res = quiet_fit("y ~ x + c + (1 | g)", base)
    new = pd.DataFrame({"g": [3, 3], "c": ["a", "d"], "x": [0.0, 0.0]})
    with pytest.raises(DataError, match=r"'c' has level\(s\) 'd' not seen"):
        res.predict(new)


def test_predict_missing_category_is_missing_not_the_reference(base) -> None:
    res = quiet_fit("y ~ x + c + (1 | g)", base)
    new = pd.DataFrame({"g": [3, 3], "c": ["b", None], "x": [0.0, 0.0]})
    out = res.predict(new, na_action="exclude")
    assert np.isfinite(out["mean"].iloc[0]) and np.isnan(out["mean"].iloc[1])
    assert len(res.predict(new)) == 1


def test_predict_matches_float_ids_with_integer_newdata(base) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base.assign(g=base.g.astype(float)))
    new = pd.DataFrame({"g": [3, 4], "x": [0.0, 0.0]})
    with_re = res.predict(new)["mean"].to_numpy()
    population = res.predict(new, re="exclude")["mean"].to_numpy()
    b = res.ranef()["g"]["(Intercept)"]
    assert with_re == pytest.approx(population + b.loc[["3.0", "4.0"]].to_numpy())


def test_predict_refuses_text_ids_for_numeric_ids(base) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base)
    new = pd.DataFrame({"g": ["3"], "x": [0.0]})
    with pytest.raises(DataError, match="number ids in the fit and text ids in newdata"):
        res.predict(new)


# ------------------------------------------------------------------ item 10: smaller ones --


def test_backticked_column_named_1_is_a_column(base) -> None:
    res = quiet_fit("y ~ `1` + (1 | g)", base.rename(columns={"x": "1"}))
    assert list(res.fixef.index) == ["(Intercept)", "1"]


@pytest.mark.parametrize("column", ["x", "y"])
def test_complex_numbers_are_refused(base, column) -> None:
    data = base.assign(**{column: base[column] + 1j})
    with pytest.raises(DataError, match="complex numbers"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_ids_1_and_text_1_are_refused(base) -> None:
    g = base.g.astype(object)
    g[g == 1] = "1"
    with pytest.raises(DataError, match="mixes numbers and text"):
        tiers.fit("y ~ x + (1 | g)", base.assign(g=g))


def test_refit_validates_reml(base) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base)
    with pytest.raises(TypeError, match="reml must be True or False"):
        res.refit(reml="no")  # type: ignore[arg-type]


def test_one_bootstrap_replicate_is_refused(base) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base)
    with pytest.raises(ValueError, match="n_boot must be an integer of at least 10"):
        res.confint(method="bootstrap", n_boot=1)


def test_short_csv_row_is_malformed(tmp_path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("g,x,y\n1,2,3\n2,3\n")
    with pytest.raises(DataError, match="line 3 has 2 fields where the header has 3"):
        tiers.read_data(path)


def test_duplicate_csv_header_is_refused(tmp_path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("g,x,x\n1,2,3\n")
    with pytest.raises(DataError, match="names the column 'x' twice"):
        tiers.read_data(path)


def test_na_words_read_as_missing_in_numbers_are_noted(tmp_path) -> None:
    path = tmp_path / "na.csv"
    path.write_text("g,y\nNA,1\nnull,2\n1,3\n2,4\n")
    data = tiers.read_data(path)
    assert data["g"].isna().sum() == 2
    assert any("string_columns=['g']" in n for n in data.attrs["notes"])


# ------------------------------------------------------------------ item 17: Python API --


@pytest.mark.parametrize("column", ["y", "g"])
def test_duplicate_column_names_are_refused(base, column) -> None:
    data = pd.concat([base, base[[column]]], axis=1)
    with pytest.raises(DataError, match=f"2 columns named '{column}'"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_timedelta_predictor_is_refused(base) -> None:
    data = base.assign(x=pd.to_timedelta(base.x * 100, unit="s"))
    with pytest.raises(DataError, match="dates or durations"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_latin1_bytes_ids_become_text(base) -> None:
    data = base.assign(g=base.g.map(lambda k: f"caf\xe9{k}".encode("latin-1")))
    res = quiet_fit("y ~ x + (1 | g)", data)
    assert "café3" in set(res.ranef()["g"].index)
    assert len(res.caterpillar("g")) == 12


def test_compare_refuses_what_is_not_a_model() -> None:
    from tiers.report.comparison import compare

    with pytest.raises(ComparisonError, match="argument 1 is a str"):
        compare("abc")  # type: ignore[arg-type]


def test_subpackages_after_plain_import() -> None:
    import subprocess
    import sys

    code = (
        "import tiers; tiers.panel.fixed_effects; tiers.report.comparison.compare; "
        "tiers.comparison.compare; tiers.inference.lrtest.lrtest"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ item 18: messages, CSV --


def test_numbers_stored_as_text_response_message(base) -> None:
    with pytest.raises(DataError, match="numbers stored as text"):
        tiers.fit("y ~ x + (1 | g)", base.assign(y=base.y.astype(str)))


def test_semicolon_csv_with_decimal_commas(tmp_path, base) -> None:
    path = tmp_path / "semi.csv"
    base.to_csv(path, sep=";", decimal=",", index=False)
    data = tiers.read_data(path)
    assert list(data.columns) == list(base.columns)
    assert data["x"].to_numpy() == pytest.approx(base.x.to_numpy())
    assert any("separated by ';'" in n for n in data.attrs["notes"])


def test_tab_separated_latin1_csv(tmp_path, base) -> None:
    path = tmp_path / "tab.csv"
    base.assign(c=base.c.map({"a": "é", "b": "ü", "c": "ß"})).to_csv(
        path, sep="\t", index=False, encoding="latin-1"
    )
    data = tiers.read_data(path)
    assert set(data["c"]) == {"é", "ü", "ß"}
    assert any("Latin-1" in n for n in data.attrs["notes"])


def test_ftest_refuses_an_all_zero_row(base) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base)
    with pytest.raises(ValueError, match="row 1 of L is all zero"):
        res.ftest([[0.0, 1.0], [0.0, 0.0]])


def test_unicode_names_as_response_and_group(base) -> None:
    data = base.rename(columns={"y": "réponse", "g": "école"})
    res = quiet_fit("réponse ~ x + (1 | école)", data)
    assert res.ngroups == {"école": 12}
    assert quiet_fit("réponse x || école:", data).ngroups == {"école": 12}


def test_backticked_names_with_spaces_as_response_and_group(base) -> None:
    data = base.rename(columns={"y": "my y", "g": "my g"})
    res = quiet_fit("`my y` ~ x + (1 | `my g`)", data)
    ref = quiet_fit("y ~ x + (1 | g)", base)
    assert res.ngroups == {"my g": 12}
    assert res.fixef.to_numpy() == pytest.approx(ref.fixef.to_numpy(), rel=1e-10)


def test_panel_functions_accept_polars(base) -> None:
    import polars as pl

    from tiers.panel import fixed_effects, random_effects

    for estimator in (fixed_effects, random_effects):
        got = estimator(pl.from_pandas(base), "y", ["x"], "g")
        want = estimator(base, "y", ["x"], "g")
        assert got.coef["estimate"].to_numpy() == pytest.approx(want.coef["estimate"].to_numpy())


@pytest.mark.parametrize("source", ["parquet", "polars"])
def test_long_integer_ids_with_a_missing_value_from_arrow(tmp_path, base, source) -> None:
    import polars as pl

    ids = [123456789012345000 + k if i != 3 else None for i, k in enumerate(base.g)]
    frame = pl.from_pandas(base.drop(columns="g")).with_columns(pl.Series("g", ids, pl.Int64))
    if source == "parquet":
        frame.write_parquet(tmp_path / "ids.parquet")
        data = tiers.read_data(tmp_path / "ids.parquet")
    else:
        data = frame
    res = quiet_fit("y ~ x + (1 | g)", data)
    assert res.ngroups == {"g": 12}
    assert str(123456789012345011) in set(res.ranef()["g"].index)


def test_float_ids_that_are_not_exact_decimals_stay_distinct(base) -> None:
    # a guard: 0.1 * k is not exactly representable; every group keeps its own label
    res = quiet_fit("y ~ x + (1 | g)", base.assign(g=base.g * 0.1 + 0.2))
    assert res.ngroups == {"g": 12}
    assert len(set(res.ranef()["g"].index)) == 12


@pytest.mark.parametrize("kind", ["list", "tuple"])
def test_container_values_in_a_grouping_factor_are_refused(base, kind) -> None:
    make = list if kind == "list" else tuple
    data = base.assign(g=[make([k]) for k in base.g])
    with pytest.raises(DataError, match=f"holds {kind} values"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_foreign_errors_in_the_data_become_data_errors(base) -> None:
    data = base.assign(x=pd.interval_range(0, len(base)))
    with pytest.raises(DataError, match=r"cannot use the data .* x \(interval"):
        tiers.fit("y ~ x + (1 | g)", data)


def test_arrow_string_predictor_is_a_factor(base) -> None:
    data = base.assign(c=pd.array(list(base.c), dtype="string[pyarrow]"))
    res = quiet_fit("y ~ x + c + (1 | g)", data)
    ref = quiet_fit("y ~ x + c + (1 | g)", base)
    assert res.fixef.to_numpy() == pytest.approx(ref.fixef.to_numpy(), rel=1e-10)
    assert res.predict(data.head(3))["mean"].to_numpy() == pytest.approx(
        ref.predict(base.head(3))["mean"].to_numpy()
    )


def test_utf16_csv(tmp_path, base) -> None:
    path = tmp_path / "u16.csv"
    base.to_csv(path, index=False, encoding="utf-16")
    data = tiers.read_data(path)
    assert list(data.columns) == list(base.columns)
    assert any("UTF-16" in n for n in data.attrs["notes"])


def test_latin1_text_past_the_first_megabyte_is_text(tmp_path) -> None:
    path = tmp_path / "late.csv"
    path.write_bytes(b"g,y\n" + b"a,1\n" * 300_000 + "\xe9,2\n".encode("latin-1"))
    data = tiers.read_data(path)
    assert data["g"].iloc[-1] == "é"
    assert any("Latin-1" in n for n in data.attrs["notes"])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.ranef(cond_var="no"), TypeError, "cond_var must be True or False"),
        (lambda r: r.predict(interval="yes"), TypeError, "interval must be True or False"),
        (lambda r: r.summary(stddeviations="yes"), TypeError, "stddeviations must be True"),
        (lambda r: r.confint("bootstrap", seed=-1), ValueError, "seed must be a non-negative"),
        (lambda r: r.confint("bootstrap", seed=1.5), ValueError, "seed must be a non-negative"),
        (lambda r: r.confint("bootstrap", workers=2.5), ValueError, "workers must be a positive"),
        (lambda r: r.confint("bootstrap", progress="no"), TypeError, "progress must be True"),
    ],
)
def test_result_methods_validate_argument_types(base, call, error, message) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base)
    with pytest.raises(error, match=message):
        call(res)


def test_read_notes_on_used_columns_reach_the_summary(tmp_path, base) -> None:
    frame = base.astype({"g": object})
    frame.loc[:9, "g"] = "NA"
    path = tmp_path / "na.csv"
    frame.to_csv(path, index=False)
    res = quiet_fit("y ~ x + (1 | g)", tiers.read_data(path))
    assert any("values read as missing ('NA')" in n for n in res.notes)
    assert "--string-col g" in str(res).replace("\n      ", " ")


def test_a_refused_newdata_does_not_change_later_predictions(base) -> None:
    res = quiet_fit("y ~ x + c + (1 | g)", base)
    good = base.head(3)
    before = res.predict(good)["mean"].to_numpy()
    with pytest.raises(DataError, match="newdata's column 'x' has dtype"):
        res.predict(good.assign(x=["a", "b", "c"]))
    assert res.predict(good)["mean"].to_numpy() == pytest.approx(before)


@pytest.mark.parametrize("kind", ["complex", "timedelta"])
def test_predict_refuses_non_real_predictors(base, kind) -> None:
    res = quiet_fit("y ~ x + (1 | g)", base)
    x = base.x.head(3)
    new = base.head(3).assign(x=x + 1j if kind == "complex" else pd.to_timedelta(x, unit="s"))
    with pytest.raises(DataError, match="newdata's column 'x' has dtype"):
        res.predict(new)


def test_predict_reads_an_object_column_of_numbers(base) -> None:
    res = quiet_fit("y ~ x + c + (1 | g)", base)
    new = base.head(3)
    got = res.predict(new.assign(x=new.x.astype(object)))["mean"].to_numpy()
    assert got == pytest.approx(res.predict(new)["mean"].to_numpy())


def test_stata_integer_ids_with_a_missing_value_stay_integers(tmp_path, base) -> None:
    frame = base.drop(columns="c").assign(g=pd.array(base.g, dtype="Int32"))
    frame.loc[4, "g"] = pd.NA
    path = tmp_path / "ids.dta"
    frame.to_stata(path, write_index=False)
    data = tiers.read_data(path)
    assert pd.api.types.is_integer_dtype(data["g"])
    res = quiet_fit("y ~ x + (1 | g)", data)
    assert set(res.ranef()["g"].index) == {str(k) for k in range(12)}


def test_short_row_after_a_type_change_is_malformed(tmp_path) -> None:
    # the text id far down the file makes pyarrow give up; the short row is still found
    rows = ["g,x,y", *(f"{i},{i * 0.5},{i}" for i in range(200_000)), "abc,1,2", "5,6"]
    path = tmp_path / "late.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="line 200003 has 2 fields where the header has 3"):
        tiers.read_data(path)
