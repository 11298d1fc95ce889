"""Residual structures within the innermost group, against nlme and against dense algebra.

References: ``../shared/reference/rside/ovary_ar1.json`` (nlme ``lme`` with ``corAR1``),
``tests/data/rside/rside_sim.json`` (made by ``tests/data/rside/make_rside.R``: AR(1) and CAR(1)
with gaps, MA(2) (nlme's corARMA(q = 2)), varIdent, AR(1) + varIdent, exchangeable
(with a random intercept above, or a random slope on the same groups) and unstructured residuals,
each by REML and ML, with nlme's ``intervals()``) and ``tests/data/rside/rside_hessian.json``
(made by ``make_rside_hessian.R``: nlme's intervals from its default and from an accurate
Hessian). First the criterion at nlme's own estimates (the same closed-form function of the
parameters), then the optimum.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from jsonschema import Draft202012Validator
from scipy import stats

import tiers
from tiers.design.residual_params import ma_correlations
from tiers.engine.gaussian import criterion_value, residual_df
from tiers.engine.registry import build_engine
from tiers.errors import ComparisonError, DataError, FormulaError, TiersError
from tiers.inference.lrtest import lrtest
from tiers.optimize.derivatives import fd_gradient

from .conftest import REFERENCE, REPO
from .tolerances import DEVIANCE_AT_THETA_RTOL, OPTIMUM_NOT_WORSE_RTOL, OPTIMUM_WITHIN_RTOL

DATA = REPO / "tests" / "data" / "rside"
#: nlme's nlminb stops where the criterion is flat to ~1e-8: its SDs, sigma and correlations sit
#: within ~3e-5 (relative) of the optimum tiers certifies; 1e-4 leaves a factor of 3.
NLME_PARAM_RTOL = 1e-4
#: Wald interval ends: both sides invert a numerical Hessian of the same criterion on the same
#: unconstrained scale, nlme's (apVar) by coarser finite differences at its own, less precise
#: optimum: the ends agree to 5e-5 (Ovary) to 2e-3 (exchangeable); tiers' own Hessian is stable
#: to 1e-6 between steps of 1e-3 and 1e-4.
NLME_INTERVAL_RTOL = 5e-3
#: An SD much smaller than sigma is weakly determined (student:school's 0.43 beside sigma 2.7):
#: nlme leaves it ~1.5e-4 off; SDs are compared on sigma's scale too.
NLME_SD_ATOL_SIGMA = 1e-4
#: Dense multivariate-normal computation vs the one-pass elimination: rounding only.
DENSE_RTOL = 1e-9

SIM_MODELS: dict[str, tuple[str, tiers.ResidualStructure]] = {
    "ar1_gaps": ("y ~ x + wave + (1 | school/student)", tiers.AR1("wave")),
    "car1_gaps": ("y ~ x + wave + (1 | school/student)", tiers.CAR1("months")),
    "toeplitz2": ("y ~ x + wave + (1 | school/student)", tiers.MA("wave", 2)),
    "varident": ("y ~ x + wave + (1 | school/student)", tiers.Independent(by="mode")),
    "ar1_varident": ("y ~ x + wave + (1 | school/student)", tiers.AR1("wave", by="mode")),
    "exchangeable": ("y ~ x + wave + (1 | school)", tiers.Exchangeable(group="student")),
    "unstructured": ("y ~ x + (1 | school)", tiers.Unstructured("wave", group="student")),
    # slopes: the tree elimination on whitened cross-products
    "exchangeable_slope": (
        "y ~ x + wave + (1 | school) + (0 + wave | school:student)",
        tiers.Exchangeable(),
    ),
}
CASES = [(name, m) for name in SIM_MODELS for m in ("REML", "ML")]


@cache
def _sim() -> tuple[pd.DataFrame, dict[str, Any]]:
    data = pd.read_csv(DATA / "rside_sim.csv")
    return data, json.loads((DATA / "rside_sim.json").read_text(encoding="utf-8"))


@cache
def _ovary() -> tuple[pd.DataFrame, dict[str, Any]]:
    data = pd.read_csv(REFERENCE / "rside" / "ovary_ar1.csv")
    ref = json.loads((REFERENCE / "rside" / "ovary_ar1.json").read_text(encoding="utf-8"))
    return data, ref


@cache
def _fit_sim(name: str, method: str) -> tiers.LmmResult:
    data, _ = _sim()
    formula, structure = SIM_MODELS[name]
    return tiers.fit(formula, data, reml=method == "REML", residuals=structure)


def _nlme_natural(ref: dict[str, Any], params: Any) -> np.ndarray:
    """nlme's residual parameters in tiers' order: correlations, then SD ratios by label."""
    corr = ref["correlation_parameters"]
    values = list(corr.values()) if isinstance(corr, dict) else list(corr or [])
    if params.spec.kind == "ma":  # nlme reports the MA coefficients
        values = list(ma_correlations(np.array(values)))
    ratios = ref["variance_function_parameters"] or {}
    values += [ratios[label] for label in params.ratio_labels]
    return np.array(values, dtype=float)


def _nlme_params(ref: dict[str, Any], res: tiers.LmmResult) -> np.ndarray:
    """``(theta, rho)`` at nlme's estimates."""
    params = res.design.residuals.params
    theta = np.atleast_1d(np.asarray(ref["random_sd"], dtype=float)) / ref["residual_sd"]
    return np.concatenate([theta, params.to_rho(_nlme_natural(ref, params))])


