"""Simulated GLMM outcomes: binary (logit/probit/cloglog) and counts with an exposure.

The statistical checks fit the simulated data with tiers and compare with the truth within the
fits' own standard errors; designs have 10 observations per innermost unit, where the Laplace
approximation's downward bias in the SDs (Breslow & Lin 1995) is a small fraction of an SE.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, ndtr

import tiers
from tiers.errors import DesignError
from tiers.simulation.data import Covariate, Level, NestedDesign, simulate
from tiers.simulation.partitioned import write_partitioned
from tiers.simulation.presets import PRESETS, seed_binary_design, seed_design


def _binary(link: str = "logit", **kw) -> NestedDesign:
    return NestedDesign(
        (Level("school", 120, 0.8), Level("student", 10, 1.0)),
        obs_per_unit=10,
        residual_sd=0.0,
        covariates=(Covariate("tut", "bernoulli", 0.6, p=0.5),),
        intercept=-0.5,
        family="binomial",
        link=link,
        **kw,
    )


def _counts() -> NestedDesign:
    return NestedDesign(
        (Level("school", 100, 0.5), Level("student", 10, 0.4)),
        obs_per_unit=5,
        residual_sd=0.0,
        covariates=(Covariate("tut", "bernoulli", -0.3, p=0.5),),
        intercept=0.5,
        response="absences",
        family="poisson",
        exposure="enrolled",
    )


def test_documented_draw_order_binary_and_poisson() -> None:
    design = dataclasses.replace(_binary(), levels=(Level("a", 2, 0.7), Level("b", 3, 1.1)))
    df = simulate(design, 11)
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal(2) * 0.7, rng.standard_normal(6) * 1.1
    t = (rng.random(60) < 0.5).astype(np.int64)
    eta = -0.5 + 0.6 * t + np.repeat(a, 30) + np.repeat(b, 10)
    y = (rng.random(60) < expit(eta)).astype(np.int64)
    np.testing.assert_array_equal(df["y"], y)
    assert df["y"].dtype == np.int64

    counts = dataclasses.replace(_counts(), levels=(Level("a", 2, 0.5), Level("b", 3, 0.4)))
    df = simulate(counts, 4)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(2) * 0.5, rng.standard_normal(6) * 0.4
    t = (rng.random(30) < 0.5).astype(np.int64)
    eta = 0.5 - 0.3 * t + np.repeat(a, 15) + np.repeat(b, 5)
    expo = 0.5 + 1.5 * rng.random(30)
    np.testing.assert_array_equal(df["enrolled"], expo)
    np.testing.assert_array_equal(df["absences"], rng.poisson(expo * np.exp(eta)))
    assert list(df.columns) == ["a", "b", "obs", "tut", "enrolled", "absences"]


@pytest.mark.parametrize(
    ("link", "inverse"),
    [("probit", ndtr), ("cloglog", lambda e: 1.0 - np.exp(-np.exp(e))), ("logit", expit)],
)
def test_components_give_the_conditional_mean(link: str, inverse) -> None:
    full = simulate(_binary(link), 2, components=True)
    assert list(full.columns[-3:]) == ["school_effect", "student_effect", "mu"]
    eta = -0.5 + 0.6 * full["tut"] + full["school_effect"] + full["student_effect"]
    np.testing.assert_allclose(full["mu"], inverse(eta), rtol=1e-12)
    # the outcome is 1 with probability mu: its mean within deciles of mu is mu's (binomial SE)
    deciles = pd.qcut(full["mu"], 10, labels=False)
    got = full.groupby(deciles)["y"].mean()
    want = full.groupby(deciles)["mu"].mean()
    se = np.sqrt(want * (1 - want) / full.groupby(deciles).size())
    assert np.all(np.abs(got - want) < 4.5 * se)


def test_seed_binary_preset() -> None:
    d = PRESETS["seed-binary"]()
    assert d.family == "binomial" and d.link == "logit" and d.response == "pass"
    assert [lv.sd for lv in d.levels] == [0.6, 0.9, 1.2, 1.5]
    assert d.true_parameters() == {
        "sd_dist_id": 0.6, "sd_school_id": 0.9, "sd_teach_id": 1.2, "sd_student_id": 1.5,
        "beta_intercept": 0.0, "beta_tutoring": 0.6,
    }  # fmt: skip
    seed = seed_design()
    assert [lv.units for lv in d.levels] == [lv.units for lv in seed.levels]
    probit = seed_binary_design(link="probit")
    assert [lv.sd for lv in probit.levels] == pytest.approx([2 / 6, 3 / 6, 4 / 6, 5 / 6])
    df = simulate(d, 1)
    assert set(df["pass"].unique()) == {0, 1}
    # same seed, same data; the uniforms decide pass given the same latent design
    pd.testing.assert_frame_equal(df, simulate(d, 1))
    with pytest.raises(DesignError, match="link must be one of"):
        seed_binary_design(link="log")


def test_design_round_trip_and_errors() -> None:
    for d in (seed_binary_design(3), _counts(), _binary("cloglog")):
        text = json.dumps(d.to_dict())
        assert "residual_sd" not in text
        assert NestedDesign.from_dict(json.loads(text)) == d
    assert "family" not in seed_design().to_dict()  # gaussian files keep their old layout
    levels = (Level("a", 2, 1.0),)
    with pytest.raises(DesignError, match="has no residual SD"):
        NestedDesign(levels, 2, 1.0, family="binomial")
    with pytest.raises(DesignError, match="no 'log' link.*binomial: logit, probit, cloglog"):
        NestedDesign(levels, 2, 0.0, family="binomial", link="log")
    with pytest.raises(DesignError, match="family must be one of"):
        NestedDesign(levels, 2, 0.0, family="gamma")
    with pytest.raises(DesignError, match="goes with family 'poisson'"):
        NestedDesign(levels, 2, 0.0, family="binomial", exposure="days")
    with pytest.raises(DesignError, match="0 < low <= high"):
        NestedDesign(levels, 2, 0.0, family="poisson", exposure="d", exposure_range=(0.0, 1.0))
    with pytest.raises(DesignError, match="duplicate column name 'a'"):
        NestedDesign(levels, 2, 0.0, family="poisson", exposure="a")
    with pytest.raises(DesignError, match="residual SD of 6"):
        seed_design().with_family("binomial")
    with pytest.raises(DesignError, match="overflow"):
        simulate(dataclasses.replace(_counts(), intercept=40.0), 1)


def test_partitioned_binary_is_reproducible(tmp_path) -> None:
    d = seed_binary_design(3)
    write_partitioned(d, tmp_path / "one", 7, rows_per_file=1600)
    write_partitioned(d, tmp_path / "two", 7, rows_per_file=4000)
    one = pd.read_parquet(tmp_path / "one").sort_values(["student_id", "semester"])
    two = pd.read_parquet(tmp_path / "two").sort_values(["student_id", "semester"])
    pd.testing.assert_frame_equal(one.reset_index(drop=True), two.reset_index(drop=True))
    assert len(one) == d.nrows and set(one["pass"]) == {0, 1}


def _within(est: float, se: float, truth: float, z: float = 4.0) -> None:
    assert abs(est - truth) < z * se, (est, se, truth)


# probit with 120 schools takes 7 s (logit 0.2 s) on this machine: 60 schools keep it near 1 s
@pytest.mark.parametrize(("link", "schools"), [("logit", 120), ("probit", 60)])
def test_a_fit_recovers_the_binary_design(link: str, schools: int) -> None:
    d = _binary(link).with_units("school", schools)
    res = tiers.fit("y ~ tut + (1 | school/student)", simulate(d, 5), family="binomial", link=link)
    f = res.fit
    for est, se, truth in zip(f.beta, f.se, (-0.5, 0.6), strict=True):
        _within(est, se, truth)
    for est, se, truth in zip(f.theta, f.theta_se, (0.8, 1.0), strict=True):
        _within(est, se, truth)


def test_a_fit_recovers_the_count_design_with_its_exposure() -> None:
    df = simulate(_counts(), 8)
    res = tiers.fit(
        "absences ~ tut + offset(log(enrolled)) + (1 | school/student)", df, family="poisson"
    )
    f = res.fit
    for est, se, truth in zip(f.beta, f.se, (0.5, -0.3), strict=True):
        _within(est, se, truth)
    for est, se, truth in zip(f.theta, f.theta_se, (0.5, 0.4), strict=True):
        _within(est, se, truth)
    # without the offset the intercept absorbs log E[exposure] = log 1.25 (uniform on [0.5, 2])
    naive = tiers.fit("absences ~ tut + (1 | school/student)", df, family="poisson").fit
    assert naive.beta[0] - f.beta[0] == pytest.approx(math.log(1.25), abs=3 * f.se[0])
