"""Models with nested grouping (random intercepts, slopes, covariance structures) against lme4
1.1-31 (../shared/reference)."""

from __future__ import annotations

import numpy as np
import pytest

import tiers
from tiers.errors import SingularFitWarning

from .conftest import fit_reference, load_case
from .tolerances import (
    BETA_ATOL_SE,
    BETA_RTOL,
    DEVIANCE_AT_THETA_RTOL,
    OPTIMUM_NOT_WORSE_RTOL,
    OPTIMUM_WITHIN_RTOL,
    SE_RTOL,
    THETA_ATOL,
)

# Every reference model whose grouping factors nest (a single factor nests trivially).
CASES = [
    ("sleepstudy", "corr_REML"),
    ("sleepstudy", "corr_ML"),
    ("sleepstudy", "uncorr_REML"),
    ("sleepstudy", "uncorr_ML"),
    ("exam", "rs_REML"),
    ("exam", "rs_ML"),
    ("hsb82", "rs_REML"),
    ("hsb82", "rs_ML"),
    ("dyestuff", "ri_REML"),
    ("dyestuff", "ri_ML"),
    ("dyestuff2", "ri_REML"),
    ("dyestuff2", "ri_ML"),
    ("pastes", "nested_REML"),
    ("pastes", "nested_ML"),
    ("exam", "ri_REML"),
    ("exam", "ri_ML"),
]


_fit = fit_reference


def _criterion(spec: dict) -> float:
    crit = spec["criteria"]
    return crit["REML_criterion"] if spec["method"] == "REML" else crit["deviance"]


def _theta_by_level(res, spec) -> tuple[np.ndarray, np.ndarray]:
    """lme4's theta reordered to tiers' theta (matched by lme4's parameter names)."""
    names = res.to_dict()["theta_names"]
    return np.asarray(res.theta), np.array([spec["theta"][n] for n in names])


