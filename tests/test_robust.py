"""Sampling weights (pseudo-ML), the sandwich estimator and CR2, against WeMix and clubSandwich.

References: ../shared/reference/weights/twostage_sim.json (WeMix 4.0.4 ``mix()``) and the ``cr2``
entries of tests/data/weights/weighted_refs.json (clubSandwich, made by
tests/data/weights/make_references.R).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.engine.pseudo import PseudoTreeProblem
from tiers.engine.registry import build_engine
from tiers.errors import DataError, FormulaError

from .conftest import REFERENCE
from .tolerances import BETA_RTOL, DEVIANCE_AT_THETA_RTOL, SE_RTOL

CR2 = json.loads((Path(__file__).parent / "data" / "weights" / "weighted_refs.json").read_text())[
    "cr2"
]
#: WeMix differentiates its pseudo-likelihood numerically with its own steps; its robust SEs
#: agree with ours (stable to 1e-6 over steps 1e-3..1e-5) to ~3e-4.
WEMIX_SE_RTOL = 1e-3
#: Both maximise the same pseudo-likelihood: optimisers' stopping rules separate the estimates.
WEMIX_EST_RTOL = 1e-5


def twostage() -> tuple[pd.DataFrame, dict]:
    data = pd.read_csv(REFERENCE / "weights" / "twostage_sim.csv")
    with open(REFERENCE / "weights" / "twostage_sim.json") as fh:
        return data, json.load(fh)["fits"]


@pytest.mark.parametrize(
    ("key", "how"),
    [
        (
            "wemix_2level",
            {"weights": {"student": "w_total", "school": "w_school"}, "conditional": False},
        ),
        ("wemix_2level_cond", {"weights": {"student": "w_student", "school": "w_school"}}),
        ("wemix_2level_cond", {"formula": "y x [pw=w_student] || school:, pweight(w_school)"}),
    ],
)
def test_sampling_weights_match_wemix(key: str, how: dict) -> None:
    data, fits = twostage()
    ref = fits[key]
    formula = how.pop("formula", ref["formula"])
    res = tiers.fit(formula, data, **how)
    assert res.engine == "pseudo" and not res.reml
    assert res.loglik == pytest.approx(ref["logLik_pseudo"], rel=1e-9)
    est = [f["estimate"] for f in ref["fixed_effects"]]
    np.testing.assert_allclose(res.beta, est, rtol=WEMIX_EST_RTOL)
    var = res.sd_inference.variance_scale()
    np.testing.assert_allclose(
        var[0], [v["variance"] for v in ref["variance_components"]], rtol=WEMIX_EST_RTOL
    )
    se = [f["std_error_robust"] for f in ref["fixed_effects"]]
    np.testing.assert_allclose(res.std_errors, se, rtol=WEMIX_SE_RTOL)
    se_var = [v["std_error_of_variance"] for v in ref["variance_components"]]
    np.testing.assert_allclose(var[1], se_var, rtol=WEMIX_SE_RTOL)
    assert res.robust is not None and res.robust.n_clusters == 85
    assert any("Robust" in note for note in res.notes)


def _exam() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "exam.csv")


@pytest.mark.parametrize(
    "formula",
    ["normexam ~ standLRT + (standLRT | school)", "strength ~ 1 + (1 | batch/cask)"],
)
def test_unit_weights_pseudo_likelihood_is_the_likelihood(formula: str) -> None:
    data = _exam() if formula.startswith("normexam") else pd.read_csv(REFERENCE / "pastes.csv")
    design = tiers.prepare(formula, data)
    ml = build_engine(design, reml=False)
    assert design.nesting is not None
    parents = list(design.nesting.tree.parents)
    ones = [np.ones(gf.nlevels) for gf in design.nesting.factors]
    y, X = design.frame.y, design.frame.X
    pl = PseudoTreeProblem(y, X, design.levels, parents, np.ones(y.size), ones)
    for theta in (ml.theta_start, 0.5 * ml.theta_start + 0.1):
        assert pl.deviance(theta) == pytest.approx(ml.deviance(theta), rel=DEVIANCE_AT_THETA_RTOL)
        sol, ev = ml.solve(theta), pl.evaluate(theta)
        sigma = sol.sigma
        total = pl.cluster_loglik(theta, ev.beta, sigma).sum()
        assert -2.0 * total == pytest.approx(ml.criterion(theta, sigma), rel=1e-10)


def test_integer_sampling_weights_are_copies() -> None:
    """Whole-number weights: a student weight copies the row within its school, a school weight
    copies the whole school as new schools; the pseudo-likelihood is the expanded data's."""
    rng = np.random.default_rng(3)
    data = _exam()
    data["ws"] = rng.integers(1, 3, size=len(data))
    schools = data["school"].unique()
    wsch = dict(zip(schools, rng.integers(1, 3, size=schools.size), strict=True))
    data["wg"] = data["school"].map(wsch)
    copies = []
    for s, part in data.groupby("school"):
        rows = part.loc[part.index.repeat(part["ws"])]
        for c in range(int(wsch[s])):
            copies.append(rows.assign(school=f"{s}_{c}"))
    expanded = pd.concat(copies, ignore_index=True)
    formula = "normexam ~ standLRT + (1 | school)"
    a = tiers.fit(formula, data, weights={"student": "ws", "school": "wg"})
    b = tiers.fit(formula, expanded, reml=False)
    assert a.criterion == pytest.approx(b.criterion, rel=1e-9)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4)


