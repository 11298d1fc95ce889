"""Stata's Toeplitz (a free correlation per lag) and banded residuals; nlme's moving average (MA).

nlme has no direct Toeplitz (its ``corARMA(q = k)`` is `tiers.MA`, tested in ``test_rside.py``),
so the reference is the dense multivariate-normal likelihood maximised by scipy over the natural
parameters (the random intercept's SD, the lag-1 correlation, sigma) with the positive-definite
set as its only constraint. The data: three occasions per student, lag-1 correlation 0.65, which
a Toeplitz(1) over three occasions can reach (up to 1/sqrt(2)) and an MA(1) cannot (0.5 at most).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

import tiers
from tiers.errors import DataError

#: Nelder-Mead on the dense likelihood stops at ~1e-7 in the criterion and ~1e-4 in the
#: parameters (a flat optimum); tiers' certified optimum must be no worse and agree to that.
DENSE_OPT_ATOL = 1e-6
DENSE_PARAM_ATOL = 2e-3


@cache
def _data() -> pd.DataFrame:
    rng = np.random.default_rng(2026)
    R = np.array([[1.0, 0.65, 0.0], [0.65, 1.0, 0.65], [0.0, 0.65, 1.0]])
    L = np.linalg.cholesky(R)
    rows = []
    for s in range(20):
        u = rng.normal(0.0, 1.0)
        for j in range(4):
            e = 1.5 * L @ rng.standard_normal(3)
            x = rng.standard_normal(3)
            for t in range(3):
                rows.append((f"s{s}", f"p{j}", t + 1, x[t], 1.0 + 0.5 * x[t] + u + e[t]))
    return pd.DataFrame(rows, columns=["school", "student", "t", "x", "y"])


@cache
def _fit(kind: str) -> tiers.LmmResult:
    structure = (
        tiers.Toeplitz("t", 1, group="student")
        if kind == "toeplitz"
        else tiers.MA("t", 1, group="student")
    )
    return tiers.fit("y ~ x + (1 | school)", _data(), reml=False, residuals=structure)


def _dense_deviance(sd: float, r: float, sigma: float) -> float:
    """-2 log L of the data: per school ``V = sd^2 J + sigma^2 diag(R, R, R, R)``, beta by GLS."""
    d = _data().sort_values(["school", "student", "t"])
    y = d["y"].to_numpy().reshape(20, 12)
    X = np.stack([np.ones(240), d["x"].to_numpy()], axis=1).reshape(20, 12, 2)
    R = np.array([[1.0, r, 0.0], [r, 1.0, r], [0.0, r, 1.0]])
    V = sd**2 * np.ones((12, 12)) + sigma**2 * np.kron(np.eye(4), R)
    Vi = np.linalg.inv(V)
    XtVX = np.einsum("sia,ij,sjb->ab", X, Vi, X)
    beta = np.linalg.solve(XtVX, np.einsum("sia,ij,sj->a", X, Vi, y))
    e = y - X @ beta
    quad = float(np.einsum("si,ij,sj->", e, Vi, e))
    return 20 * np.linalg.slogdet(V)[1] + quad + 240 * np.log(2 * np.pi)


def test_toeplitz_optimum_equals_the_dense_likelihood_maximised_by_scipy() -> None:
    res = _fit("toeplitz")

    def dense(z: np.ndarray) -> float:
        r = z[1]
        if not 1.0 - np.sqrt(2.0) * abs(r) > 0:  # the 3 x 3 lag-1 Toeplitz's smallest eigenvalue
            return np.inf
        return _dense_deviance(np.exp(z[0]), r, np.exp(z[2]))

    best = minimize(dense, np.array([0.0, 0.3, 0.0]), method="Nelder-Mead")
    for _ in range(2):
        best = minimize(
            dense, best.x, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11}
        )
    assert res.converged
    assert -2.0 * res.loglik <= best.fun + DENSE_OPT_ATOL
    assert -2.0 * res.loglik == pytest.approx(best.fun, abs=1e-5)
    rinf = res.residual_inference
    assert rinf is not None
    got = [res.sd_inference.sd[0], rinf.estimate[0], res.sigma]
    want = [np.exp(best.x[0]), best.x[1], np.exp(best.x[2])]
    np.testing.assert_allclose(got, want, atol=DENSE_PARAM_ATOL)
    assert rinf.estimate[0] > 0.5  # outside what a moving average can produce


def test_ma_is_the_toeplitz_restricted_to_a_moving_average() -> None:
    toep, ma = _fit("toeplitz"), _fit("ma")
    r_ma = ma.residual_inference.estimate[0]
    assert r_ma <= 0.5 + 1e-6  # an MA(1)'s lag-1 correlation theta / (1 + theta^2)
    assert toep.loglik > ma.loglik + 1.0


@pytest.mark.parametrize("span", [2, 3, 5, 8])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_toeplitz_map_is_one_to_one_onto_the_positive_definite_set(span: int, order: int) -> None:
    if order >= span:
        return
    from tiers.design.residual_params import ResidualParams

    params = ResidualParams(tiers.Toeplitz("t", order), order, (), None, span, None, span)
    rng = np.random.default_rng(span * 10 + order)
    for scale in (0.1, 1.0, 10.0, 1e3):
        x = rng.normal(0.0, scale, order)
        r = params.correlations(x)
        T = np.eye(span)
        for h in range(order):
            T += np.diag(np.full(span - h - 1, r[h]), h + 1) + np.diag(
                np.full(span - h - 1, r[h]), -h - 1
            )
        assert np.linalg.eigvalsh(T)[0] > 0
        np.testing.assert_allclose(params.to_rho(r), x, rtol=1e-8, atol=1e-10)


def test_stata_toeplitz_means_the_direct_lags() -> None:
    f = tiers.parse("y x || school:, residuals(toeplitz 1, t(t))")
    assert f.residuals == tiers.Toeplitz("t", 1)
    assert tiers.parse("y x || school:, residuals(ma 1, t(t))").residuals == tiers.MA("t", 1)


def test_order_beyond_the_longest_lag_is_refused() -> None:
    with pytest.raises(DataError, match="need lags up to 3.*longest lag.*is 2"):
        tiers.fit(
            "y ~ x + (1 | school)", _data(), residuals=tiers.Toeplitz("t", 3, group="student")
        )


def test_banded_of_full_order_is_nlmes_unstructured() -> None:
    """Banded over every pair of the five waves is unstructured: nlme's corSymm + varIdent fit."""
    from .test_rside import _sim

    data, ref = _sim()
    fit = ref["fits"]["unstructured_REML"]
    res = tiers.fit(
        "y ~ x + (1 | school)", data, residuals=tiers.Banded("wave", 4, group="student")
    )
    assert res.converged
    assert res.loglik == pytest.approx(fit["logLik"], rel=1e-8)
    assert res.n_params == fit["df"]


