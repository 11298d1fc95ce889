"""Adaptive quadrature for nested random intercepts: Laplace at one point, convergence, and the
integral itself (against brute-force quadrature on a small tree)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import tiers
from tiers.design.design import build_design
from tiers.engine.glm_family import family
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm


def _data(seed: int = 8, top: int = 10, per: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(top), per)
    b = a * 6 + rng.integers(0, 6, a.size)
    eta = rng.normal(0, 0.6, top)[a] + rng.normal(0, 0.6, top * 6)[b]
    y = (rng.uniform(size=a.size) < expit(eta)).astype(float)
    return pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})


def _problem(d: pd.DataFrame) -> Glmm:
    des = build_design("y ~ 1 + (1 | a/b)", d, glmm=True)
    n = len(d)
    sysm = TreeSystem(des.terms, des.nesting.tree)
    return Glmm(des.frame.y, np.ones(n), np.zeros(n), des.frame.X, sysm, family("binomial"))


def test_one_point_per_level_is_laplace() -> None:
    g = _problem(_data())
    th, beta = np.array([0.6, 0.7]), np.array([0.1])
    np.testing.assert_allclose(g.agq(th, beta, 1), g.laplace(th, beta), rtol=1e-13)


def test_nested_quadrature_converges_to_the_integral() -> None:
    # brute force: non-adaptive Gauss-Hermite with 80 points per level over the N(0, 1) priors,
    # the nested integral written out (the tree is small: 3 top groups)
    d = _data(seed=3, top=3, per=12)
    g = _problem(d)
    th, beta = np.array([0.8, 0.9]), np.array([-0.2])
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    total = 0.0
    for _, top in d.groupby("a"):
        inner = np.ones_like(z)  # as a function of the top group's effect (on z)
        for _, child in top.groupby("b"):
            y = child["y"].to_numpy()
            eta = beta[0] + th[0] * z[:, None, None] + th[1] * z[None, :, None]
            p = expit(eta)
            lik = np.prod(np.where(y == 1, p, 1 - p), axis=2)  # (top node, child node)
            inner = inner * (lik @ w)
        total += np.log(inner @ w)
    brute = -2.0 * total
    values = [g.agq(th, beta, q) for q in (3, 7, 15)]
    assert abs(values[-1] - brute) < 1e-8 * abs(brute)
    assert abs(values[1] - brute) < abs(values[0] - brute)


def test_fit_with_nested_quadrature() -> None:
    d = _data()
    lap = tiers.fit("y ~ 1 + (1 | a/b)", d, family="binomial")
    agq = tiers.fit("y ~ 1 + (1 | a/b)", d, family="binomial", nagq=7)
    assert agq.converged and agq.fit.nagq == 7
    # the quadrature's optimum is its own; Laplace's parameters are close and its objective,
    # evaluated by quadrature, no better
    assert abs(agq.deviance - lap.deviance) < 2.0
    np.testing.assert_allclose(agq.fit.beta, lap.fit.beta, atol=0.05)


def test_too_many_quadrature_cells_are_refused() -> None:
    d = _data()
    with pytest.raises(tiers.DataError, match="fewer points"):
        tiers.fit("y ~ 1 + (1 | a/b)", d, family="binomial", nagq=400)
