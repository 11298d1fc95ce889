"""Invariances a correct fit must have: row order, id labels, affine changes of the response."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiers

FORMULA = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    # Unbalanced on purpose (some students lose a semester) so the general path is exercised too.
    df = tiers.simulate(tiers.seed_design(districts=4), seed=11)
    keep = np.random.default_rng(0).random(len(df)) > 0.15
    return df.loc[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def base(data: pd.DataFrame) -> tiers.LmmResult:
    return tiers.fit(FORMULA, data)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_row_order_changes_nothing(data, base, seed: int) -> None:
    shuffled = data.sample(frac=1.0, random_state=seed % 2**32).reset_index(drop=True)
    res = tiers.fit(FORMULA, shuffled)
    np.testing.assert_allclose(res.criterion, base.criterion, rtol=1e-11)
    np.testing.assert_allclose(res.theta, base.theta, atol=1e-7)
    np.testing.assert_allclose(res.fixef, base.fixef, rtol=1e-7)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), as_text=st.booleans())
def test_relabelling_ids_changes_nothing(data, base, seed: int, as_text: bool) -> None:
    rng = np.random.default_rng(seed)
    relabelled = data.copy()
    for col in ["dist_id", "school_id", "teach_id", "student_id"]:
        uniq = relabelled[col].unique()
        new = rng.permutation(len(uniq)) + 1000
        mapping = dict(zip(uniq, (f"g{v}" for v in new) if as_text else new, strict=True))
        relabelled[col] = relabelled[col].map(mapping)
    res = tiers.fit(FORMULA, relabelled)
    np.testing.assert_allclose(res.criterion, base.criterion, rtol=1e-11)
    np.testing.assert_allclose(res.theta, base.theta, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(
    a=st.floats(0.01, 100.0) | st.floats(-100.0, -0.01),
    c=st.floats(-1e3, 1e3),
    reml=st.booleans(),
)
def test_affine_response(data, a: float, c: float, reml: bool) -> None:
    ref = tiers.fit(FORMULA, data, reml=reml)
    moved = data.assign(perform=a * data["perform"] + c)
    res = tiers.fit(FORMULA, moved, reml=reml)
    np.testing.assert_allclose(res.theta, ref.theta, atol=1e-6)
    np.testing.assert_allclose(res.sigma, abs(a) * ref.sigma, rtol=1e-6)
    np.testing.assert_allclose(
        res.varcorr["sd"], abs(a) * ref.varcorr["sd"], rtol=1e-5, atol=1e-8 * abs(a)
    )
    np.testing.assert_allclose(res.fixef["tutoring"], a * ref.fixef["tutoring"], rtol=1e-6)
    # -2 log L shifts by 2 nu log|a| (nu = n - p for REML, n for ML)
    nu = res.nobs - len(res.xnames) if reml else res.nobs
    np.testing.assert_allclose(res.criterion, ref.criterion + 2 * nu * np.log(abs(a)), rtol=1e-9)
