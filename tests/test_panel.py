"""Panel estimators (tiers.panel, tiers.panel_tests) against plm 2.6-2 on sleepstudy, plus
behaviour checks: collinearity notes, errors, unbalanced panels, cluster sandwiches, Hausman."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiers.errors import ComparisonError, DataError
from tiers.panel.estimators import fixed_effects, pooled_ols, random_effects
from tiers.panel.hausman import hausman

REF_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
RTOL = 1e-8  # closed-form estimators: only floating-point noise separates us from plm


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    return pd.read_csv(REF_DIR / "sleepstudy.csv")


@pytest.fixture(scope="module")
def ref() -> dict:
    with open(REF_DIR / "sleepstudy.json") as fh:
        return json.load(fh)["panel"]


@pytest.fixture(scope="module")
def fe(sleep, ref):
    return fixed_effects(sleep, "Reaction", ["Days"], ref["id"])


@pytest.fixture(scope="module")
def re_(sleep, ref):
    return random_effects(sleep, "Reaction", ["Days"], ref["id"])


@pytest.fixture(scope="module")
def unbalanced(sleep) -> pd.DataFrame:
    """sleepstudy minus the first (i mod 4) days of subject i, plus a time-varying noise
    regressor z and a time-invariant one (age)."""
    subjects = sorted(sleep["Subject"].unique())
    skip = {s: i % 4 for i, s in enumerate(subjects)}
    d = sleep[sleep["Days"] >= sleep["Subject"].map(skip)].reset_index(drop=True)
    d["z"] = np.random.default_rng(1).normal(size=len(d))
    d["age"] = d["Subject"].map({s: 20 + i for i, s in enumerate(subjects)})
    return d


def close(actual, expected, rtol=RTOL):
    assert actual == pytest.approx(expected, rel=rtol), (actual, expected)


# ---- fixed effects vs plm "within" ----------------------------------------------------------


def test_fe_coefficients_match_plm(fe, ref):
    for c in ref["FE"]["coefficients"]:
        row = fe.coef.loc[c["name"]]
        close(row.estimate, c["estimate"])
        close(row.std_error, c["std_error"])
        close(row.stat, c["t_or_z_value"])
        # xtreg fe and plm both use t(N - n - K)
        close(row.p_value, c["p_value_t_df_residual"])
        close(row.p_value, c["p_value_plm"])
    assert fe.df_resid == ref["FE"]["df_residual"]


def test_fe_scalars_match_reference(fe, ref):
    r = ref["FE"]
    assert (fe.nobs, fe.ngroups, fe.nobs_dropped) == (ref["nobs"], ref["ngroups"], 0)
    close(fe.sigma_e, r["sigma_e"])
    close(fe.sigma_u, r["sigma_u_sd_over_groups"])  # Stata's xtreg fe definition
    close(fe.sigma_u_over_obs, r["sigma_u_sd_over_observations"])
    close(fe.rho, r["rho_using_sd_over_groups"])
    close(fe.coef.loc["_cons", "estimate"], r["stata_style_cons"])
    assert fe.corr_u_xb == pytest.approx(r["corr_u_xb"], abs=1e-10)
    close(fe.r2_plm, r["plm_r_squared"])
    close(fe.r2_plm_adj, r["plm_adj_r_squared"])


def test_fe_r2_match_reference(fe, ref):
    r2 = ref["FE"]["stata_style_r2"]
    close(fe.r2_within, r2["within"])
    close(fe.r2_overall, r2["overall"])
    assert r2["between"] is None and fe.r2_between is None  # group means of Days all equal


def test_fe_f_test_matches_plm(fe, ref):
    f = ref["FE"]["F_test_all_u_i_zero"]
    close(fe.f_test.F, f["F"])
    assert (fe.f_test.df1, fe.f_test.df2) == (f["df1"], f["df2"])
    close(fe.f_test.p_value, f["p_value"])


def test_fe_cons_se_is_lsdv_contrast(sleep, fe):
    """Stata's _cons = sum_i (T_i / N) alpha_i in the dummy-variable (LSDV) regression; its SE
    from the LSDV covariance must equal the one reported (Var = s2/N + xbar' V_b xbar)."""
    ids, codes = np.unique(sleep["Subject"], return_inverse=True)
    D = np.eye(len(ids))[codes]
    X = np.column_stack([sleep["Days"].to_numpy(float), D])
    y = sleep["Reaction"].to_numpy(float)
    b = np.linalg.lstsq(X, y, rcond=None)[0]
    e = y - X @ b
    V = (e @ e) / (len(y) - X.shape[1]) * np.linalg.inv(X.T @ X)
    a = np.concatenate([[0.0], D.sum(axis=0) / len(y)])
    close(fe.coef.loc["_cons", "estimate"], a @ b)
    close(fe.coef.loc["_cons", "std_error"], np.sqrt(a @ V @ a))


# ---- random effects vs plm "random" (Swamy-Arora) --------------------------------------------


def test_re_coefficients_match_plm(re_, ref):
    for c in ref["RE"]["coefficients"]:
        name = "_cons" if c["name"] == "(Intercept)" else c["name"]
        row = re_.coef.loc[name]
        close(row.estimate, c["estimate"])
        close(row.std_error, c["std_error"])
        close(row.stat, c["t_or_z_value"])
        close(row.p_value, c["p_value_plm"])  # plm: normal for random
        close(row.p_value, c["p_value_normal"])
    assert re_.df_resid is None


def test_re_components_match_plm(re_, ref):
    r = ref["RE"]
    close(re_.sigma_e**2, r["sigma2_idios"])
    close(re_.sigma_u**2, r["sigma2_id"])
    close(re_.sigma_e, r["sigma_e"])
    close(re_.sigma_u, r["sigma_u"])
    close(re_.rho, r["rho"])
    close(re_.theta, r["theta"])
    close(re_.r2_plm, r["plm_r_squared"])
    close(re_.r2_plm_adj, r["plm_adj_r_squared"])
    close(re_.r2_within, r["stata_style_r2"]["within"])
    close(re_.r2_overall, r["stata_style_r2"]["overall"])
    assert r["stata_style_r2"]["between"] is None and re_.r2_between is None


def test_re_slope_equals_fe_slope_when_balanced(fe, re_):
    close(re_.coef.loc["Days", "estimate"], fe.coef.loc["Days", "estimate"], rtol=1e-12)


def test_to_dict_is_json_and_has_keys(fe, re_):
    for res in (fe, re_):
        d = json.loads(json.dumps(res.to_dict()))
        for key in (
            "estimator",
            "coefficients",
            "sigma_u",
            "sigma_e",
            "rho",
            "theta",
            "r2",
            "f_test",
            "nobs",
            "ngroups",
            "notes",
        ):
            assert key in d
        assert set(d["coefficients"][0]) >= {"name", "estimate", "std_error", "stat", "p_value"}
    assert fe.to_dict()["f_test"]["df1"] == 17
    assert re_.to_dict()["theta"] == pytest.approx(re_.theta)
    assert fe.to_dict()["r2"]["between"] is None


def test_results_are_frozen_and_summaries_render(fe, re_):
    with pytest.raises(dataclasses.FrozenInstanceError):
        fe.sigma_u = 0.0  # type: ignore[misc]
    s = fe.summary()
    assert "Fixed-effects (within) regression" in s and "F test that all u_i=0" in s
    assert "sigma_u" in s and "_cons" in s
    assert "Random-effects GLS regression" in re_.summary()


# ---- collinearity, errors, missing values ---------------------------------------------------


def test_time_invariant_regressor_dropped_with_note(sleep, fe):
    d = sleep.assign(age=sleep["Subject"] % 7 + 20.0)
    res = fixed_effects(d, "Reaction", ["Days", "age"], "Subject")
    assert "note: age omitted because of collinearity" in res.notes
    assert res.omitted == ("age",)
    assert list(res.coef.index) == ["Days", "_cons"]
    close(res.coef.loc["Days", "std_error"], fe.coef.loc["Days", "std_error"], rtol=1e-12)
    # RE keeps a time-invariant regressor
    assert "age" in random_effects(d, "Reaction", ["Days", "age"], "Subject").coef.index


def test_collinear_time_varying_regressor_dropped(sleep):
    d = sleep.assign(Days2=2.0 * sleep["Days"] + 1.0)
    res = fixed_effects(d, "Reaction", ["Days", "Days2"], "Subject")
    assert res.omitted == ("Days2",)
    assert "note: Days2 omitted because of collinearity" in res.notes


def test_one_observation_per_id_raises(sleep):
    d = sleep.groupby("Subject", as_index=False).first()
    with pytest.raises(DataError, match=r"repeated observations.*'Subject'"):
        fixed_effects(d, "Reaction", ["Days"], "Subject")


def test_unknown_and_non_numeric_columns(sleep):
    with pytest.raises(DataError, match="'Nope'"):
        fixed_effects(sleep, "Reaction", ["Nope"], "Subject")
    with pytest.raises(DataError, match="'Who'"):
        random_effects(sleep, "Reaction", ["Days"], "Who")
    d = sleep.assign(label=sleep["Days"].astype(str))
    with pytest.raises(DataError, match="'label'.*not numeric"):
        pooled_ols(d, "Reaction", ["label"])


def test_missing_rows_dropped_and_counted(sleep, fe):
    d = sleep.astype({"Subject": object}).copy()
    d.loc[3, "Reaction"] = np.nan
    d.loc[17, "Days"] = np.nan
    d.loc[40, "Subject"] = None
    res = fixed_effects(d, "Reaction", ["Days"], "Subject")
    assert (res.nobs, res.nobs_dropped, res.ngroups) == (177, 3, 18)
    clean = fixed_effects(d.drop(index=[3, 17, 40]), "Reaction", ["Days"], "Subject")
    close(res.coef.loc["Days", "estimate"], clean.coef.loc["Days", "estimate"], rtol=1e-12)
    assert res.to_dict()["nobs_dropped"] == 3


def test_mapping_of_arrays_accepted(sleep, fe):
    data = {c: sleep[c].to_numpy() for c in sleep.columns}
    res = fixed_effects(data, "Reaction", ["Days"], "Subject")
    close(res.coef.loc["Days", "estimate"], fe.coef.loc["Days", "estimate"], rtol=1e-12)


# ---- unbalanced panels, Hausman -------------------------------------------------------------


def test_unbalanced_re_has_per_group_theta(unbalanced):
    res = random_effects(unbalanced, "Reaction", ["Days", "z", "age"], "Subject")
    assert res.theta is None
    th = res.theta_i
    assert th.nunique() > 1
    Ti = unbalanced.groupby("Subject").size().reindex(th.index).to_numpy()
    expected = 1 - np.sqrt(res.sigma_e**2 / (Ti * res.sigma_u**2 + res.sigma_e**2))
    np.testing.assert_allclose(th.to_numpy(), expected, rtol=1e-12)
    assert th[Ti == Ti.max()].iloc[0] > th[Ti == Ti.min()].iloc[0]  # more rows, more demeaning
    summ = res.to_dict()["theta"]
    assert summ["min"] < summ["median"] < summ["max"]


def test_hausman_sleepstudy_is_finite(fe, re_):
    h = hausman(fe, re_)
    assert np.isfinite(h.chi2) and h.p_value is not None and 0 <= h.p_value <= 1
    assert h.coefficients == ("Days",)
    json.dumps(h.to_dict())


def test_hausman_unbalanced(unbalanced):
    x = ["Days", "z", "age"]
    fe = fixed_effects(unbalanced, "Reaction", x, "Subject")
    re_ = random_effects(unbalanced, "Reaction", x, "Subject")
    h = hausman(fe, re_)
    assert h.coefficients == ("Days", "z") and h.df == 2
    assert np.isfinite(h.chi2) and h.chi2 > 0 and 0 < h.p_value < 1
    d = fe.coef.loc[["Days", "z"], "estimate"] - re_.coef.loc[["Days", "z"], "estimate"]
    M = fe.vcov.loc[["Days", "z"], ["Days", "z"]] - re_.vcov.loc[["Days", "z"], ["Days", "z"]]
    close(h.chi2, float(d @ np.linalg.solve(M.to_numpy(), d.to_numpy())), rtol=1e-10)
    with pytest.raises(ComparisonError):
        hausman(re_, fe)
    with pytest.raises(ComparisonError):
        hausman(fixed_effects(unbalanced, "Reaction", x, "Subject", vce="cluster"), re_)


# ---- cluster-robust standard errors ----------------------------------------------------------

SMALL = pd.DataFrame(
    {
        "g": [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5],
        "x": [1.0, 2.0, 4.0, 0.0, 1.0, 3.0, 2.0, 2.5, 5.0, 1.0, 4.0, 6.0, 3.0, 1.0],
        "w": [0.5, 0.1, 0.3, 1.0, 0.0, 0.7, 0.2, 0.9, 0.4, 0.3, 0.8, 0.1, 0.6, 0.5],
        "y": [3.0, 4.5, 7.0, 1.0, 2.5, 5.5, 6.0, 6.0, 9.5, 2.0, 6.5, 9.0, 5.0, 4.0],
    }
)


def sandwich(X: np.ndarray, e: np.ndarray, groups: np.ndarray, k_adj: int) -> np.ndarray:
    """(X'X)^-1 [sum_g X_g' e_g e_g' X_g] (X'X)^-1 * G/(G-1) * (N-1)/(N-k_adj), by a loop."""
    bread = np.linalg.inv(X.T @ X)
    meat = np.zeros((X.shape[1], X.shape[1]))
    labels = np.unique(groups)
    for lab in labels:
        s = X[groups == lab].T @ e[groups == lab]
        meat += np.outer(s, s)
    G, N = len(labels), len(e)
    return G / (G - 1) * (N - 1) / (N - k_adj) * bread @ meat @ bread


def test_pooled_cluster_matches_explicit_sandwich():
    X = np.column_stack([SMALL["x"], SMALL["w"], np.ones(len(SMALL))])
    y = SMALL["y"].to_numpy()
    b = np.linalg.solve(X.T @ X, X.T @ y)
    V = sandwich(X, y - X @ b, SMALL["g"].to_numpy(), k_adj=3)
    res = pooled_ols(SMALL, "y", ["x", "w"], vce="cluster", cluster="g")
    np.testing.assert_allclose(res.coef["estimate"], b, rtol=1e-12)
    np.testing.assert_allclose(res.coef["std_error"], np.sqrt(np.diag(V)), rtol=1e-10)
    assert res.df_resid == 4  # t(G - 1)


def test_fe_cluster_matches_lsdv_sandwich():
    """Dummy-variable regression with its own cluster sandwich; Stata's xtreg fe counts K =
    slopes + constant, not the absorbed dummies, in (N-1)/(N-K)."""
    g = SMALL["g"].to_numpy()
    D = (g[:, None] == np.unique(g)[None, :]).astype(float)
    X = np.column_stack([SMALL["x"], SMALL["w"], D])
    y = SMALL["y"].to_numpy()
    b = np.linalg.lstsq(X, y, rcond=None)[0]
    V = sandwich(X, y - X @ b, g, k_adj=3)
    res = fixed_effects(SMALL, "y", ["x", "w"], "g", vce="cluster")
    np.testing.assert_allclose(res.coef.loc[["x", "w"], "estimate"], b[:2], rtol=1e-10)
    np.testing.assert_allclose(
        res.coef.loc[["x", "w"], "std_error"], np.sqrt(np.diag(V)[:2]), rtol=1e-10
    )
    a = np.concatenate([[0.0, 0.0], D.sum(axis=0) / len(y)])  # _cons as an LSDV contrast
    close(res.coef.loc["_cons", "std_error"], np.sqrt(a @ V @ a), rtol=1e-10)
    assert res.df_resid == 4 and res.f_test is None


def test_re_cluster_matches_sandwich_on_transformed_data():
    res = random_effects(SMALL, "y", ["x", "w"], "g", vce="cluster")
    conv = random_effects(SMALL, "y", ["x", "w"], "g")
    g = SMALL["g"].to_numpy()
    th = res.theta_i.loc[g].to_numpy()
    means = SMALL.groupby("g")[["x", "w", "y"]].transform("mean").to_numpy()
    raw = SMALL[["x", "w", "y"]].to_numpy()
    star = raw - th[:, None] * means
    X = np.column_stack([star[:, :2], 1.0 - th])
    b = np.linalg.solve(X.T @ X, X.T @ star[:, 2])
    V = sandwich(X, star[:, 2] - X @ b, g, k_adj=3)
    np.testing.assert_allclose(res.coef["estimate"], b, rtol=1e-10)
    np.testing.assert_allclose(res.coef["std_error"], np.sqrt(np.diag(V)), rtol=1e-10)
    np.testing.assert_allclose(res.coef["estimate"], conv.coef["estimate"], rtol=1e-12)


def test_pooled_conventional_matches_textbook_ols():
    X = np.column_stack([SMALL["x"], SMALL["w"], np.ones(len(SMALL))])
    y = SMALL["y"].to_numpy()
    b = np.linalg.solve(X.T @ X, X.T @ y)
    e = y - X @ b
    se = np.sqrt(np.diag((e @ e) / (len(y) - 3) * np.linalg.inv(X.T @ X)))
    res = pooled_ols(SMALL, "y", ["x", "w"])
    np.testing.assert_allclose(res.coef["std_error"], se, rtol=1e-10)
    close(res.r2_overall, 1 - (e @ e) / np.sum((y - y.mean()) ** 2), rtol=1e-12)
    with pytest.raises(ValueError):
        pooled_ols(SMALL, "y", ["x"], vce="cluster")
