"""Design planning: the strata formulas against dense matrices, and against Monte Carlo.

The dense checks build V, its derivatives and P as n x n matrices on a 36-row design and compare
the information matrices the strata give with ``1/2 tr(M V_i M V_j)`` computed directly.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from tiers.cli.main import app
from tiers.errors import DesignError
from tiers.simulation.data import Covariate, Level, NestedDesign
from tiers.simulation.presets import seed_design
from tiers.study.plan import (
    expected_se,
    expected_xtvx,
    plan_design,
    power,
    strata,
    variance_information,
)
from tiers.study.runner import run_study

X_COV = Covariate("x", "bernoulli", coef=1.0, p=0.3)


def small(covariates=(X_COV,)) -> NestedDesign:
    return NestedDesign(
        levels=(Level("a", 3, 1.5), Level("b", 2, 0.7), Level("c", 3, 1.2)),
        obs_per_unit=2,
        residual_sd=0.9,
        covariates=covariates,
    )


def dense(design: NestedDesign) -> tuple[np.ndarray, list[np.ndarray]]:
    """V and its derivatives in (sigma_k^2..., sigma^2) as dense n x n matrices."""
    n = design.nrows
    derivs = []
    for N in design.ngroups.values():
        Z = np.eye(N)[np.repeat(np.arange(N), n // N)]
        derivs.append(Z @ Z.T)
    derivs.append(np.eye(n))
    theta = [lv.sd**2 for lv in design.levels] + [design.residual_sd**2]
    V = sum(t * D for t, D in zip(theta, derivs, strict=True))
    return V, derivs


def info(M: np.ndarray, derivs: list[np.ndarray]) -> np.ndarray:
    return np.array([[0.5 * np.trace(M @ A @ M @ B) for B in derivs] for A in derivs])


def reml_projection(Vi: np.ndarray, X: np.ndarray) -> np.ndarray:
    return Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)


def test_strata_are_the_eigenvalues_of_v():
    design = small()
    V, _ = dense(design)
    st = strata(design)
    eig = np.sort(np.linalg.eigvalsh(V))
    expected = np.sort(np.repeat(st.eigenvalues, st.dims.astype(int)))
    assert st.dims.sum() == design.nrows
    np.testing.assert_allclose(eig, expected, rtol=1e-10)


def test_ml_information_equals_the_dense_trace():
    V, derivs = dense(small())
    np.testing.assert_allclose(
        variance_information(small(), reml=False), info(np.linalg.inv(V), derivs), rtol=1e-10
    )


def test_reml_intercept_only_loses_one_top_degree_of_freedom_exactly():
    design = small(covariates=())
    V, derivs = dense(design)
    P = reml_projection(np.linalg.inv(V), np.ones((design.nrows, 1)))
    np.testing.assert_allclose(variance_information(design, reml=True), info(P, derivs), rtol=1e-10)


def test_reml_with_a_covariate_matches_the_dense_average_over_draws():
    """The covariate's rank-one correction uses its expected stratum weights: compare with the
    dense REML information averaged over 100 draws of x. Leaving the correction out is 5% off
    here; the Monte Carlo error of the average is below 0.1%."""
    design = small()
    V, derivs = dense(design)
    Vi = np.linalg.inv(V)
    rng = np.random.default_rng(1)
    n = design.nrows
    draws = []
    for _ in range(100):
        x = (rng.random(n) < 0.3).astype(float)
        draws.append(info(reml_projection(Vi, np.column_stack([np.ones(n), x])), derivs))
    mean = np.mean(draws, axis=0)
    planned = variance_information(design, reml=True)
    scale = np.abs(mean).max()
    assert np.abs(planned - mean).max() / scale < 5e-3
    no_correction = variance_information(small(covariates=()), reml=True)
    assert np.abs(no_correction - mean).max() / scale > 2e-2  # the test can tell


def test_expected_xtvx_equals_the_dense_expectation():
    design = small(covariates=(X_COV, Covariate("z", "normal", coef=0.0, mean=2.0, sd=1.5)))
    V, _ = dense(design)
    Vi = np.linalg.inv(V)
    one = np.ones(design.nrows)
    mu, var = np.array([1.0, 0.3, 2.0]), np.array([0.0, 0.21, 2.25])
    expected = np.outer(mu, mu) * (one @ Vi @ one) + np.diag(var) * np.trace(Vi)
    np.testing.assert_allclose(expected_xtvx(design), expected, rtol=1e-12)


def test_treatment_se_is_the_expected_gls_precision():
    """E[x'V^-1 x - (1'V^-1 x)^2 / 1'V^-1 1] by Monte Carlo over draws of x, dense."""
    design = small()
    V, _ = dense(design)
    Vi = np.linalg.inv(V)
    n = design.nrows
    rng = np.random.default_rng(2)
    X = (rng.random((4000, n)) < 0.3).astype(float)
    one = np.ones(n)
    prec = np.einsum("ri,ij,rj->r", X, Vi, X) - (X @ Vi @ one) ** 2 / (one @ Vi @ one)
    mc_se = prec.std(ddof=1) / math.sqrt(prec.size)
    planned = 1.0 / expected_se(design)["beta_x"] ** 2
    assert abs(prec.mean() - planned) < 4 * mc_se


