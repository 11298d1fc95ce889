"""GLMMs against lme4's glmer: cbpp (binomial logit/probit, Laplace and nAGQ = 9), grouseticks
(Poisson, three nested intercepts). The deviance at lme4's parameters first, then the optimum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.conftest import REFERENCE
from tests.tolerances import (
    GLMM_AGQ_AT_PARAMS_RTOL,
    GLMM_DEVIANCE_AT_PARAMS_RTOL,
    GLMM_PARAM_ATOL,
    GLMM_SE_RTOL,
    OPTIMUM_NOT_WORSE_RTOL,
)
from tiers.design.design import build_design
from tiers.engine.glm_family import family
from tiers.engine.glmm_sparse import SparseSystem
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm

TIGHT = json.loads((Path(__file__).parent / "data" / "glmm" / "glmm_tight.json").read_text())
CBPP_FORMULA = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
GT_FORMULA = "TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"


def _cbpp() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "glmm" / "cbpp.csv", dtype={"herd": str, "period": str})


def _grouse() -> pd.DataFrame:
    types = {"INDEX": str, "BROOD": str, "LOCATION": str, "YEAR": str}
    return pd.read_csv(REFERENCE / "glmm" / "grouseticks.csv", dtype=types)


def _shared(case: str) -> dict:
    return json.loads((REFERENCE / "glmm" / f"{case}.json").read_text())


def _tight(label: str) -> dict:
    return next(f for f in TIGHT["fits"] if f["label"] == label)


def _cbpp_problem(link: str, system: str = "sparse") -> Glmm:
    d = _cbpp()
    des = build_design("incidence ~ C(period) + (1 | herd)", d, glmm=True)
    m = d["size"].to_numpy(float)
    sysm = (
        SparseSystem(des.terms, len(d))
        if system == "sparse"
        else TreeSystem(des.terms, des.nesting.tree)
    )
    return Glmm(des.frame.y / m, m, np.zeros(len(d)), des.frame.X, sysm, family("binomial", link))


@pytest.mark.parametrize("system", ["sparse", "tree"])
@pytest.mark.parametrize("link", ["logit", "probit"])
def test_cbpp_laplace_deviance_at_lme4_parameters(link: str, system: str) -> None:
    # 2% off lme4's optimum, where its devfun runs PIRLS to convergence (glmm_tight.R)
    ref = _tight(f"cbpp_{link}_laplace")
    g = _cbpp_problem(link, system)
    near = np.array(ref["near_optimum"])
    dev = g.laplace(near[:1], near[1:])
    np.testing.assert_allclose(dev, ref["devfun_near_optimum"], rtol=GLMM_DEVIANCE_AT_PARAMS_RTOL)


def test_cbpp_agq9_deviance_at_lme4_parameters() -> None:
    # lme4's nAGQ > 1 deviance leaves out the saturated model's -2 log L (constant in the
    # parameters); ours keeps it, so that Laplace and quadrature are comparable
    fit = _shared("cbpp")["fits"]["logit_agq9"]
    g = _cbpp_problem("logit")
    beta = np.array([fe["estimate"] for fe in fit["fixed_effects"]])
    dev = g.agq(np.atleast_1d(fit["theta"]), beta, 9)
    np.testing.assert_allclose(dev - g.saturated, fit["minus2logLik"], rtol=GLMM_AGQ_AT_PARAMS_RTOL)


def test_grouseticks_laplace_deviance_at_lme4_parameters() -> None:
    ref = _tight("grouseticks_poisson_laplace")
    d = _grouse()
    des = build_design(GT_FORMULA, d, glmm=True)
    near = ref["near_optimum"]
    by_group = {n.split(".")[0]: v for n, v in zip(ref["theta_names"], near[:3], strict=True)}
    theta = np.array([by_group[t.name.split(":")[0]] for t in des.terms])
    for sysm in (SparseSystem(des.terms, len(d)), TreeSystem(des.terms, des.nesting.tree)):
        g = Glmm(
            des.frame.y, np.ones(len(d)), np.zeros(len(d)), des.frame.X, sysm, family("poisson")
        )
        dev = g.laplace(theta, np.array(near[3:]))
        np.testing.assert_allclose(
            dev, ref["devfun_near_optimum"], rtol=GLMM_DEVIANCE_AT_PARAMS_RTOL
        )


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_cbpp_laplace_optimum(link: str) -> None:
    ref = _tight(f"cbpp_{link}_laplace")
    res = tiers.fit(CBPP_FORMULA, _cbpp(), family="binomial", link=link)
    assert res.converged
    assert res.deviance <= ref["minus2logLik"] * (1 + OPTIMUM_NOT_WORSE_RTOL)
    np.testing.assert_allclose(res.fit.theta, np.atleast_1d(ref["theta"]), atol=GLMM_PARAM_ATOL)
    np.testing.assert_allclose(res.fit.beta, ref["beta"], atol=GLMM_PARAM_ATOL)
    np.testing.assert_allclose(res.fit.se, ref["std_error_hessian"], rtol=GLMM_SE_RTOL)


def test_cbpp_agq9_optimum() -> None:
    fit = _shared("cbpp")["fits"]["logit_agq9"]
    res = tiers.fit("melogit incidence i.period || herd:, binomial(size) intpoints(9)", _cbpp())
    assert res.fit.nagq == 9 and res.converged
    lme4_dev = res.deviance - res.fit.saturated
    assert lme4_dev <= fit["minus2logLik"] * (1 + OPTIMUM_NOT_WORSE_RTOL)
    np.testing.assert_allclose(res.fit.theta, [fit["theta"]], atol=GLMM_PARAM_ATOL)
    est = [fe["estimate"] for fe in fit["fixed_effects"]]
    np.testing.assert_allclose(res.fit.beta, est, atol=GLMM_PARAM_ATOL)
    se = [fe["std_error"] for fe in fit["fixed_effects"]]
    np.testing.assert_allclose(res.fit.se, se, rtol=GLMM_SE_RTOL)


def test_grouseticks_optimum() -> None:
    ref = _tight("grouseticks_poisson_laplace")
    res = tiers.fit(GT_FORMULA, _grouse(), family="poisson")
    assert res.converged
    assert res.deviance <= ref["minus2logLik"] * (1 + OPTIMUM_NOT_WORSE_RTOL)
    sds = {t.group.split(":")[0]: float(t.sd[0]) for t in res.fit.terms}
    by_group = {n.split(".")[0]: v for n, v in zip(ref["theta_names"], ref["theta"], strict=True)}
    for g, v in by_group.items():
        assert abs(sds[g] - v) <= GLMM_PARAM_ATOL
    np.testing.assert_allclose(res.fit.beta, ref["beta"], atol=GLMM_PARAM_ATOL)
    np.testing.assert_allclose(res.fit.se, ref["std_error_hessian"], rtol=GLMM_SE_RTOL)
