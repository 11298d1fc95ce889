"""Data as it arrives (issue 12, items 5 and 6).

Ids written as ``007`` and ``7`` are two groups, not one; a 17-digit id keeps its digits; and the
same Parquet file gives the same model (levels, reference category, coefficients) whether it is
read into pandas or polars, and whichever of them wrote it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.conftest import load_case
from tiers.errors import DataError, SingularFitWarning


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    return load_case("hsb82")[0]


def quiet_fit(formula: str, data, **kw) -> tiers.LmmResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return tiers.fit(formula, data, **kw)


# --------------------------------------------------------- item 5: ids survive as labels --


def padded(hsb: pd.DataFrame) -> pd.DataFrame:
    """hsb82 with two of its 160 schools labelled '007' and '7' (one number, two labels)."""
    ids = hsb["school"].astype(str)
    first, second = ids.unique()[:2]
    return hsb.assign(school=ids.replace({first: "007", second: "7"}))


def test_zero_padded_ids_stay_distinct_groups(tmp_path, hsb: pd.DataFrame) -> None:
    path = tmp_path / "hsb.csv"
    padded(hsb).to_csv(path, index=False)
    data = tiers.read_data(path)
    assert set(data["school"]) >= {"007", "7"}
    assert any("school kept as text" in n and "'007'" in n for n in data.attrs["notes"])
    res = quiet_fit("mAch ~ cses + (1 | school)", data)
    assert res.ngroups == {"school": 160}
    ref = quiet_fit("mAch ~ cses + (1 | school)", hsb)
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-10)


def test_long_integer_ids_keep_their_digits(tmp_path) -> None:
    rng = np.random.default_rng(3)
    base = 12345678901234560
    ids = np.repeat([base + k for k in range(8)], 6)  # differ in the 17th digit only
    frame = pd.DataFrame({"y": rng.normal(size=ids.size), "id": ids})
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    data = tiers.read_data(path)
    assert data["id"].nunique() == 8
    assert str(base + 7) in set(data["id"])
    assert any("over 15 digits" in n for n in data.attrs["notes"])


def test_string_columns_reads_named_columns_as_text(tmp_path, hsb: pd.DataFrame) -> None:
    path = tmp_path / "hsb.csv"
    hsb.to_csv(path, index=False)
    plain = tiers.read_data(path)
    assert pd.api.types.is_integer_dtype(plain["school"]) and plain.attrs["notes"] == []
    text = tiers.read_data(path, string_columns=["school"])
    assert not pd.api.types.is_numeric_dtype(text["school"])
    assert text["school"].iloc[0] == str(hsb["school"].iloc[0])
    pq = tmp_path / "hsb.parquet"
    hsb.to_parquet(pq, index=False)
    assert pd.api.types.is_integer_dtype(tiers.read_data(pq)["school"])  # stored types kept
    assert tiers.read_data(pq, string_columns=["school"])["school"].iloc[0] == "1224"


def test_string_columns_naming_a_missing_column(tmp_path, hsb: pd.DataFrame) -> None:
    path = tmp_path / "hsb.csv"
    hsb.head(20).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"no column 'schol' to read as text"):
        tiers.read_data(path, string_columns=["schol"])


# ------------------------------------------- item 6: pandas and polars, the same levels --


@pytest.fixture(scope="module")
def pl():
    return pytest.importorskip("polars")


def sectors(hsb: pd.DataFrame) -> pd.DataFrame:
    """hsb82 with a school-level category whose first row is not the first label in order."""
    kinds = np.array(["public", "catholic", "private"])
    codes = pd.factorize(hsb["school"])[0] % 3
    return hsb.assign(sector=kinds[codes], school=hsb["school"].astype(str))


FORMULA = "mAch ~ sector + cses + (1 | school)"


def test_parquet_written_by_pandas(tmp_path, pl, hsb: pd.DataFrame) -> None:
    frame = sectors(hsb)
    path = tmp_path / "pandas.parquet"
    frame.assign(sector=pd.Categorical(frame["sector"])).to_parquet(path, index=False)
    a = quiet_fit(FORMULA, pd.read_parquet(path))
    b = quiet_fit(FORMULA, pl.read_parquet(path))
    assert pl.read_parquet(path).schema["sector"] == pl.Categorical
    assert a.xnames == b.xnames == ("(Intercept)", "sector[T.private]", "sector[T.public]", "cses")
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)


def test_parquet_written_by_polars(tmp_path, pl, hsb: pd.DataFrame) -> None:
    frame = pl.from_pandas(sectors(hsb)).with_columns(pl.col("sector").cast(pl.Categorical))
    path = tmp_path / "polars.parquet"
    frame.write_parquet(path)
    a = quiet_fit(FORMULA, tiers.read_data(path))
    b = quiet_fit(FORMULA, pl.read_parquet(path))
    c = quiet_fit(FORMULA, frame)
    assert a.xnames == b.xnames == c.xnames
    assert a.xnames[1] == "sector[T.private]"  # 'catholic', first in order, is the reference
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
    np.testing.assert_allclose(a.beta, c.beta, rtol=1e-10)


def test_polars_strings_and_enums(tmp_path, pl, hsb: pd.DataFrame) -> None:
    frame = sectors(hsb)
    strings = quiet_fit(FORMULA, pl.from_pandas(frame))
    assert strings.xnames == quiet_fit(FORMULA, frame).xnames
    order = ["public", "private", "catholic"]  # an Enum's declared order is the user's choice
    enum = pl.from_pandas(frame).with_columns(pl.col("sector").cast(pl.Enum(order)))
    path = tmp_path / "enum.parquet"
    enum.write_parquet(path)
    a = quiet_fit(FORMULA, pd.read_parquet(path))
    b = quiet_fit(FORMULA, pl.read_parquet(path))
    assert a.xnames == b.xnames
    assert a.xnames[1:3] == ("sector[T.private]", "sector[T.catholic]")
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
