"""Crossed and slope GLMMs (the general sparse system) against glmer (tests/data/glmm)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.tolerances import (
    GLMM_DEVIANCE_AT_PARAMS_RTOL,
    GLMM_PARAM_ATOL,
    GLMM_SE_RTOL,
    OPTIMUM_NOT_WORSE_RTOL,
)
from tiers.design.design import build_design
from tiers.engine.glm_family import family
from tiers.engine.glmm_sparse import SparseSystem
from tiers.engine.pirls import Glmm

HERE = Path(__file__).parent / "data" / "glmm"
REF = {f["label"]: f for f in json.loads((HERE / "glmm_structures.json").read_text())["fits"]}
DATA = pd.read_csv(HERE / "glmm_structures.csv", dtype={"subj": str, "item": str})
CASES = {
    "crossed_logit": ("y ~ x + (1 | subj) + (1 | item)", "binomial"),
    "slopes_logit": ("y ~ x + (x | subj)", "binomial"),
    "crossed_slopes_poisson": ("count ~ x + (x | subj) + (1 | item)", "poisson"),
}


def _theta(label: str, names: tuple[str, ...]) -> np.ndarray:
    # lme4 orders terms by their number of levels; match by name
    ref = REF[label]
    lookup = dict(zip(ref["theta_names"], ref["theta"], strict=True))
    return np.array([lookup[n] for n in names])


@pytest.mark.parametrize("label", list(CASES))
def test_deviance_at_lme4_parameters(label: str) -> None:
    formula, fam = CASES[label]
    des = build_design(formula, DATA, glmm=True)
    y = des.frame.y
    g = Glmm(
        y,
        np.ones_like(y),
        np.zeros_like(y),
        des.frame.X,
        SparseSystem(des.terms, y.size),
        family(fam),
    )
    dev = g.laplace(_theta(label, des.theta_names), np.array(REF[label]["beta"]))
    np.testing.assert_allclose(
        dev, REF[label]["devfun_at_optimum"], rtol=GLMM_DEVIANCE_AT_PARAMS_RTOL
    )


@pytest.mark.parametrize("label", list(CASES))
def test_optimum(label: str) -> None:
    formula, fam = CASES[label]
    res = tiers.fit(formula, DATA, family=fam)
    ref = REF[label]
    assert res.converged
    assert res.deviance <= ref["minus2logLik"] * (1 + OPTIMUM_NOT_WORSE_RTOL)
    np.testing.assert_allclose(
        res.fit.theta, _theta(label, res.fit.theta_names), atol=GLMM_PARAM_ATOL
    )
    np.testing.assert_allclose(res.fit.beta, ref["beta"], atol=GLMM_PARAM_ATOL)
    np.testing.assert_allclose(res.fit.se, ref["std_error_hessian"], rtol=GLMM_SE_RTOL)


def test_schur_elimination_of_a_large_scalar_term_equals_the_dense_factor() -> None:
    import tiers.engine.glmm_sparse as gs

    rng = np.random.default_rng(1)
    n = 8000
    s, d = rng.integers(0, 1600, n), rng.integers(0, 200, n)
    df = pd.DataFrame({"y": rng.integers(0, 2, n).astype(float), "s": s.astype(str)})
    df["d"] = d.astype(str)
    des = build_design("y ~ 1 + (1 | s) + (1 | d)", df, glmm=True)
    schur = SparseSystem(des.terms, n)
    dense = SparseSystem(des.terms, n)
    dense._first = None  # force the plain dense Cholesky
    assert schur._first is not None and schur.r > gs.SCHUR_MIN
    th, w, r = np.array([0.7, 0.4]), rng.uniform(0.1, 0.3, n), rng.normal(size=schur.r)
    for sysm in (schur, dense):
        sysm.set_theta(th)
        sysm.factor(w)
    np.testing.assert_allclose(schur.logdet(), dense.logdet(), rtol=1e-12)
    np.testing.assert_allclose(schur.solve(r), dense.solve(r), atol=1e-12)