def test_banded_orders_nest() -> None:
    """Banded(1) in Banded(2) in unstructured: log-likelihoods increase, LR tests with the df
    of the added correlations; pairs more than the order apart are uncorrelated."""
    from .test_rside import _sim

    data, _ = _sim()
    fits = [
        tiers.fit("y ~ x + (1 | school)", data, residuals=s)
        for s in (
            tiers.Banded("wave", 1, group="student"),
            tiers.Banded("wave", 2, group="student"),
            tiers.Unstructured("wave", group="student"),
        )
    ]
    assert [f.design.residuals.params.n_corr for f in fits] == [4, 7, 10]
    assert fits[0].loglik < fits[1].loglik < fits[2].loglik
    t = tiers.inference.lrtest.lrtest(fits[0], fits[1])
    assert (t.df, t.test) == (3, "chi2(3)")
    params = fits[0].design.residuals.params
    R = params.blocks(
        np.asarray(fits[0].theta)[1:],
        np.arange(1.0, 6.0)[None],
        np.zeros((1, 5), int),
        np.arange(5)[None],
    )[0]
    assert np.all(R[np.abs(np.subtract.outer(range(5), range(5))) > 1] == 0.0)
    assert np.linalg.eigvalsh(R)[0] > 0


@pytest.mark.parametrize("order", [1, 2])
def test_toeplitz_inside_the_moving_average_range_is_nlmes_corarma(order: int) -> None:
    """Where the MA's optimum is inside its range, the two are one model: the same optimum and,
    as delta-method SEs on the natural scale do not depend on the parametrisation, the same
    SEs (to the Hessians' finite-difference error). Order 2 against nlme's corARMA(q = 2) fit."""
    from .test_rside import NLME_PARAM_RTOL, _sim

    data, ref = _sim()
    f = "y ~ x + wave + (1 | school/student)"
    toep = tiers.fit(f, data, residuals=tiers.Toeplitz("wave", order))
    ma = tiers.fit(f, data, residuals=tiers.MA("wave", order))
    assert toep.loglik == pytest.approx(ma.loglik, rel=1e-10)
    a, b = toep.residual_inference, ma.residual_inference
    np.testing.assert_allclose(a.estimate, b.estimate, rtol=1e-5)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-4)
    np.testing.assert_allclose(toep.sd_inference.se, ma.sd_inference.se, rtol=1e-4)
    if order == 2:
        nlme = ref["fits"]["toeplitz2_REML"]
        assert toep.loglik == pytest.approx(nlme["logLik"], rel=NLME_PARAM_RTOL)
