"""Mathematical properties of the GLMM objectives, and refusals of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tiers
from tests.test_glmm_reference import _cbpp, _cbpp_problem
from tiers.engine.pirls import glm_irls


def _binary(seed: int = 3, groups: int = 30, per: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    eta = -0.3 + 0.8 * x + rng.normal(0, 0.7, groups)[g]
    y = (rng.uniform(size=g.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "t": np.full(g.size, 1.0)})


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_zero_sd_is_the_glm(link: str) -> None:
    # with theta = 0 the random effects vanish: the Laplace deviance at the GLM's beta is the
    # GLM's -2 log L from a direct IRLS (log det(I) = 0, u = 0)
    g = _cbpp_problem(link)
    beta, m2ll, ok = glm_irls(g.y, g.wt, g.offset, g.X, g.family)
    assert ok
    np.testing.assert_allclose(g.laplace(np.zeros(1), beta), m2ll, rtol=1e-12)


def test_one_quadrature_point_is_laplace() -> None:
    g = _cbpp_problem("logit")
    theta, beta = np.array([0.7]), np.array([-1.3, -1.0, -1.1, -1.5])
    lap = g.laplace(theta, beta)
    # one scalar effect: agq(1) runs the quadrature sum with its single node at the mode
    z, w = np.polynomial.hermite_e.hermegauss(1)
    assert z[0] == 0.0 and np.isclose(w[0], np.sqrt(2 * np.pi))
    np.testing.assert_allclose(g.agq(theta, beta, 1), lap, rtol=1e-13)


def test_quadrature_converges_as_points_grow() -> None:
    g = _cbpp_problem("logit")
    theta, beta = np.array([0.9]), np.array([-1.3, -1.0, -1.1, -1.5])
    values = [g.agq(theta, beta, n) for n in (3, 5, 9, 15, 25)]
    gaps = np.abs(np.diff(values))
    assert gaps[-1] < 1e-6
    assert gaps[-1] < gaps[0]


def test_tree_and_sparse_systems_agree_on_a_nested_fit() -> None:
    rng = np.random.default_rng(5)
    a = np.repeat(np.arange(8), 40)
    b = a * 5 + rng.integers(0, 5, a.size)
    eta = 0.2 + rng.normal(0, 0.5, 8)[a] + rng.normal(0, 0.5, 40)[b]
    y = rng.poisson(np.exp(eta))
    d = pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})
    nested = tiers.fit("y ~ 1 + (1 | a/b)", d, family="poisson")
    # the same model written with the second factor's labels unique (design still nested)
    g = nested.fit
    from tiers.design.design import build_design
    from tiers.engine.glm_family import family
    from tiers.engine.glmm_sparse import SparseSystem
    from tiers.engine.pirls import Glmm

    des = build_design("y ~ 1 + (1 | a/b)", d, glmm=True)
    sparse = Glmm(
        des.frame.y,
        np.ones(len(d)),
        np.zeros(len(d)),
        des.frame.X,
        SparseSystem(des.terms, len(d)),
        family("poisson"),
    )
    np.testing.assert_allclose(sparse.laplace(g.theta, g.beta), g.deviance, rtol=1e-10)


def test_trials_column_equals_cbind() -> None:
    d = _cbpp()
    d["prop"] = d["incidence"] / d["size"]
    a = tiers.fit(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", d, family="binomial"
    )
    b = tiers.fit("incidence ~ C(period) + (1 | herd)", d, family="binomial", trials="size")
    c = tiers.fit("prop ~ C(period) + (1 | herd)", d, family="binomial", trials="size")
    np.testing.assert_allclose(a.deviance, b.deviance, rtol=1e-10)
    np.testing.assert_allclose(a.deviance, c.deviance, rtol=1e-10)


def test_exposure_offset_and_stata_exposure_agree() -> None:
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(25), 8)
    expo = rng.uniform(0.5, 3.0, g.size)
    y = rng.poisson(expo * np.exp(0.3 + rng.normal(0, 0.4, 25)[g]))
    d = pd.DataFrame({"y": y, "g": g.astype(str), "expo": expo})
    a = tiers.fit("y ~ 1 + offset(log(expo)) + (1 | g)", d, family="poisson")
    b = tiers.fit("mepoisson y || g:, exposure(expo) irr laplace", d)
    assert tiers.fit("mepoisson y || g:, exposure(expo)", d).fit.nagq == 7  # Stata's default
    np.testing.assert_allclose(a.deviance, b.deviance, rtol=1e-10)
    assert abs(a.fit.beta[0] - 0.3) < 0.3
    assert "IRR" in str(b)


def test_marginal_probability_is_attenuated_toward_a_half() -> None:
    res = tiers.fit("y ~ x + (1 | g)", _binary(), family="binomial")
    cond0 = res.predict(scale="response", conditional=False)
    link = res.predict(scale="link", conditional=False)
    plain = 1 / (1 + np.exp(-link))
    assert np.all(np.abs(cond0 - 0.5) <= np.abs(plain - 0.5) + 1e-12)
    shares = res.shares()
    assert shares["scale"].eq("latent").all()
    np.testing.assert_allclose(shares["variance"].iloc[-1], np.pi**2 / 3)


BAD = [
    (lambda d: d.assign(y=d["y"] * 2), {"family": "binomial"}, "\\[0, 1\\]"),
    (lambda d: d.assign(y=d["y"] * 0.5), {"family": "binomial"}, "0 or 1"),
    (lambda d: d.assign(y=d["y"] - 1), {"family": "poisson"}, "negative"),
    (lambda d: d.assign(y=d["y"] + 0.5), {"family": "poisson"}, "whole number"),
    (lambda d: d.assign(y=d["y"] * 3), {"family": "binomial", "trials": "t"}, "fewer than"),
    (lambda d: d, {"family": "binomial", "link": "log"}, "valid combinations"),
    (lambda d: d, {"family": "gaussian"}, "family must be one of"),
    (lambda d: d, {"family": "binomial", "nagq": 0}, "positive whole number"),
]


@pytest.mark.parametrize(("change", "kwargs", "match"), BAD)
def test_bad_input_is_refused_in_words(change, kwargs, match) -> None:
    with pytest.raises(tiers.DataError, match=match):
        tiers.fit("y ~ x + (1 | g)", change(_binary()), **kwargs)


def test_non_positive_exposure_is_refused() -> None:
    d = _binary().assign(e=0.0)
    with pytest.raises(tiers.DataError, match="exposure 'e' must be positive"):
        tiers.fit("mepoisson y x || g:, exposure(e)", d)


def test_quadrature_needs_one_scalar_effect() -> None:
    d = _binary().assign(h=lambda f: (f.index % 7).astype(str))
    with pytest.raises(tiers.DataError, match="nagq=9.*nested random intercepts"):
        tiers.fit("y ~ x + (1 | g) + (1 | h)", d, family="binomial", nagq=9)


def test_separation_is_a_warning_naming_the_predictor() -> None:
    d = _binary()
    d["sep"] = d["y"] + np.random.default_rng(1).normal(0, 0.01, len(d))
    from tiers.errors import SeparationWarning

    with pytest.warns(tiers.TiersWarning) as record:
        try:
            tiers.fit("y ~ sep + (1 | g)", d, family="binomial")
        except tiers.TiersError:
            pass
    assert any(
        issubclass(r.category, SeparationWarning) and "sep" in str(r.message) for r in record
    )


def test_conditional_predictions_for_new_rows_match_the_fitted_ones() -> None:
    d = _binary()
    res = tiers.fit("y ~ x + (1 | g)", d, family="binomial")
    np.testing.assert_allclose(res.predict(d.iloc[:20]), res.predict()[:20], rtol=1e-12)
    np.testing.assert_allclose(
        res.predict(d.iloc[:20], conditional=False), res.predict(conditional=False)[:20]
    )
    new = d.iloc[:3].assign(g="a group not in the fit")
    np.testing.assert_allclose(
        res.predict(new, scale="link"), res.predict(new, scale="link", conditional=False)
    )


def test_new_rows_keep_the_transforms_learned_on_the_fit() -> None:
    """``center(x)`` in the fixed part and in a slope is centred at the fit's mean, not newdata's.

    The random term's columns were re-learned from the new rows: 20 rows centred at their own
    mean moved the conditional predictions.
    """
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(40), 20)
    x = rng.normal(size=g.size)
    u, v = rng.normal(0, 0.7, 40), rng.normal(0, 0.8, 40)
    eta = -0.3 + (0.8 + v[g]) * x + u[g]
    y = (rng.uniform(size=g.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x": x + 3.0, "g": g.astype(str)})
    res = tiers.fit("y ~ center(x) + (1 + center(x) | g)", d, family="binomial")
    assert min(res.fit.terms[0].sd) > 0.3  # the slope's columns matter
    for rows in (d.iloc[:20], d.iloc[-7:]):
        for conditional in (True, False):
            np.testing.assert_allclose(
                res.predict(rows, conditional=conditional),
                res.predict(conditional=conditional)[rows.index.to_numpy()],
                rtol=1e-10,
            )


def test_offset_is_applied_to_new_rows() -> None:
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(20), 6)
    expo = rng.uniform(0.5, 3.0, g.size)
    y = rng.poisson(expo * np.exp(0.2 + rng.normal(0, 0.3, 20)[g]))
    d = pd.DataFrame({"y": y, "g": g.astype(str), "expo": expo})
    res = tiers.fit("y ~ 1 + offset(log(expo)) + (1 | g)", d, family="poisson")
    np.testing.assert_allclose(res.predict(d), res.predict(), rtol=1e-12)


def test_latent_iccs_accumulate_over_nested_levels() -> None:
    rng = np.random.default_rng(8)
    a = np.repeat(np.arange(10), 60)
    b = a * 6 + rng.integers(0, 6, a.size)
    eta = rng.normal(0, 0.6, 10)[a] + rng.normal(0, 0.6, 60)[b]
    y = (rng.uniform(size=a.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})
    sh = tiers.fit("y ~ 1 + (1 | a/b)", d, family="binomial", link="probit").shares()
    np.testing.assert_allclose(sh["share"].sum(), 1.0)
    np.testing.assert_allclose(sh["icc"].iloc[1], sh["share"].iloc[:2].sum())
    np.testing.assert_allclose(sh["variance"].iloc[-1], 1.0)


def test_boundary_fit_is_flagged_and_constant_groups_counted() -> None:
    # every group has one success in four (no between-group variation), and in three groups the
    # four rows are all failures
    g = np.repeat(np.arange(23), 4)
    y = np.tile([1.0, 0.0, 0.0, 0.0], 23)
    y[-12:] = 0.0
    d = pd.DataFrame({"y": y, "g": g.astype(str)})
    with pytest.warns(tiers.SingularFitWarning) as record:
        res = tiers.fit("y ~ 1 + (1 | g)", d, family="binomial")
    assert res.is_singular
    assert any("3 of the 23 groups of g" in str(r.message) for r in record)


def test_options_that_do_not_apply_are_refused() -> None:
    d = _binary()
    with pytest.raises(tiers.DataError, match="trials"):
        tiers.fit("y ~ x + (1 | g)", d, family="poisson", trials="t")
    probit = tiers.fit("y ~ x + (1 | g)", d, family="binomial", link="probit")
    with pytest.raises(tiers.DataError, match="no such reading"):
        probit.coef_table(exponentiate=True)
    with pytest.raises(tiers.FormulaError, match="does not apply"):
        tiers.fit("meprobit y x || g:, or", d)
