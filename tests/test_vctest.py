"""Likelihood-ratio tests of variance components: chi-bar-square mixtures where they are known,
the parametric bootstrap otherwise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

import tiers
from tiers.errors import ComparisonError, SingularFitWarning
from tiers.inference.lrtest import lrtest
from tiers.inference.vctest import vctest

from .conftest import load_case


@pytest.fixture(scope="module")
def sleep():
    data, _ = load_case("sleepstudy")
    return {
        "ri": tiers.fit("Reaction ~ Days + (1 | Subject)", data),
        "uncorr": tiers.fit("Reaction ~ Days + (Days || Subject)", data),
        "corr": tiers.fit("Reaction ~ Days + (Days | Subject)", data),
    }


def test_random_slope_with_covariance_is_a_chi2_1_2_mixture(sleep) -> None:
    t = vctest(sleep["ri"], sleep["corr"])
    lr = 2 * (sleep["corr"].loglik - sleep["ri"].loglik)
    assert t.chi2 == pytest.approx(lr)
    assert t.test == "0.5 chi2(1) + 0.5 chi2(2)"
    assert t.p_value == pytest.approx(0.5 * stats.chi2.sf(lr, 1) + 0.5 * stats.chi2.sf(lr, 2))
    assert "Stram and Lee" in t.reason and t.df == 2
    assert vctest(sleep["corr"], sleep["ri"]).p_value == t.p_value  # order does not matter


def test_one_variance_is_a_chi2_0_1_mixture(sleep) -> None:
    t = vctest(sleep["ri"], sleep["uncorr"])
    assert t.test == "0.5 chi2(0) + 0.5 chi2(1)"
    assert t.p_value == pytest.approx(0.5 * stats.chi2.sf(t.chi2, 1))
    assert "Self and Liang" in t.reason


def test_a_covariance_alone_is_plain_chi2(sleep) -> None:
    t = vctest(sleep["uncorr"], sleep["corr"])
    assert t.test == "chi2(1)"
    assert t.p_value == pytest.approx(stats.chi2.sf(t.chi2, 1))


def test_removed_random_intercept_agrees_with_lrtest() -> None:
    data, _ = load_case("pastes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        m1 = tiers.fit("strength ~ 1 + (1 | batch/cask)", data, reml=False)
        m0 = tiers.fit("strength ~ 1 + (1 | batch:cask)", data, reml=False)
    t = vctest(m0, m1)
    assert t.test == "0.5 chi2(0) + 0.5 chi2(1)"
    assert t.p_value == pytest.approx(lrtest(m0, m1).p_value)


def test_bootstrap_when_no_closed_form(seed_small) -> None:
    m1 = tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id)", seed_small)
    m0 = tiers.fit("perform ~ tutoring + (1 | dist_id)", seed_small)
    t = vctest(m0, m1, n_boot=19, seed=5)
    assert t.test == "parametric bootstrap"
    assert "several terms differ" in t.reason and "19 replicates" in t.reason
    assert t.n_boot == 19 and t.n_failed == 0
    # the school and teacher levels are strong in the seed design: no replicate reaches the LR
    assert t.p_value == pytest.approx(1 / 20)
    assert "parametric bootstrap" in t.summary()


def test_bootstrap_on_request_is_calibrated(sleep) -> None:
    t = vctest(sleep["ri"], sleep["uncorr"], method="bootstrap", n_boot=30, seed=2)
    assert t.test == "parametric bootstrap" and 0 < t.p_value <= 1
    assert "closed form" in t.reason
    d = t.to_dict()
    assert d["n_boot"] == 30 and d["test"] == "parametric bootstrap"


def test_refusals(sleep) -> None:
    data, _ = load_case("sleepstudy")
    other = tiers.fit("Reaction ~ 1 + (Days | Subject)", data)
    with pytest.raises(ComparisonError, match="different fixed effects"):
        vctest(other, sleep["corr"])
    with pytest.raises(ComparisonError, match="REML and the other by ML"):
        vctest(sleep["ri"].refit(reml=False), sleep["corr"])
    with pytest.raises(ValueError, match="auto, mixture, bootstrap"):
        vctest(sleep["ri"], sleep["corr"], method="exact")
    m1 = tiers.fit("perform ~ 1 + (1 | a) + (1 | b)", _two_factor())
    m0 = tiers.fit("perform ~ 1 + (1 | a)", _two_factor())
    assert vctest(m0, m1).test == "0.5 chi2(0) + 0.5 chi2(1)"


def _two_factor():
    import pandas as pd

    rng = np.random.default_rng(0)
    a = np.repeat(np.arange(12), 20)
    b = np.tile(np.arange(10), 24)
    y = rng.normal(size=12)[a] + rng.normal(size=10)[b] + rng.normal(size=a.size)
    return pd.DataFrame({"perform": y, "a": a, "b": b})