# ------------------------------------------------------------------------------ vs nlme --


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_ovary_ar1_criterion_at_nlme_estimates(method: str) -> None:
    data, ref = _ovary()
    fit = ref["fits"][f"ar1_{method}"]
    res = tiers.fit(
        "follicles ~ sin2pi + cos2pi + (1 | Mare)",
        data,
        reml=method == "REML",
        residuals=tiers.AR1("obs"),
    )
    phi = fit["correlation_parameters"]["Phi"]
    at = np.array([fit["random_sd"][0] / fit["residual_sd"], np.arctanh(phi)])
    assert res.devfun.deviance(at) == pytest.approx(
        -2.0 * fit["logLik"], rel=DEVIANCE_AT_THETA_RTOL
    )
    # the optimum: no worse than nlme's, and not far better (a different objective would be)
    assert res.loglik >= fit["logLik"] - OPTIMUM_NOT_WORSE_RTOL * abs(fit["logLik"])
    assert res.loglik <= fit["logLik"] + OPTIMUM_WITHIN_RTOL * abs(fit["logLik"])
    rinf = res.residual_inference
    assert rinf is not None
    assert rinf.estimate[0] == pytest.approx(phi, rel=NLME_PARAM_RTOL)
    assert res.sigma == pytest.approx(fit["residual_sd"], rel=NLME_PARAM_RTOL)
    sd = res.sd_inference.sd[0]
    assert sd == pytest.approx(fit["random_sd"][0], rel=NLME_PARAM_RTOL)
    beta = [f["estimate"] for f in fit["fixed_effects"]]
    np.testing.assert_allclose(res.fixef.to_numpy(), beta, rtol=NLME_PARAM_RTOL)
    # nlme's ML standard errors carry a factor sqrt(n / (n - p)) (its summary's choice); tiers
    # reports lme4's, sigma_ML (X'V^-1X)^-1 unscaled
    se = np.array([f["std_error"] for f in fit["fixed_effects"]])
    if method == "ML":
        se = se * np.sqrt((res.nobs - len(beta)) / res.nobs)
    np.testing.assert_allclose(res.std_errors.to_numpy(), se, rtol=NLME_PARAM_RTOL)


@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_criterion_at_nlme_estimates(name: str, method: str) -> None:
    _, ref = _sim()
    fit = ref["fits"][f"{name}_{method}"]
    res = _fit_sim(name, method)
    at = _nlme_params(fit, res)
    got = res.devfun.deviance(at)
    assert got == pytest.approx(-2.0 * fit["logLik"], rel=DEVIANCE_AT_THETA_RTOL)