@pytest.mark.parametrize(("case", "key"), CASES)
def test_deviance_at_reference_theta(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    _, theta_ref = _theta_by_level(res, spec)
    devfun = tiers.deviance_function(
        tiers.prepare(spec["formula"], load_case(case)[0]), reml=res.reml
    )
    got = devfun.deviance(theta_ref)
    np.testing.assert_allclose(got, _criterion(spec), rtol=DEVIANCE_AT_THETA_RTOL)


@pytest.mark.parametrize(("case", "key"), CASES)
def test_optimum(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    ref = _criterion(spec)
    assert res.criterion <= ref + OPTIMUM_NOT_WORSE_RTOL * abs(ref)
    np.testing.assert_allclose(res.criterion, ref, rtol=OPTIMUM_WITHIN_RTOL)
    assert res.converged
    assert res.method == spec["method"]


@pytest.mark.parametrize(("case", "key"), CASES)
def test_parameters(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    theta, theta_ref = _theta_by_level(res, spec)
    np.testing.assert_allclose(theta, theta_ref, atol=THETA_ATOL)
    fe = {f["name"]: f for f in spec["fixed_effects"]}
    assert list(res.xnames) == list(fe)
    # a coefficient near zero is compared on the scale of its SE (lme4 stops ~1e-5 SE away)
    np.testing.assert_allclose(
        res.fixef.to_numpy(),
        [fe[n]["estimate"] for n in res.xnames],
        rtol=BETA_RTOL,
        atol=BETA_ATOL_SE * res.std_errors.min(),
    )
    np.testing.assert_allclose(
        res.std_errors.to_numpy(), [fe[n]["std_error"] for n in res.xnames], rtol=SE_RTOL
    )
    vcov_ref = np.asarray(spec["vcov_fixed"]["values"])
    np.testing.assert_allclose(res.vcov.to_numpy(), vcov_ref, rtol=2 * SE_RTOL)
    np.testing.assert_allclose(res.sigma, spec["residual_sd"], rtol=SE_RTOL)
    # lme4 names the second block of (x || g) "g.1"; the residual's term is null
    sds = {
        (r["group"].removesuffix(".1"), r["term"] or ""): r["sd"] for r in spec["random_effects"]
    }
    vc = res.varcorr
    assert len(vc) == len(sds)
    for _, row in vc.iterrows():
        np.testing.assert_allclose(
            row.sd, sds[(row.group, row.term)], rtol=SE_RTOL, atol=THETA_ATOL * res.sigma
        )
    corr = {
        (c["group"], frozenset((c["term1"], c["term2"]))): c["correlation"]
        for c in spec["correlations"]
    }
    ours = res.correlations
    assert len(ours) == len(corr)
    for _, row in ours.iterrows():
        key = (row.group, frozenset((row.term1, row.term2)))
        np.testing.assert_allclose(row.correlation, corr[key], atol=10 * THETA_ATOL)


@pytest.mark.parametrize(("case", "key"), CASES)
def test_counts_and_criteria(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    assert res.nobs == spec["nobs"]
    assert res.ngroups == spec["ngroups"]
    crit = spec["criteria"]
    assert res.n_params == crit["logLik_df"]
    np.testing.assert_allclose(res.loglik, crit["logLik"], rtol=OPTIMUM_WITHIN_RTOL)
    np.testing.assert_allclose(res.aic, crit["AIC"], rtol=OPTIMUM_WITHIN_RTOL)
    np.testing.assert_allclose(res.bic, crit["BIC"], rtol=OPTIMUM_WITHIN_RTOL)
    # LR test against the linear model, same criterion (Stata's "LR test vs. linear model")
    np.testing.assert_allclose(res.lr_linear.chi2, crit["LR_vs_linear_chi2"], rtol=1e-5, atol=1e-6)
    if spec["method"] == "REML":
        np.testing.assert_allclose(
            res.deviance_ml(), crit["deviance_ML_at_REML_estimates"], rtol=1e-6
        )


@pytest.mark.parametrize(("case", "key"), CASES)
def test_singular_flag(case: str, key: str) -> None:
    res, spec = _fit(case, key)
    assert res.is_singular == spec["isSingular"]
    if spec["isSingular"]:
        # lme4 reports the boundary fit with theta exactly 0; so do we, and we say it in words.
        assert np.all(np.asarray(res.theta) == 0.0)
        assert any("singular" in w and "zero" in w for w in res.warnings)


def test_singular_fit_warns() -> None:
    data, ref = load_case("dyestuff2")
    with pytest.warns(SingularFitWarning, match="Batch"):
        tiers.fit("Yield ~ 1 + (1 | Batch)", data)


def test_pastes_implicit_nesting_forms_30_groups() -> None:
    data, _ = load_case("pastes")
    res = tiers.fit("strength ~ 1 + (1 | batch/cask)", data)
    assert res.ngroups == {"batch": 10, "cask:batch": 30}
    assert any("30 groups formed as batch x cask" in n for n in res.notes)
    # the explicit interaction and the precomputed sample label give the same fit
    res2 = tiers.fit("strength ~ 1 + (1 | batch) + (1 | batch:cask)", data)
    res3 = tiers.fit("strength ~ 1 + (1 | batch) + (1 | sample)", data)
    np.testing.assert_allclose(res2.criterion, res.criterion, rtol=1e-12)
    np.testing.assert_allclose(res3.criterion, res.criterion, rtol=1e-12)


def test_stata_syntax_same_model() -> None:
    data, _ = load_case("pastes")
    lme4 = tiers.fit("strength ~ 1 + (1 | batch/cask)", data)
    stata = tiers.fit("strength || batch: || cask:", data)
    np.testing.assert_allclose(stata.criterion, lme4.criterion, rtol=1e-12)
    np.testing.assert_allclose(stata.theta, lme4.theta, atol=1e-9)
    assert stata.ngroups == {"batch": 10, "cask": 30}
