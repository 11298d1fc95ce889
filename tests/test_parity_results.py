"""What an lme4, Stata or statsmodels user expects of a result (issue 12, items 2, 3, 4 and 16).

Fitted values that keep the data's index, a comparison table with every variance parameter, LR
tests that say what they test, and statsmodels' accessor names.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import tiers
from tiers.errors import ComparisonError, ConvergenceWarning, SingularFitWarning
from tiers.inference.lrtest import lrtest
from tiers.panel.estimators import random_effects
from tiers.report.comparison import compare

from .conftest import load_case

SLOPE = "mAch ~ meanses * cses + (cses | school)"
INTERCEPT = "mAch ~ meanses * cses + (1 | school)"


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    data, _ = load_case("hsb82")
    return data


@pytest.fixture(scope="module")
def shuffled(hsb) -> pd.DataFrame:
    return hsb.sample(frac=1.0, random_state=3)


@pytest.fixture(scope="module")
def slope(hsb):
    return tiers.fit(SLOPE, hsb)


# ------------------------------------------------------------- item 2: the data's index kept --


def test_fitted_on_shuffled_rows_aligns_with_the_data(hsb, shuffled, slope) -> None:
    res = tiers.fit(SLOPE, shuffled)
    d = shuffled.copy()
    d["fit"] = res.fitted()
    d["resid"] = res.residuals()
    d["pred"] = res.predict()["mean"]
    assert res.fitted().index.equals(shuffled.index)
    # the same rows in the original order give the same fitted value to every row label
    expected = slope.fitted()
    np.testing.assert_allclose(d["fit"].sort_index(), expected.sort_index(), atol=1e-6)
    np.testing.assert_allclose(d["pred"], d["fit"], rtol=0, atol=0)
    np.testing.assert_allclose(d["resid"], d["mAch"] - d["fit"], atol=1e-9)
    # the fitted values follow the school each row belongs to: the residual SD is sigma's size
    assert d["resid"].std() < 1.05 * res.sigma


def test_na_action_omit_and_exclude(shuffled) -> None:
    d = shuffled.copy()
    missing = d.index[[0, 5, 17, 400]]
    d.loc[missing, "cses"] = np.nan
    res = tiers.fit(SLOPE, d)
    omit = res.fitted()
    assert len(omit) == len(d) - 4 and omit.index.equals(d.index.drop(missing))
    full = res.fitted(na_action="exclude")
    assert full.index.equals(d.index)
    assert full.isna().sum() == 4 and full.loc[missing].isna().all()
    np.testing.assert_array_equal(full.dropna().to_numpy(), omit.to_numpy())
    resid = res.residuals(na_action="exclude")
    assert resid.index.equals(d.index) and resid.loc[missing].isna().all()
    np.testing.assert_allclose(resid.dropna(), (d["mAch"] - full).dropna(), atol=1e-9)
    band = res.predict(interval=True, na_action="exclude")
    assert band.index.equals(d.index) and band.loc[missing].isna().all().all()
    with pytest.raises(ValueError, match="na_action must be one of omit, exclude"):
        res.fitted(na_action="pass")


def test_predict_newdata_keeps_its_index(shuffled, slope) -> None:
    new = shuffled.iloc[:6].copy()
    new.index = [f"row{i}" for i in range(6)]
    new.loc["row2", "meanses"] = np.nan
    out = slope.predict(new, na_action="exclude")
    assert list(out.index) == list(new.index) and np.isnan(out.loc["row2", "mean"])
    kept = slope.predict(new)
    assert list(kept.index) == ["row0", "row1", "row3", "row4", "row5"]
    by_label = slope.fitted()
    np.testing.assert_allclose(kept["mean"], by_label.loc[shuffled.index[[0, 1, 3, 4, 5]]])


# -------------------------------------------------- item 3: every variance parameter compared --


def test_compare_has_one_row_per_variance_parameter(hsb, slope) -> None:
    _, ref = load_case("hsb82")
    spec = ref["fits"]["rs_REML"]
    ri = tiers.fit(INTERCEPT, hsb)
    table = compare(ri, slope, names=["ri", "rs"])
    sds = {(r["group"], r["term"]): r["sd"] for r in spec["random_effects"]}
    assert table.loc["sd:school:(Intercept)", "rs"] == pytest.approx(
        sds["school", "(Intercept)"], rel=1e-4
    )
    assert table.loc["sd:school:cses", "rs"] == pytest.approx(sds["school", "cses"], rel=1e-4)
    corr = spec["correlations"][0]["correlation"]
    assert table.loc["corr:school:cses,(Intercept)", "rs"] == pytest.approx(corr, rel=1e-4)
    assert table.loc["sd:Residual", "rs"] == pytest.approx(spec["residual_sd"], rel=1e-4)
    assert table.loc["sd:school:(Intercept)", "ri"] == pytest.approx(ri.varcorr["sd"].iloc[0])
    assert np.isnan(table.loc["sd:school:cses", "ri"])
    assert np.isnan(table.loc["corr:school:cses,(Intercept)", "ri"])
    variance_rows = [k for k in table.index if k.startswith(("sd:", "corr:"))]
    assert variance_rows == [
        "sd:school:(Intercept)",
        "sd:school:cses",
        "corr:school:cses,(Intercept)",
        "sd:Residual",
    ]


def test_compare_names_nested_crossed_and_panel_rows(hsb) -> None:
    pastes, _ = load_case("pastes")
    penicillin, _ = load_case("penicillin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        nested = tiers.fit("strength ~ 1 + (1 | batch/cask)", pastes)
    rows = [k for k in compare(nested).index if k.startswith("sd:")]
    assert rows == ["sd:batch:(Intercept)", "sd:cask:batch:(Intercept)", "sd:Residual"]
    crossed = tiers.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin)
    table = compare(crossed)
    for _, row in crossed.varcorr.iloc[:-1].iterrows():
        assert table.loc[f"sd:{row.group}:(Intercept)", "m1"] == pytest.approx(row.sd)
    panel = random_effects(hsb, "mAch", ["meanses", "cses"], "school")
    mixed = tiers.fit("mAch ~ meanses + cses + (1 | school)", hsb)
    both = compare(panel, mixed, names=["re", "mixed"])
    assert both.loc["sd:school:(Intercept)", "re"] == pytest.approx(panel.sigma_u)
    assert both.loc["sd:school:(Intercept)", "mixed"] == pytest.approx(mixed.varcorr["sd"].iloc[0])


# ----------------------------------------------------------- item 4: LR tests term by term --


def test_lrtest_random_slope_is_a_mixture_not_a_fixed_effects_test(hsb, slope) -> None:
    ri = tiers.fit(INTERCEPT, hsb)
    t = lrtest(ri, slope)
    lr = 2.0 * (slope.loglik - ri.loglik)
    assert t.chi2 == pytest.approx(lr) and t.df == 2
    assert t.test == "0.5 chi2(1) + 0.5 chi2(2)"
    assert t.p_value == pytest.approx(0.5 * stats.chi2.sf(lr, 1) + 0.5 * stats.chi2.sf(lr, 2))
    assert "fixed effects differ" not in t.reason
    assert "variance of cses on school" in t.reason and not t.conservative
    assert lrtest(slope, ri).p_value == t.p_value  # the order does not matter


def test_lrtest_covariance_only_is_plain_chi2(hsb, slope) -> None:
    uncorr = tiers.fit("mAch ~ meanses * cses + (cses || school)", hsb)
    t = lrtest(uncorr, slope)
    assert t.test == "chi2(1)" and t.p_value == pytest.approx(stats.chi2.sf(t.chi2, 1))
    assert "covariance of (Intercept) and cses on school" in t.reason
    assert "fixed effects differ" not in t.reason


def test_lrtest_fixed_and_random_parts_both_differ(hsb) -> None:
    m0 = tiers.fit("mAch ~ meanses + cses + (1 | school)", hsb, reml=False)
    m1 = tiers.fit(SLOPE, hsb, reml=False)
    t = lrtest(m0, m1)
    assert t.df == 3 and t.test == "0.5 chi2(2) + 0.5 chi2(3)"
    assert t.p_value == pytest.approx(
        0.5 * stats.chi2.sf(t.chi2, 2) + 0.5 * stats.chi2.sf(t.chi2, 3)
    )
    assert "1 fixed effect(s)" in t.reason and "variance of cses on school" in t.reason
    assert "Only fixed effects differ" not in t.reason


def test_lrtest_several_variances_is_conservative_and_offers_the_bootstrap(seed_small) -> None:
    m0 = tiers.fit("perform ~ tutoring + (1 | dist_id)", seed_small)
    m1 = tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id)", seed_small)
    t = lrtest(m0, m1)
    assert t.test == "chi2(2)" and t.conservative
    assert t.p_value == pytest.approx(stats.chi2.sf(t.chi2, 2))
    assert "conservative" in t.reason and "method='bootstrap'" in t.reason
    assert "fixed effects differ" not in t.reason


def test_lrtest_crossed_models_nested_by_their_terms() -> None:
    data, _ = load_case("penicillin")
    plate = tiers.fit("diameter ~ 1 + (1 | plate)", data)
    sample = tiers.fit("diameter ~ 1 + (1 | sample)", data)
    both = tiers.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    t = lrtest(plate, both)
    assert t.test == "chibar2(01)"
    assert t.p_value == pytest.approx(0.5 * stats.chi2.sf(t.chi2, 1))
    assert "variance of (Intercept) on sample" in t.reason
    assert lrtest(sample, both).test == "chibar2(01)"
    with pytest.raises(ComparisonError, match="not nested.*plate"):
        lrtest(plate, sample)


def test_lrtest_negative_statistic_is_reported(hsb) -> None:
    ri = tiers.fit(INTERCEPT, hsb)
    design = tiers.prepare(SLOPE, hsb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off = tiers.assemble(design, [0.05, 0.0, 0.05], reml=True, warn=False)
    assert off.loglik < ri.loglik  # the larger model, far from its optimum
    with pytest.warns(ConvergenceWarning, match="below the smaller one's"):
        t = lrtest(ri, off)
    assert t.chi2 == 0.0 and t.p_value == 1.0
    assert "LR = -" in t.reason and "did not reach" in t.reason


# ------------------------------------------------------------- item 16: statsmodels' names --


def test_statsmodels_aliases(shuffled) -> None:
    res = tiers.fit(SLOPE, shuffled)
    table = res.coef_table()
    pd.testing.assert_series_equal(res.params, res.fixef)
    pd.testing.assert_series_equal(res.bse, res.std_errors)
    np.testing.assert_array_equal(res.tvalues, table["z"])
    np.testing.assert_array_equal(res.pvalues, table["p_value"])
    assert list(res.tvalues.index) == list(res.xnames)
    ci = res.conf_int(alpha=0.1)
    assert list(ci.columns) == [0, 1]
    np.testing.assert_allclose(ci[0], res.coef_table(level=0.9)["ci_lower"])
    np.testing.assert_allclose(ci[1], res.coef_table(level=0.9)["ci_upper"])
    np.testing.assert_allclose(res.conf_int()[1], table["ci_upper"])
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        res.conf_int(alpha=5)
    assert res.llf == res.loglik
    pd.testing.assert_series_equal(res.fittedvalues, res.fitted())
    pd.testing.assert_series_equal(res.resid, res.residuals())
    assert res.fittedvalues.index.equals(shuffled.index)
    pd.testing.assert_frame_equal(res.cov_params(), res.vcov)


def test_random_effects_in_statsmodels_shape(slope) -> None:
    frame = slope.ranef(cond_var=False)["school"]
    re = slope.random_effects
    assert len(re) == 160 and set(re) == set(frame.index)
    label = frame.index[7]
    pd.testing.assert_series_equal(re[label], frame.loc[label], check_names=False)
    assert list(re[label].index) == ["(Intercept)", "cses"]
    data, _ = load_case("penicillin")
    crossed = tiers.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    keys = crossed.random_effects
    frames = crossed.ranef(cond_var=False)
    assert len(keys) == sum(len(f) for f in frames.values())
    first = frames["sample"].index[0]
    assert keys["sample", first]["(Intercept)"] == frames["sample"].loc[first, "(Intercept)"]