@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_optimum_matches_nlme(name: str, method: str) -> None:
    _, ref = _sim()
    fit = ref["fits"][f"{name}_{method}"]
    res = _fit_sim(name, method)
    assert res.converged
    assert res.loglik >= fit["logLik"] - OPTIMUM_NOT_WORSE_RTOL * abs(fit["logLik"])
    assert res.loglik <= fit["logLik"] + OPTIMUM_WITHIN_RTOL * abs(fit["logLik"])
    rinf = res.residual_inference
    assert rinf is not None
    natural = _nlme_natural(fit, res.design.residuals.params)
    np.testing.assert_allclose(rinf.estimate, natural, rtol=NLME_PARAM_RTOL, atol=NLME_PARAM_RTOL)
    np.testing.assert_allclose(
        res.sd_inference.sd[:-1],
        fit["random_sd"],
        rtol=NLME_PARAM_RTOL,
        atol=NLME_SD_ATOL_SIGMA * fit["residual_sd"],
    )
    assert res.sigma == pytest.approx(fit["residual_sd"], rel=NLME_PARAM_RTOL)
    beta = [f["estimate"] for f in fit["fixed_effects"]]
    np.testing.assert_allclose(res.fixef.to_numpy(), beta, rtol=NLME_PARAM_RTOL)
    # nlme's df of the log-likelihood: fixed effects, SDs, residual parameters and sigma
    assert res.n_params == fit["df"]


#: nlme's own intervals (its default apVar). For ``ar1_gaps`` and ``car1_gaps`` see
#: `test_wald_intervals_match_nlme_with_an_accurate_hessian`: there nlme's default Hessian is
#: inaccurate, and those cases are compared with nlme's intervals from an accurate one.
INTERVAL_CASES = ["varident", "ar1_varident", "exchangeable"]


@pytest.mark.parametrize("name", INTERVAL_CASES)
def test_wald_intervals_match_nlme(name: str) -> None:
    _, ref = _sim()
    fit = ref["fits"][f"{name}_REML"]
    rinf = _fit_sim(name, "REML").residual_inference
    assert rinf is not None
    rows = (fit["intervals_correlation"] or []) + (fit["intervals_variance_function"] or [])
    params = _fit_sim(name, "REML").design.residuals.params
    order = {label: i for i, label in enumerate(params.ratio_labels)}
    for row in rows:
        i = 0 if row["name"] not in order else params.n_corr + order[row["name"]]
        assert rinf.lower[i] == pytest.approx(row["lower"], rel=NLME_INTERVAL_RTOL)
        assert rinf.upper[i] == pytest.approx(row["upper"], rel=NLME_INTERVAL_RTOL)
    sigma = fit["intervals_sigma"]
    sdi = _fit_sim(name, "REML").sd_inference
    assert sdi.lower[-1] == pytest.approx(sigma["lower"], rel=NLME_INTERVAL_RTOL)
    assert sdi.upper[-1] == pytest.approx(sigma["upper"], rel=NLME_INTERVAL_RTOL)


#: Made by ``tests/data/rside/make_rside_hessian.R``: nlme's intervals with its default apVar and
#: with the Hessian of the same nlme function (``lmeApVar.fullLmeLogLik``: log SDs, the
#: structure's unconstrained parameter, log sigma) by Richardson extrapolation (numDeriv).
HESSIAN_CASES: dict[str, tiers.ResidualStructure] = {
    "ar1_gaps": tiers.AR1("wave"),
    "car1_gaps": tiers.CAR1("months"),
    "car1_wave": tiers.CAR1("wave"),
    "ar1_varident": tiers.AR1("wave", by="mode"),
}