@pytest.mark.parametrize("key", ["sleepstudy_REML", "sleepstudy_ML", "exam_REML", "exam_ML"])
def test_cr2_matches_clubsandwich(key: str) -> None:
    ref = CR2[key]
    data = pd.read_csv(REFERENCE / f"{key.split('_')[0]}.csv")
    res = tiers.fit(ref["formula"], data, reml=ref["method"] == "REML", vce="cr2")
    assert res.robust is not None and res.robust.kind == "cr2"
    np.testing.assert_allclose(res.std_errors, ref["se_cr2"], rtol=SE_RTOL)
    np.testing.assert_allclose(res.robust.df, ref["df_satterthwaite"], rtol=SE_RTOL)
    np.testing.assert_allclose(res.beta, ref["beta"], rtol=BETA_RTOL, atol=1e-8)


def test_sandwich_of_balanced_sleepstudy_is_cr1() -> None:
    """In a balanced design beta's score is orthogonal to the variance parameters' (their cross
    information is zero), so the full sandwich's beta block is clubSandwich's CR0 times G/(G-1)."""
    ref = CR2["sleepstudy_ML"]
    data = pd.read_csv(REFERENCE / "sleepstudy.csv")
    res = tiers.fit(ref["formula"], data, vce="robust")
    assert not res.reml  # the sandwich is built on the likelihood: ML unless asked otherwise
    G = 18
    np.testing.assert_allclose(
        res.std_errors, np.array(ref["se_cr0"]) * np.sqrt(G / (G - 1)), rtol=SE_RTOL
    )
    stata = tiers.fit("Reaction Days || Subject: Days, cov(un) mle vce(cluster Subject)", data)
    np.testing.assert_allclose(stata.std_errors, res.std_errors, rtol=1e-8)


