"""compare() and lrtest(): honest comparisons, refusals with reasons."""

from __future__ import annotations

import numpy as np
import pytest

import tiers
from tiers.errors import ComparisonError
from tiers.inference.lrtest import lrtest
from tiers.panel.estimators import fixed_effects, random_effects
from tiers.report.comparison import compare

FULL = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
NO_X = "perform ~ 1 + (1 | dist_id/school_id/teach_id/student_id)"
THREE = "perform ~ tutoring + (1 | school_id/teach_id/student_id)"


def test_lrtest_refuses_reml_with_different_fixed_effects(seed_small) -> None:
    m0, m1 = tiers.fit(NO_X, seed_small), tiers.fit(FULL, seed_small)
    with pytest.raises(ComparisonError, match="REML.*different fixed effects.*ML"):
        lrtest(m0, m1)


def test_lrtest_refit_by_ml_matches_ml_fits(seed_small) -> None:
    m0, m1 = tiers.fit(NO_X, seed_small), tiers.fit(FULL, seed_small)
    test = lrtest(m0, m1, refit=True)
    ml0, ml1 = tiers.fit(NO_X, seed_small, reml=False), tiers.fit(FULL, seed_small, reml=False)
    np.testing.assert_allclose(test.chi2, 2 * (ml1.loglik - ml0.loglik), rtol=1e-9)
    assert test.refitted and test.df == 1 and test.test == "chi2(1)"


def test_lrtest_variance_component_uses_chibar2(seed_small) -> None:
    m0, m1 = tiers.fit(THREE, seed_small), tiers.fit(FULL, seed_small)
    test = lrtest(m0, m1)
    assert test.test == "chibar2(01)"
    from scipy import stats

    np.testing.assert_allclose(test.p_value, 0.5 * stats.chi2.sf(test.chi2, 1), rtol=1e-12)
    assert "boundary" in test.reason


def test_lrtest_refuses_different_rows(seed_small) -> None:
    m1 = tiers.fit(FULL, seed_small)
    m0 = tiers.fit(THREE, seed_small.iloc[:-10])
    with pytest.raises(ComparisonError, match="different rows"):
        lrtest(m0, m1)


def test_lrtest_refuses_mixed_criteria(seed_small) -> None:
    with pytest.raises(ComparisonError, match="REML and the other by ML"):
        lrtest(tiers.fit(THREE, seed_small), tiers.fit(FULL, seed_small, reml=False))


def test_compare_table(seed_small) -> None:
    fe = fixed_effects(seed_small, "perform", ["tutoring"], "student_id")
    re = random_effects(seed_small, "perform", ["tutoring"], "student_id")
    mixed = tiers.fit(FULL, seed_small)
    table = compare(fe, re, mixed, names=["FE", "RE", "mixed"])
    assert list(table.columns) == ["FE", "RE", "mixed"]
    assert table.loc["b:tutoring", "mixed"] == pytest.approx(mixed.fixef["tutoring"])
    assert table.loc["se:tutoring", "FE"] == pytest.approx(fe.coef.loc["tutoring", "std_error"])
    assert table.loc["N"].tolist() == [8000, 8000, 8000]
    assert table.loc["method", "mixed"] == "REML"
    assert np.isnan(table.loc["ll", "FE"])


def test_compare_refuses_different_rows(seed_small) -> None:
    with pytest.raises(ComparisonError, match="different numbers of rows"):
        compare(tiers.fit(FULL, seed_small), tiers.fit(FULL, seed_small.iloc[:-2]))