@pytest.mark.parametrize("name", list(HESSIAN_CASES))
def test_wald_intervals_match_nlme_with_an_accurate_hessian(name: str) -> None:
    """phi, sigma and both SDs against nlme's intervals from an accurate Hessian.

    Why nlme's default intervals differ for ``ar1_gaps`` (phi 0.339-0.725 against tiers'
    0.394-0.694) and ``car1_gaps`` (phi's ends by 3e-3, sigma's by 7e-3): nlme's ``intervals()``
    inverts ``apVar``, the Hessian of the log-likelihood by ``fdHess`` with relStep
    ``.Machine$double.eps^(1/3)`` ~ 6e-6. Here the student SD is near zero (0.43 beside sigma
    2.7; its log has an SE of 3) and strongly tied to phi, so the likelihood is nearly
    flat in one direction, and at that step the rounding of the log-likelihood dominates the
    second differences: nlme's SE of log sigma is 0.106 (corAR1, switched to corARMA(p = 1) by the
    gaps) but 0.069 for the same model written as corCAR1 on the same integer times, although the
    SE of one parameter does not depend on how the others are parametrised. With relStep 1e-4 or
    1e-3, or by Richardson extrapolation, nlme's own function gives 0.0821-0.0822 in both, and
    tiers' 0.0822. It is not the scale (nlme's corARMA works on ``2 atanh(phi)``, tiers on
    ``atanh(phi)``: a linear change, which leaves Wald intervals unchanged), nor REML vs ML
    (both REML here), nor the point (the estimates agree to 1e-5): tiers' Hessian is of the same
    function at its certified optimum. Tolerance: NLME_INTERVAL_RTOL; the largest difference is
    9e-4 (the student
    SD's upper end of 143 in ar1_gaps, where nlme's optimum is less precise: its gradient is 5e-4).
    """
    data, _ = _sim()
    ref = json.loads((DATA / "rside_hessian.json").read_text(encoding="utf-8"))["fits"][name]
    res = tiers.fit("y ~ x + wave + (1 | school/student)", data, residuals=HESSIAN_CASES[name])
    rinf, sdi = res.residual_inference, res.sd_inference
    assert rinf is not None
    acc = ref["richardson"]
    want = {
        "phi": (acc["correlation"][0]["lower"], acc["correlation"][0]["upper"]),
        "school": (acc["random_sd"]["school"]["lower"], acc["random_sd"]["school"]["upper"]),
        "student": (acc["random_sd"]["student"]["lower"], acc["random_sd"]["student"]["upper"]),
        "sigma": (acc["sigma"]["lower"], acc["sigma"]["upper"]),
    }
    got = {
        "phi": (rinf.lower[0], rinf.upper[0]),
        "school": (sdi.lower[0], sdi.upper[0]),
        "student": (sdi.lower[1], sdi.upper[1]),
        "sigma": (sdi.lower[-1], sdi.upper[-1]),
    }
    for key, ends in want.items():
        assert got[key] == pytest.approx(ends, rel=NLME_INTERVAL_RTOL), key


def test_ovary_phi_interval_matches_nlme() -> None:
    data, _ = _ovary()
    _, ref = _sim()
    row = ref["fits"]["ovary_ar1_REML"]["intervals_correlation"][0]
    res = tiers.fit("follicles sin2pi cos2pi || Mare:, residuals(ar 1, t(obs))", data)
    rinf = res.residual_inference
    assert rinf is not None
    assert (rinf.lower[0], rinf.upper[0]) == pytest.approx(
        (row["lower"], row["upper"]), rel=NLME_INTERVAL_RTOL
    )


# -------------------------------------------------------------------- vs dense algebra --