def test_pwscale_scalings() -> None:
    data, _ = twostage()
    n_j = data.groupby("school").size()
    for scale in ("size", "effective", "gk"):
        d = tiers.prepare(
            "y ~ x + (1 | school)",
            data,
            weights={"student": "w_student", "school": "w_school"},
            pwscale=scale,
        )
        assert d.weights is not None
        codes = d.factors[0].codes
        rows = np.asarray(d.weights.rows)
        total = np.bincount(codes, weights=rows)
        w = data["w_student"].to_numpy()
        if scale == "size":
            np.testing.assert_allclose(total, np.bincount(codes), rtol=1e-12)
        elif scale == "effective":
            eff = np.bincount(codes, weights=w) ** 2 / np.bincount(codes, weights=w * w)
            np.testing.assert_allclose(total, eff, rtol=1e-12)
        else:
            np.testing.assert_allclose(rows, 1.0)
            mean_w = np.bincount(codes, weights=w * data["w_school"]) / np.bincount(codes)
            np.testing.assert_allclose(d.weights.groups[0], mean_w, rtol=1e-12)
        assert any(f"pwscale({scale})" in note for note in d.weights.notes)
        assert len(n_j) == d.factors[0].nlevels


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"weights": {"student": "w_student", "school": "w_school"}, "reml": True}, "ML-based"),
        ({"vce": "robust", "reml": True}, "REML has no such version"),
        ({"weights": {"student": "w_student", "school": "w_student"}}, "varies within 85"),
        ({"weights": {"student": "w_student", "shcool": "w_school"}}, "did you mean 'school'"),
        ({"weights": {"pupil": "w_student", "class": "w_school"}}, "does not have"),
        ({"weights": {"student": "w_student", "school": "w_school"}, "vce": "cr2"}, "sandwich"),
        ({"weights": "w_student", "vce": "cr2"}, "not supported yet"),
    ],
)
def test_bad_sampling_and_vce_requests_are_refused(kwargs: dict, words: str) -> None:
    data, _ = twostage()
    with pytest.raises(DataError, match=words):
        tiers.fit("y ~ x + (1 | school)", data, **kwargs)


def test_bad_vce_and_weights_in_stata_syntax() -> None:
    data, _ = twostage()
    with pytest.raises(DataError, match="top level"):
        tiers.fit("y x || school:, mle vce(cluster x)", data)
    with pytest.raises(FormulaError, match=r"vce\(robust\)"):
        tiers.parse("y x || school:, vce(bootstrap)")
    with pytest.raises(FormulaError, match="does not take"):
        tiers.parse("y x [aw=w] || school:")
    with pytest.raises(FormulaError, match="takes size, effective or gk"):
        tiers.parse("y x [pw=w] || school:, pwscale(huge)")
    pen = pd.read_csv(REFERENCE / "penicillin.csv")
    with pytest.raises(DataError, match="cross"):
        tiers.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", pen, vce="robust")
    with pytest.raises(ValueError, match="vce must be one of"):
        tiers.fit("y ~ x + (1 | school)", data, vce="hc3")


def test_likelihood_based_inference_is_refused_after_a_sandwich() -> None:
    data, _ = twostage()
    res = tiers.fit(
        "y ~ x + (1 | school)", data, weights={"student": "w_student", "school": "w_school"}
    )
    for call in (
        lambda: res.confint("profile"),
        lambda: res.confint("bootstrap", n_boot=10, seed=1),
        lambda: res.satterthwaite(),
        lambda: res.variance_shares(method="profile"),
    ):
        with pytest.raises(DataError, match="pseudo-likelihood"):
            call()
    wald = res.confint("wald").set_index("name")
    assert wald.loc["x", "upper"] - wald.loc["x", "lower"] == pytest.approx(
        2 * 1.959963984540054 * res.std_errors["x"], rel=1e-9
    )
    assert np.isnan(res.aic) and np.isnan(res.bic)  # no likelihood to compare models by
    text = str(res)
    assert "Log pseudolikelihood" in text and "Robust" in text and "LR test" not in text
    assert "Robust" in res.summary("lme4")


def test_cr2_satterthwaite_table_uses_cr2() -> None:
    ref = CR2["exam_REML"]
    res = tiers.fit(ref["formula"], _exam(), vce="cr2")
    table = res.satterthwaite()
    np.testing.assert_allclose(table["df"], ref["df_satterthwaite"], rtol=SE_RTOL)
    np.testing.assert_allclose(table["p_value"], ref["p_satterthwaite"], rtol=1e-3)
    assert "CR2" in str(res)


