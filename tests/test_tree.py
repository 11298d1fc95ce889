"""The general nested engine (slopes, covariance structures) against a dense computation, and the
random-slope syntax of both front ends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiers
from tiers.api import prepare
from tiers.design.grouping import build_factors
from tiers.engine.nested_block import TreeProblem
from tiers.errors import DataError, FormulaError, IdentificationWarning
from tiers.formula.parse import parse
from tiers.optimize.derivatives import fd_gradient

from .conftest import load_case


def dense_deviance(y, X, terms, thetas, reml: bool) -> float:
    """lme4's profiled deviance from dense matrices (Bates et al. 2015, eqs. 34 and 41)."""
    n = len(y)
    blocks = []
    for t, th in zip(terms, thetas, strict=True):
        T = t.cov.factor(th)
        Z = np.zeros((n, t.nlevels * t.q))
        for j in range(t.q):
            Z[np.arange(n), t.codes * t.q + j] = t.Z[:, j]
        blocks.append(Z @ np.kron(np.eye(t.nlevels), T))
    ZL = np.hstack(blocks)
    ld = np.linalg.slogdet(np.eye(ZL.shape[1]) + ZL.T @ ZL)[1]
    Vi = np.linalg.inv(np.eye(n) + ZL @ ZL.T)
    xtvx = X.T @ Vi @ X
    beta = np.linalg.solve(xtvx, X.T @ Vi @ y)
    r = y - X @ beta
    pw = r @ Vi @ r
    nu = n - X.shape[1] if reml else n
    dev = ld + nu * (1 + np.log(2 * np.pi * pw / nu))
    return float(dev + (np.linalg.slogdet(xtvx)[1] if reml else 0.0))


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    d = tiers.simulate(tiers.seed_design(districts=2), seed=3)
    d = d[(d.school_id <= 6) & (d.teach_id % 8 < 3) & (d.student_id % 20 < 3)].copy()
    d["x"] = np.random.default_rng(1).normal(size=len(d))
    return d.reset_index(drop=True)


FORMULAS = [
    "perform ~ tutoring + x + (1|dist_id) + (1 + tutoring | dist_id:school_id) + (1|dist_id:school_id:teach_id) + (1|dist_id:school_id:teach_id:student_id)",
    "perform ~ tutoring + (1|dist_id) + (x | dist_id:school_id)",
    "perform ~ tutoring + (1|dist_id) + (x || dist_id:school_id:teach_id)",
    "perform tutoring || dist_id: || school_id: x tutoring, covariance(exchangeable)",
    "perform tutoring || dist_id: x, covariance(identity) || school_id:",
    "perform ~ x + (1 | dist_id:school_id) + (0 + x | dist_id:school_id)",
]


@settings(max_examples=25, deadline=None)
@given(which=st.integers(0, len(FORMULAS) - 1), seed=st.integers(0, 2**31), reml=st.booleans())
def test_tree_matches_dense(small, which: int, seed: int, reml: bool) -> None:
    prep = prepare(FORMULAS[which], small)
    assert prep.engine == "tree"
    assert prep.nesting is not None
    problem = TreeProblem(
        prep.frame.y, prep.frame.X, prep.levels, list(prep.nesting.tree.parents), reml=reml
    )
    rng = np.random.default_rng(seed)
    theta = np.clip(
        rng.normal(0.5, 0.6, problem.n_theta),
        problem.theta_lower + 1e-3,
        problem.theta_upper - 1e-3,
    )
    got = problem.evaluate(theta).deviance
    thetas = [theta[s] for s in problem.term_slices]
    terms = [t for lv in prep.levels for t in lv]
    np.testing.assert_allclose(
        got, dense_deviance(prep.frame.y, prep.frame.X, terms, thetas, reml), rtol=1e-11
    )


@settings(max_examples=12, deadline=None)
@given(which=st.integers(0, len(FORMULAS) - 1), seed=st.integers(0, 2**31), reml=st.booleans())
def test_tree_gradient_matches_finite_differences(small, which: int, seed: int, reml: bool) -> None:
    """The analytic gradient (sparse own-parameter directions, dense for exchangeable)."""
    prep = prepare(FORMULAS[which], small)
    problem = TreeProblem(
        prep.frame.y, prep.frame.X, prep.levels, list(prep.nesting.tree.parents), reml=reml
    )
    rng = np.random.default_rng(seed)
    theta = np.clip(
        rng.normal(0.5, 0.6, problem.n_theta),
        problem.theta_lower + 1e-2,
        problem.theta_upper - 1e-2,
    )
    _, grad = problem.deviance_and_gradient(theta)
    fd = fd_gradient(problem.deviance, problem.theta_lower, problem.theta_upper)(theta)[1]
    # central differences: truncation ~h^2 and rounding ~eps/h of a deviance of order 1e3
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_two_terms_on_one_factor_equal_independent_structure() -> None:
    data, _ = load_case("sleepstudy")
    split = tiers.fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", data)
    joint = tiers.fit("Reaction ~ Days + (Days || Subject)", data)
    np.testing.assert_allclose(split.criterion, joint.criterion, rtol=1e-9)
    np.testing.assert_allclose(split.varcorr["sd"], joint.varcorr["sd"], rtol=1e-4)