def _dense_criterion(design: Any, reml: bool, params: np.ndarray, sigma: float) -> float:
    """-2 log L (or the REML criterion) at (theta, rho, sigma) from dense n x n matrices."""
    n_re = design.n_theta
    y, X = design.frame.y, design.frame.X
    n, p = X.shape
    Zl = []
    at = 0
    for term in design.terms:
        T = term.cov.factor(params[at : at + term.cov.n_theta])
        at += term.cov.n_theta
        Z = np.zeros((n, term.nlevels * term.q))
        for j in range(term.q):
            Z[np.arange(n), term.codes * term.q + j] = term.Z[:, j]
        Zl.append(Z @ np.kron(np.eye(term.nlevels), T))
    ZL = np.hstack(Zl)
    R = _dense_r(design, params[n_re:])
    V0 = ZL @ ZL.T + R
    Vi = np.linalg.inv(V0)
    xtvx = X.T @ Vi @ X
    beta = np.linalg.solve(xtvx, X.T @ Vi @ y)
    r = y - X @ beta
    ld = np.linalg.slogdet(V0)[1]
    ldrx = np.linalg.slogdet(xtvx)[1]
    nu = residual_df(n, p, reml)
    return criterion_value(ld, ldrx, float(r @ Vi @ r), nu, reml, sigma)


def _dense_r(design: Any, rho: np.ndarray) -> np.ndarray:
    """The residual covariance ``R`` (relative to sigma^2) as a dense n x n matrix."""
    lay = design.residuals
    n = design.frame.nobs
    R = np.zeros((n, n))
    for c in lay.classes:
        blocks = lay.params.blocks(rho, c.times, c.strata, c.occasion)
        for g, rows in enumerate(c.rows):
            R[np.ix_(rows, rows)] = blocks[c.pattern[g]]
    return R


SMALL = {
    "ar1-nested": ("y ~ x + wave + (1 | school/student)", tiers.AR1("wave", by="mode")),
    "car1-nested": ("y ~ x + wave + (1 | school/student)", tiers.CAR1("months")),
    "unstructured": ("y ~ x + (1 | school)", tiers.Unstructured("wave", group="student")),
    "ar1-slopes": ("y ~ x + wave + (1 + x | school)", tiers.AR1("wave", group="student")),
    "toeplitz-nested": ("y ~ x + wave + (1 | school/student)", tiers.Toeplitz("wave", 2)),
    "ma-nested": ("y ~ x + wave + (1 | school/student)", tiers.MA("wave", 2)),
    "banded": ("y ~ x + (1 | school)", tiers.Banded("wave", 2, group="student")),
}


@pytest.mark.parametrize("case", list(SMALL))
@pytest.mark.parametrize("reml", [True, False])
def test_structured_likelihood_equals_dense(case: str, reml: bool) -> None:
    data, _ = _sim()
    small = data[data["school"].isin(["s01", "s02", "s03", "s04", "s05", "s06"])]
    formula, structure = SMALL[case]
    design = tiers.prepare(formula, small, residuals=structure)
    eng = build_engine(design, reml=reml)
    rng = np.random.default_rng(7)
    at = eng.theta_start + rng.uniform(0.1, 0.5, eng.n_theta)
    for sigma in (0.8, 1.7):
        dense = _dense_criterion(design, reml, at, sigma)
        assert eng.criterion(at, sigma) == pytest.approx(dense, rel=DENSE_RTOL)
    if eng.has_gradient:
        _, g = eng.deviance_and_gradient(at)
        _, g_fd = fd_gradient(eng.deviance, eng.theta_lower, eng.theta_upper)(at)
        np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-5)