def test_frequency_weights_refuse_the_bootstrap() -> None:
    data = pd.read_csv(REFERENCE / "pastes.csv")
    data["f"] = 2
    res = tiers.fit("strength ~ 1 + (1 | batch/cask)", data, weights="f", weight_type="frequency")
    with pytest.raises(DataError, match="expand the rows"):
        res.bootstrap(10, seed=1)


def test_informative_sample_is_seeded_and_informative() -> None:
    from tiers.errors import DesignError
    from tiers.simulation.informative import TwoStagePopulation, informative_sample

    pop = TwoStagePopulation(schools=60, students=50, sampled_schools=20, sampled_students=10)
    a = informative_sample(pop, 5)
    pd.testing.assert_frame_equal(a, informative_sample(pop, 5))
    assert (a["w_student"] >= 1).all() and (a["w_school"] >= 1).all()
    np.testing.assert_allclose(a["w_total"], a["w_student"] * a["w_school"])
    assert a.groupby("school")["w_school"].nunique().max() == 1
    # selection rises with the effects: the unweighted mean of y overstates the population's
    # (intercept 50, E x = 0) by far more than its sampling error over 40 samples
    means = [informative_sample(pop, s)["y"].mean() for s in range(40)]
    assert np.mean(means) - pop.intercept > 5 * np.std(means) / np.sqrt(40)
    with pytest.raises(DesignError, match="sampled_schools"):
        informative_sample(TwoStagePopulation(sampled_schools=0), 1)


def test_staged_api_gives_the_same_robust_fit() -> None:
    data, _ = twostage()
    w = {"student": "w_student", "school": "w_school"}
    design = tiers.prepare("y ~ x + (1 | school)", data, weights=w)
    devfun = tiers.deviance_function(design)
    assert not devfun.reml
    staged = tiers.assemble(design, tiers.optimize_theta(devfun), engine=devfun)
    direct = tiers.fit("y ~ x + (1 | school)", data, weights=w)
    assert staged.robust is not None
    np.testing.assert_allclose(staged.std_errors, direct.std_errors, rtol=1e-8)


def test_precision_weights_split_by_cluster_are_the_weighted_likelihood() -> None:
    """The sandwich of a precision-weighted ML fit differentiates lme4's weighted likelihood."""
    data = _exam()
    data["w"] = 1.0 + (np.arange(len(data)) % 4) / 3.0
    formula = "normexam ~ standLRT + (standLRT | school)"
    design = tiers.prepare(formula, data, weights="w")
    ml = build_engine(design, reml=False)
    assert design.nesting is not None
    parents = list(design.nesting.tree.parents)
    ones = [np.ones(gf.nlevels) for gf in design.nesting.factors]
    y, X, w = design.frame.y, design.frame.X, data["w"].to_numpy()
    pl = PseudoTreeProblem(y, X, design.levels, parents, w, ones, precision=True)
    theta = 0.5 * ml.theta_start + 0.1
    assert pl.deviance(theta) == pytest.approx(ml.deviance(theta), rel=DEVIANCE_AT_THETA_RTOL)
    sigma = ml.solve(theta).sigma
    total = pl.cluster_loglik(theta, pl.evaluate(theta).beta, sigma).sum()
    assert -2.0 * total == pytest.approx(ml.criterion(theta, sigma), rel=1e-10)
    res = tiers.fit(formula, data, weights="w", vce="robust")
    assert not res.reml and res.robust is not None and res.robust.n_clusters == 65
    # unit precision weights give the unweighted sandwich
    data["one"] = 1.0
    a = tiers.fit(formula, data, weights="one", vce="robust")
    b = tiers.fit(formula, data, vce="robust")
    np.testing.assert_allclose(a.std_errors, b.std_errors, rtol=1e-6)
