"""R-squared of GLMMs (Nakagawa, Johnson & Schielzeth 2017) against R's performance::r2_nakagawa
on glmer fits of the shared cbpp (binomial logit, probit) and grouseticks (Poisson) cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import tiers
from tests.test_glmm_reference import CBPP_FORMULA, GT_FORMULA, _cbpp, _grouse
from tests.tolerances import GLMM_PARAM_ATOL, R2_RTOL
from tiers.inference.r2_glmm import null_intercept

REF = json.loads((Path(__file__).parent / "data" / "r2" / "r2_glmm.json").read_text())["fits"]
NULL_GT = "TICKS ~ 1 + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"


def _fit(key: str) -> tiers.GlmmResult:
    if key == "grouseticks_poisson":
        return tiers.fit(GT_FORMULA, _grouse(), family="poisson")
    return tiers.fit(CBPP_FORMULA, _cbpp(), family="binomial", link=REF[key]["link"])


@pytest.mark.parametrize("key", sorted(REF))
def test_r2_against_performance(key: str) -> None:
    ref = REF[key]
    res = _fit(key)
    theta = dict(zip(res.fit.theta_names, res.fit.theta, strict=True))
    # the fits themselves agree to GLMM_PARAM_ATOL (glmer with tolPwrss = 1e-10, make_r2_glmm.R)
    for name, value in ref["theta"].items():
        assert theta[name] == pytest.approx(value, abs=GLMM_PARAM_ATOL)
    got = res.r2()
    for name in ("var_fixed", "var_random", "var_residual"):
        assert getattr(got, name) == pytest.approx(ref[name], rel=R2_RTOL), name
    assert got.marginal == pytest.approx(ref["r2_marginal"], rel=R2_RTOL)
    assert got.conditional == pytest.approx(ref["r2_conditional"], rel=R2_RTOL)
    assert res.to_dict()["r2"] == {"marginal": got.marginal, "conditional": got.conditional}


def test_binomial_distribution_variance_is_the_latent_one() -> None:
    # pi^2/3 (logit) and 1 (probit): no null model enters (Nakagawa et al. 2017, Table 1)
    assert _fit("cbpp_logit").r2().var_residual == pytest.approx(math.pi**2 / 3, rel=1e-15)
    assert _fit("cbpp_probit").r2().var_residual == 1.0


def test_poisson_lambda_from_the_null_model() -> None:
    # lambda = exp(the null model's intercept), the null model refitted with the same random part
    res = _fit("grouseticks_poisson")
    b0 = null_intercept(res.design, res.problem, res.fit.nagq)
    assert b0 == pytest.approx(REF["grouseticks_poisson"]["null_intercept"], abs=GLMM_PARAM_ATOL)
    null = tiers.fit(NULL_GT, _grouse(), family="poisson")
    assert b0 == pytest.approx(float(null.fit.beta[0]), abs=1e-6)
    # (1 | INDEX) has one level per row: its variance is overdispersion, counted with the residual
    index_var = res.fit.terms[res.fit.theta_names.index("INDEX.(Intercept)")].covariance[0, 0]
    r2 = res.r2()
    assert r2.var_residual == pytest.approx(np.log1p(np.exp(-b0)) + index_var, rel=1e-12)
    others = sum(t.covariance[0, 0] for t in res.fit.terms) - index_var
    assert r2.var_random == pytest.approx(others, rel=1e-12)


def test_no_covariates_no_marginal_r2() -> None:
    r2 = tiers.fit(NULL_GT, _grouse(), family="poisson").r2()
    # a constant X beta: its sample variance is zero up to rounding
    assert r2.var_fixed == pytest.approx(0.0, abs=1e-24)
    assert r2.marginal == pytest.approx(0.0, abs=1e-24)
    assert 0.0 < r2.conditional < 1.0