def test_conditional_modes_equal_dense_blup() -> None:
    data, _ = _sim()
    small = data[data["school"].isin(["s01", "s02", "s03", "s04"])]
    res = tiers.fit(
        "y ~ x + wave + (1 | school)", small, residuals=tiers.AR1("wave", group="student")
    )
    des = res.design
    y, X, term = des.frame.y, des.frame.X, des.terms[0]
    n = y.size
    Z = np.zeros((n, term.nlevels))
    Z[np.arange(n), term.codes] = 1.0
    R = _dense_r(des, np.asarray(res.theta)[1:])
    t2 = float(res.theta[0]) ** 2
    V0 = t2 * Z @ Z.T + R
    b = t2 * Z.T @ np.linalg.solve(V0, y - X @ res.fixef.to_numpy())
    got = res.conditional_modes(cond_var=False)[0].b[:, 0]
    np.testing.assert_allclose(got, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("formula", ["y ~ x + wave + (1 | school/student)", "y ~ x + (x | school)"])
@pytest.mark.parametrize("reml", [True, False])
def test_ar1_at_phi_zero_equals_independent_model(formula: str, reml: bool) -> None:
    data, _ = _sim()
    plain = tiers.fit(formula, data, reml=reml)
    ar1 = tiers.prepare(formula, data, residuals=tiers.AR1("wave", group="student"))
    eng = build_engine(ar1, reml=reml)
    theta = np.asarray(plain.theta)
    at = np.concatenate([theta, [0.0]])
    assert eng.deviance(at) == pytest.approx(plain.criterion, rel=1e-10)
    assert eng.solve(at).sigma == pytest.approx(plain.sigma, rel=1e-10)


# --------------------------------------------------------------------------- syntax --


def test_stata_syntax_fits_the_python_structure() -> None:
    data, _ = _ovary()
    a = tiers.fit("follicles sin2pi cos2pi || Mare:, residuals(ar 1, t(obs)) mle", data)
    b = tiers.fit(
        "follicles ~ sin2pi + cos2pi + (1 | Mare)", data, reml=False, residuals=tiers.AR1("obs")
    )
    assert a.formula.residuals == tiers.AR1("obs")
    assert a.loglik == pytest.approx(b.loglik, rel=1e-10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ar 1, t(wave)", tiers.AR1("wave")),
        ("exchangeable", tiers.Exchangeable()),
        ("ind, by(mode)", tiers.Independent(by="mode")),
        ("un, t(wave)", tiers.Unstructured("wave")),
        ("toeplitz 2, t(wave)", tiers.Toeplitz("wave", 2)),
        ("ma 2, t(wave)", tiers.MA("wave", 2)),
        ("ba 2, t(wave)", tiers.Banded("wave", 2)),
    ],
)
def test_stata_residuals_option(text: str, expected: tiers.ResidualStructure) -> None:
    f = tiers.parse(f"y x || school: || student:, residuals({text})")
    assert f.residuals == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ar 2, t(wave)", "only AR(1)"),
        ("arma 1, t(wave)", "not supported yet"),
        ("banded 0, t(wave)", "banded #"),
        ("banded 2, t(wave) by(mode)", "separate"),
        ("toeplitz, t(wave)", "toeplitz #"),
        ("ar 1, t(wave) by(mode)", "separate"),
        ("independent", "by()"),
        ("ar 1", "needs the time variable"),
        ("exchangeable, t(wave)", "takes no t()"),
    ],
)
def test_stata_residuals_refused(text: str, words: str) -> None:
    with pytest.raises(FormulaError, match=words.replace("(", r"\(").replace(")", r"\)")):
        tiers.parse(f"y x || school:, residuals({text})")


# ------------------------------------------------------------------------ bad input --


def test_duplicate_times_name_the_group() -> None:
    data, _ = _sim()
    bad = data.copy()
    first = bad.index[(bad["school"] == "s03") & (bad["student"] == "p2")]
    bad.loc[first[1], "wave"] = bad.loc[first[0], "wave"]
    with pytest.raises(DataError, match=r"twice within student:school 'p2:s03'"):
        tiers.fit("y ~ x + (1 | school/student)", bad, residuals=tiers.AR1("wave"))


def test_non_numeric_time_is_refused() -> None:
    data, _ = _sim()
    bad = data.assign(wave=data["wave"].map(lambda w: f"w{w}"))
    with pytest.raises(DataError, match="'wave'.*must be numeric"):
        tiers.fit("y ~ x + (1 | school/student)", bad, residuals=tiers.AR1("wave"))


def test_non_integer_time_for_ar1_points_to_car1() -> None:
    data, _ = _sim()
    with pytest.raises(DataError, match="non-integer value.*CAR1"):
        tiers.fit("y ~ x + (1 | school/student)", data, residuals=tiers.AR1("months"))