def test_delta_method_and_parameter_names():
    design = small()
    se = expected_se(design, reml=False)
    assert list(se) == list(design.true_parameters())
    cov = np.linalg.inv(variance_information(design, reml=False))
    sds = [lv.sd for lv in design.levels] + [design.residual_sd]
    for k, name in enumerate(["sd_a", "sd_b", "sd_c", "sd_residual"]):
        assert se[name] == pytest.approx(math.sqrt(cov[k, k]) / (2 * sds[k]), rel=1e-12)


def test_zero_sd_and_one_top_unit_give_nan_not_nonsense():
    design = small().with_units("a", 1)
    assert math.isnan(expected_se(design)["sd_a"])  # REML: no top-level degree of freedom left
    zero = NestedDesign(levels=(Level("a", 5, 0.0), Level("b", 3, 1.0)), obs_per_unit=2,
                        residual_sd=1.0)  # fmt: skip
    assert math.isnan(expected_se(zero)["sd_a"])
    assert math.isfinite(expected_se(zero)["sd_b"])


def test_eight_million_rows_take_milliseconds():
    big = seed_design(districts=5000)
    assert big.nrows == 8_000_000
    start = time.perf_counter()
    se = expected_se(big)
    assert time.perf_counter() - start < 0.05
    # SEs of balanced designs scale as 1/sqrt(top-level units).
    se50 = expected_se(seed_design(districts=50))
    assert se["beta_tutoring"] == pytest.approx(se50["beta_tutoring"] / 10, rel=1e-3)


def test_units_needed_are_the_smallest_that_reach_the_target():
    design = seed_design(districts=50)
    plan = plan_design(design, target_se={"sd_dist_id": 0.2}, power_target=0.9)
    u = plan.target_se["sd_dist_id"]["units"]
    assert expected_se(design.with_units("dist_id", u))["sd_dist_id"] <= 0.2
    assert expected_se(design.with_units("dist_id", u - 1))["sd_dist_id"] > 0.2
    weak = design.with_units("dist_id", 50)
    weak = NestedDesign(weak.levels, weak.obs_per_unit, weak.residual_sd,
                        (Covariate("tutoring", "bernoulli", coef=0.1, p=0.2),),
                        response="perform")  # fmt: skip
    p = plan_design(weak, power_target=0.9).power["beta_tutoring"]
    u = p["units"]
    se = expected_se(weak.with_units("dist_id", u))["beta_tutoring"]
    se_before = expected_se(weak.with_units("dist_id", u - 1))["beta_tutoring"]
    assert power(se, 0.1) >= 0.9 > power(se_before, 0.1)
    # students per teacher cannot shrink the district SD below what 50 districts allow
    stuck = plan_design(design, level="student_id", target_se={"sd_dist_id": 0.05})
    assert stuck.target_se["sd_dist_id"]["units"] is None


def test_power_formula():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert power(1.0, z) == pytest.approx(0.8, abs=1e-3)
    assert power(1.0, 0.0) == pytest.approx(0.05)


def test_plan_agrees_with_the_monte_carlo_sd_of_the_runner():
    """The expected SE against the empirical SD over R = 200 replicates of the REML fit.

    For normal estimates the relative error of an SD over R replicates is about
    1 / sqrt(2 (R - 1)) = 5.0%; the tolerance is four of those, 4 / sqrt(2 (R - 1)) = 20%.
    30 schools of 4 classes of 5 pupils: enough top-level units for the asymptotics (with 2000
    replicates every parameter agrees to 1.5%).
    """
    design = NestedDesign(
        levels=(Level("school", 30, 1.0), Level("class", 4, 0.7)),
        obs_per_unit=5,
        residual_sd=1.0,
        covariates=(Covariate("x", "bernoulli", coef=0.5, p=0.3),),
        response="y",
    )
    R = 200
    res = run_study(design, {"reml": "y ~ x + (1 | school/class)"}, sizes=[30], replicates=R,
                    seed=11, workers=1)  # fmt: skip
    empirical = res.summary.set_index("parameter")["sd"]
    planned = expected_se(design)
    tol = 4 / math.sqrt(2 * (R - 1))
    for name in ("sd_school", "sd_class", "sd_residual", "beta_x", "beta_intercept"):
        assert empirical[name] == pytest.approx(planned[name], rel=tol), name
    assert res.summary["n_failed"].sum() == 0


def test_cli_plan_prints_and_writes_json(tmp_path):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(
        app,
        ["plan", "--preset", "seed", "--districts", "50", "--json", str(out), "--target-se",
         "sd_dist_id=0.2", "--power", "0.8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert list(doc["expected_se"]) == list(seed_design(50).true_parameters())
    assert doc["expected_se"]["sd_dist_id"] == pytest.approx(0.3208, abs=1e-4)
    assert doc["target_se"]["sd_dist_id"]["units"] == 128
    assert "sd_dist_id" in result.output and "128" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-se", "sd_nowhere=0.1"], "unknown parameter"),
        (["--target-se", "sd_dist_id"], "PARAM=VALUE"),
        (["--target-se", "sd_dist_id=-1"], "positive"),
        (["--power", "1.5"], "power"),
        (["--unit-level", "class"], "no level"),
        (["--level", "school_id"], "--unit-level school_id"),
        (["--preset", "nope"], "unknown preset"),
    ],
)
def test_cli_plan_bad_input_exits_2(extra, message):
    result = CliRunner().invoke(app, ["plan", *extra])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output


def test_plan_refuses_what_is_not_a_design():
    with pytest.raises(DesignError):
        plan_design({"levels": []})  # type: ignore[arg-type]