def test_stata_slope_syntax_matches_lme4() -> None:
    data, _ = load_case("sleepstudy")
    lme4 = tiers.fit("Reaction ~ Days + (Days | Subject)", data)
    stata = tiers.fit("Reaction Days || Subject: Days, covariance(unstructured)", data)
    np.testing.assert_allclose(stata.criterion, lme4.criterion, rtol=1e-10)
    indep = tiers.fit("Reaction Days || Subject: Days", data)  # Stata's default: independent
    uncorr = tiers.fit("Reaction ~ Days + (Days || Subject)", data)
    np.testing.assert_allclose(indep.criterion, uncorr.criterion, rtol=1e-10)
    assert "cov(Days,_cons)" in str(stata) and "Unstructured" in str(stata)  # Stata 13+: cov()
    assert "corr(Days,_cons)" in stata.summary(stddeviations=True)
    assert "Independent" in str(indep)


def test_slope_without_within_variation_warns() -> None:
    data, _ = load_case("sleepstudy")
    data = data.assign(age=data["Subject"] % 7)  # constant within each subject
    with pytest.warns(IdentificationWarning, match="slope of age.*not identified"):
        tiers.fit("Reaction ~ Days + (age | Subject)", data)


def test_more_random_effects_than_observations() -> None:
    data, _ = load_case("sleepstudy")
    few = data.groupby("Subject").head(2)  # 36 rows, 18 subjects x 2 effects = 36
    with pytest.raises(DataError, match=r"36 random effects \(18 groups x 2 effects\) for 36"):
        tiers.fit("Reaction ~ Days + (Days | Subject)", few)


def test_unknown_covariance_structure_lists_valid_ones() -> None:
    with pytest.raises(FormulaError, match="unstructured, independent, exchangeable, identity"):
        tiers.parse("y x || g: x, covariance(toeplitz)")


def test_variance_shares_refused_with_slopes() -> None:
    data, _ = load_case("sleepstudy")
    res = tiers.fit("Reaction ~ Days + (Days | Subject)", data)
    with pytest.raises(ValueError, match="random-intercept models"):
        res.variance_shares()
    assert res.to_dict()["variance_shares"] == []


def test_perfectly_correlated_effects_are_named_in_words() -> None:
    """Subject intercepts and slopes built as exact multiples of each other: a boundary fit whose
    warning says the effects are perfectly correlated (not that some SD is zero)."""
    data, _ = load_case("sleepstudy")
    code = pd.factorize(data["Subject"])[0]
    u = (code - 8.5) * 4.0
    noise = np.sin(np.arange(len(data)) * 1.7) * 10  # deterministic, uncorrelated with Days
    y = 250 + 10 * data["Days"] + u * (1 + 0.3 * data["Days"]) + noise
    with pytest.warns(tiers.SingularFitWarning, match="Subject are perfectly correlated"):
        res = tiers.fit("Reaction ~ Days + (Days | Subject)", data.assign(Reaction=y))
    assert res.is_singular
    np.testing.assert_allclose(abs(res.correlations["correlation"].iloc[0]), 1.0, atol=1e-6)


def test_implicit_nesting_keys_beyond_int32_are_exact():
    """Codes are int32; a parent x child key past 2^31 (50,000 x 50,001 here) is formed in int64."""
    n = 100_000
    i = np.arange(n)
    data = pd.DataFrame({"y": np.zeros(n), "a": i // 2, "b": i % 50_001})
    (gf,) = build_factors(parse("y ~ 1 + (1 | a/b)"), data)[1:]
    assert gf.implicit and gf.codes.dtype == np.int32
    # every (a, b) pair is distinct, and codes follow the sorted pairs
    expected = np.lexsort((data["b"], data["a"])).argsort()
    assert gf.nlevels == n
    np.testing.assert_array_equal(gf.codes, expected)


@pytest.mark.parametrize("ids", ["consecutive", "gaps", "negative"])
@pytest.mark.parametrize("nested", [True, False])
def test_factors_of_sorted_rows_equal_those_of_shuffled_rows(ids: str, nested: bool) -> None:
    """Rows stored by id are coded from their runs (no table) and checked for nesting on them;
    the factors are those of the same rows shuffled: codes, sizes, maps and implicit nesting."""
    rng = np.random.default_rng(4)
    school = np.repeat(np.arange(6), 40)
    # nested: student ids unique across schools; not: they restart in each school
    student = np.repeat(np.arange(120), 2) if nested else np.tile(np.repeat(np.arange(20), 2), 6)
    scale = {"consecutive": 1, "gaps": 7, "negative": 3}[ids]
    shift = -500 if ids == "negative" else 1
    data = pd.DataFrame(
        {"y": rng.normal(size=school.size), "s": school * scale + shift, "p": student * scale}
    )
    formula = parse("y ~ 1 + (1 | s/p)")
    shuffled = rng.permutation(len(data))
    by_id = build_factors(formula, data)
    by_row = build_factors(formula, data.iloc[shuffled].reset_index(drop=True))
    for a, b in zip(by_id, by_row, strict=True):
        assert (a.nlevels, a.implicit) == (b.nlevels, b.implicit)
        assert a.implicit == (not nested and b.columns == ("s", "p"))
        np.testing.assert_array_equal(a.codes[shuffled], b.codes)
        np.testing.assert_array_equal(a.counts, b.counts)
        if a.prefix_map is not None:
            np.testing.assert_array_equal(a.prefix_map, b.prefix_map)