@pytest.mark.parametrize(
    "structure", [tiers.Exchangeable(), tiers.Unstructured("wave"), tiers.Toeplitz("wave", 4)]
)
def test_random_intercept_on_the_residual_groups_is_not_identified(
    structure: tiers.ResidualStructure,
) -> None:
    data, _ = _sim()
    with pytest.raises(DataError, match="not identified together"):
        tiers.fit("y ~ x + (1 | school/student)", data, residuals=structure)


def test_too_many_occasions_for_unstructured() -> None:
    data, _ = _sim()
    with pytest.raises(DataError, match="15 occasions.*at most 12"):
        tiers.fit(
            "y ~ x + (1 | school)",
            data.assign(t=data["months"].round()),
            residuals=tiers.Unstructured("t", group="student"),
        )


def test_crossed_design_is_refused() -> None:
    data, _ = _sim()
    with pytest.raises(DataError, match="nested random effects only"):
        tiers.fit("y ~ x + (1 | school) + (1 | mode)", data, residuals=tiers.AR1("wave"))


def test_residuals_argument_is_checked() -> None:
    data, _ = _ovary()
    with pytest.raises(FormulaError, match="takes a residual structure"):
        tiers.fit("follicles ~ sin2pi + (1 | Mare)", data, residuals="ar1")  # type: ignore[arg-type]
    with pytest.raises(FormulaError, match="already sets"):
        tiers.fit(
            "follicles sin2pi || Mare:, residuals(exchangeable)", data, residuals=tiers.AR1("obs")
        )


def test_wald_intervals_at_another_level() -> None:
    data, _ = _ovary()
    res = tiers.fit("follicles ~ sin2pi + (1 | Mare)", data, residuals=tiers.AR1("obs"))
    wald = res.confint("wald", 0.9).set_index("name")
    rinf = res.variance_at(0.9)[2]
    assert rinf is not None
    assert wald.loc["phi|residual", "lower"] == pytest.approx(rinf.lower[0])
    assert rinf.lower[0] > res.residual_inference.lower[0]  # 90% inside 95%


def test_profile_interval_ends_are_where_the_criterion_rises_by_chi2() -> None:
    from scipy.optimize import minimize_scalar

    data, _ = _ovary()
    res = tiers.fit("follicles ~ sin2pi + cos2pi + (1 | Mare)", data, residuals=tiers.AR1("obs"))
    prof = res.residual_intervals("profile", 0.95).set_index("name")
    wald = res.residual_intervals("wald", 0.95).set_index("name")
    eng = res.devfun
    crit = stats.chi2.ppf(0.95, 1)
    for end in ("lower", "upper"):
        phi = prof.loc["phi", end]
        # one random-effect SD: the profile over it is a one-dimensional minimisation
        best = minimize_scalar(
            lambda th, phi=phi: eng.deviance(np.array([abs(th), np.arctanh(phi)])),
            bounds=(0.0, 5.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        assert best.fun - res.criterion == pytest.approx(crit, abs=1e-5)
    assert prof.loc["phi", "lower"] < res.residual_inference.estimate[0] < prof.loc["phi", "upper"]
    # the two intervals are of the same size here (308 rows), not the same
    assert wald.loc["phi", "upper"] - wald.loc["phi", "lower"] == pytest.approx(
        prof.loc["phi", "upper"] - prof.loc["phi", "lower"], rel=0.1
    )


def test_residual_intervals_refused_without_a_structure() -> None:
    data, _ = _ovary()
    res = tiers.fit("follicles ~ sin2pi + (1 | Mare)", data)
    with pytest.raises(TiersError, match="no residual structure"):
        res.residual_intervals()
    with pytest.raises(ValueError, match="method"):
        tiers.fit(
            "follicles ~ sin2pi + (1 | Mare)", data, residuals=tiers.AR1("obs")
        ).residual_intervals("bootstrap")


# ------------------------------------------------------------------------- LR tests --


def test_lr_tests_between_residual_structures() -> None:
    data, _ = _sim()
    f = "y ~ x + wave + (1 | school/student)"
    m0 = _fit_sim_formula(f, None)
    m1 = _fit_sim("ar1_gaps", "REML")
    m2 = _fit_sim("ar1_varident", "REML")
    m3 = _fit_sim("car1_gaps", "REML")
    t01 = lrtest(m0, m1)
    assert (t01.df, t01.test) == (1, "chi2(1)")
    assert t01.chi2 == pytest.approx(2.0 * (m1.loglik - m0.loglik))
    assert t01.p_value == pytest.approx(stats.chi2.sf(t01.chi2, 1))
    t12 = lrtest(m1, m2)  # two SD ratios, both inside their range
    assert (t12.df, t12.test) == (2, "chi2(2)")
    t03 = lrtest(m0, m3)  # CAR(1)'s phi = 0 is its boundary
    assert (t03.df, t03.test) == (1, "chibar2(01)")
    assert t03.p_value == pytest.approx(0.5 * stats.chi2.sf(t03.chi2, 1))
    with pytest.raises(ComparisonError, match="not nested"):
        lrtest(m1, m3)
    t2 = lrtest(m0, _fit_sim("toeplitz2", "REML"))  # two MA coefficients, 0 inside their range
    assert (t2.df, t2.test) == (2, "chi2(2)")
    del data


@cache
def _fit_sim_formula(formula: str, structure: tiers.ResidualStructure | None) -> tiers.LmmResult:
    data, _ = _sim()
    return tiers.fit(formula, data, residuals=structure)


# ----------------------------------------------------------------------------- output --


def test_summaries_show_the_residual_parameters() -> None:
    res = _fit_sim("ar1_varident", "REML")
    stata = res.summary()
    assert "Residual: AR(1), by mode" in stata
    rinf = res.residual_inference
    assert rinf is not None
    rho_line = next(ln for ln in stata.splitlines() if ln.strip().startswith("rho |"))
    assert f"{rinf.estimate[0]:.7f}".lstrip("0")[:6] in rho_line
    assert "var(e)" in stata and "sd ratio mode=b" in stata
    lme4 = res.summary("lme4")
    assert "Correlation Structure: AR(1)" in lme4
    assert "Variance function:" in lme4 and "Formula: ~1 | mode" in lme4
    assert "boundary (singular) fit" not in lme4


def test_json_residual_structure_block() -> None:
    res = _fit_sim("ar1_varident", "ML")
    doc = res.to_dict()
    schema = json.loads((REPO / "docs" / "json.schema.json").read_text(encoding="utf-8"))
    errors = list(Draft202012Validator(schema).iter_errors(doc))
    assert not errors, [e.message for e in errors]
    block = doc["residual_structure"]
    assert (block["kind"], block["time"], block["by"], block["reference"]) == (
        "ar1",
        "wave",
        "mode",
        "a",
    )
    assert [p["name"] for p in block["parameters"]] == ["phi", "sd ratio mode=b", "sd ratio mode=c"]
    assert len(doc["theta"]) == len(doc["theta_names"]) == 5
    plain = _fit_sim_formula("y ~ x + wave + (1 | school/student)", None).to_dict()
    assert plain["residual_structure"] is None


def test_cli_residuals_option(tmp_path: Path) -> None:
    out = tmp_path / "fit.json"
    args = [
        "fit",
        "y ~ x + wave + (1 | school)",
        str(DATA / "rside_sim.csv"),
        "--residuals",
        "exchangeable, group(student)",
        "--json",
        str(out),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tiers.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "Residual: Exchangeable" in proc.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    _, ref = _sim()
    rho = ref["fits"]["exchangeable_REML"]["correlation_parameters"]["Rho"]
    assert doc["residual_structure"]["parameters"][0]["estimate"] == pytest.approx(
        rho, rel=NLME_PARAM_RTOL
    )
