"""Profile and parametric-bootstrap intervals of models with a residual structure.

Profiles: nlme has none (its ``intervals()`` is Wald), so the oracle is a brute-force profile
computed here: the parameter held at tiers' interval end while every other variance parameter
(the other SDs, sigma and the residual structure's phi) is optimised by scipy's Nelder-Mead on
another parametrisation (log SDs, atanh phi) of the engine's criterion; the minimum must exceed the
overall minimum by the chi2(1) critical value. The bootstrap: the simulated residuals must have the
fitted covariance ``sigma^2 R_g`` within a group (AR(1) here), checked against the covariance of
many draws.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.optimize import minimize

import tiers
from tiers.inference.bootstrap import Simulator

from .conftest import REFERENCE, REPO

DATA = REPO / "tests" / "data" / "rside"
#: The brute-force profile's minimum at an interval end against chi2_1(0.95) = 3.84: tiers' root
#: is found to 1e-7 (relative) in the parameter and its inner optimisation to ~1e-9 in the
#: criterion; Nelder-Mead's own optimum is good to ~1e-7. 1e-4 on a difference of 3.84 leaves room.
PROFILE_END_ATOL = 1e-4
#: Empirical covariance of N = 4000 draws: each entry's sampling SD is about
#: sqrt((s_ii s_jj + s_ij^2) / N) <= sqrt(2 / N) s_ii = 0.022 s_ii; 5 such SDs.
DRAW_COV_ATOL = 0.11


@cache
def _ar1_gaps() -> tiers.LmmResult:
    data = pd.read_csv(DATA / "rside_sim.csv")
    return tiers.fit("y ~ x + wave + (1 | school/student)", data, residuals=tiers.AR1("wave"))


@cache
def _profile_table() -> pd.DataFrame:
    return _ar1_gaps().confint("profile").set_index("name")


def _brute_profile(res: tiers.LmmResult, held: int, value: float) -> float:
    """``min criterion - criterion at the estimate`` with variance parameter ``held`` at ``value``.

    The variance parameters are ``(sd_school, sd_student, sigma, phi)``; the free ones are
    optimised on ``(log sd, log sd, log sigma, atanh phi)`` from the estimates, and again from
    the best point (a Nelder-Mead restart).
    """
    eng = res.devfun
    sd = np.asarray(res.theta[:2]) * res.sigma
    phi = np.tanh(res.theta[2])
    est = np.array([sd[0], sd[1], res.sigma, phi])
    dmin = eng.criterion(np.asarray(res.theta), res.sigma)
    free = [i for i in range(4) if i != held]

    log_free = [i for i in free if i < 3]  # SDs and sigma on the log scale, phi on atanh

    def natural(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.exp(x[: len(log_free)]), np.tanh(x[len(log_free) :])])

    def crit(x: np.ndarray) -> float:
        p = est.copy()
        p[free] = natural(x)
        p[held] = value
        sd_s, sd_t, sigma, ph = p
        return eng.criterion(np.array([sd_s / sigma, sd_t / sigma, np.arctanh(ph)]), sigma)

    x0 = np.concatenate(
        [np.log(np.maximum(est[log_free], 1e-3)), np.arctanh(est[[i for i in free if i == 3]])]
    )
    best = None
    for _ in range(2):
        out = minimize(
            crit,
            x0 if best is None else best.x,
            method="Nelder-Mead",
            options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20000, "maxfev": 20000},
        )
        best = out if best is None or out.fun < best.fun else best
    assert best is not None
    return float(best.fun) - dmin


def test_profile_intervals_of_the_random_effects_reoptimise_the_residual_parameters() -> None:
    res = _ar1_gaps()
    ci = _profile_table()
    crit = stats.chi2.ppf(0.95, 1)
    names = ["sd_(Intercept)|school", "sd_(Intercept)|student:school", "sigma"]
    for held, name in enumerate(names):
        for end in ("lower", "upper"):
            value = ci.loc[name, end]
            if value == 0.0:  # the student SD's profile stays below chi2 down to 0
                assert _brute_profile(res, held, 1e-8) < crit
                continue
            assert _brute_profile(res, held, value) == pytest.approx(crit, abs=PROFILE_END_ATOL)
    # phi's profile (every variance parameter optimised) is in the same table, from
    # residual_intervals('profile'); and the fixed effects' profiles follow
    phi = res.residual_intervals("profile").set_index("name").loc["phi"]
    assert (ci.loc["phi|residual", "lower"], ci.loc["phi|residual", "upper"]) == (
        phi["lower"],
        phi["upper"],
    )
    for end in ("lower", "upper"):
        assert _brute_profile(res, 3, ci.loc["phi|residual", end]) == pytest.approx(
            crit, abs=PROFILE_END_ATOL
        )
    assert list(ci.index[-3:]) == ["(Intercept)", "x", "wave"]


def test_profile_with_phi_held_at_its_estimate_is_narrower() -> None:
    """Re-optimising phi matters: holding it at its estimate gives another (narrower) interval."""
    res = _ar1_gaps()
    ci = _profile_table()
    crit = stats.chi2.ppf(0.95, 1)
    eng = res.devfun
    dmin = eng.criterion(np.asarray(res.theta), res.sigma)
    sigma_hi = ci.loc["sigma", "upper"]

    def phi_fixed(x: np.ndarray) -> float:
        sd_s, sd_t = np.exp(x)
        th = np.array([sd_s / sigma_hi, sd_t / sigma_hi, res.theta[2]])
        return eng.criterion(th, sigma_hi)

    sd = np.asarray(res.theta[:2]) * res.sigma
    out = minimize(phi_fixed, np.log(sd), method="Nelder-Mead", options={"fatol": 1e-10})
    assert out.fun - dmin > crit + 0.5


def test_bootstrap_draws_the_fitted_residual_covariance() -> None:
    data = pd.read_csv(REFERENCE / "rside" / "ovary_ar1.csv")
    res = tiers.fit("follicles ~ sin2pi + cos2pi + (1 | Mare)", data, residuals=tiers.AR1("obs"))
    sim = Simulator.from_result(res)
    rng = np.random.default_rng(11)
    rows = np.flatnonzero(data["Mare"].to_numpy() == data["Mare"].iloc[0])
    draws = np.array([sim.draw(rng)[rows] for _ in range(4000)])
    emp = np.cov(draws, rowvar=False)
    t = data["obs"].to_numpy()[rows]
    th, rho = res.theta
    phi = np.tanh(rho)
    want = res.sigma**2 * (th**2 + phi ** np.abs(t[:, None] - t[None, :]))
    scale = res.sigma**2 * (th**2 + 1.0)
    np.testing.assert_allclose(emp, want, atol=DRAW_COV_ATOL * scale)


def test_bootstrap_intervals_cover_the_residual_parameters() -> None:
    data = pd.read_csv(REFERENCE / "rside" / "ovary_ar1.csv")
    res = tiers.fit("follicles ~ sin2pi + cos2pi + (1 | Mare)", data, residuals=tiers.AR1("obs"))
    ci = res.confint("bootstrap", n_boot=40, seed=3, workers=1).set_index("name")
    assert list(ci.index) == [
        "sd_(Intercept)|Mare",
        "sigma",
        "phi|residual",
        "(Intercept)",
        "sin2pi",
        "cos2pi",
    ]
    assert ci.attrs["n_failed"] == 0
    assert ci.loc["phi|residual", "estimate"] == pytest.approx(res.residual_inference.estimate[0])
    # a replicate's phi comes from data with phi = 0.61: a percentile interval around it, not
    # around 0 (as independent residuals would give)
    assert 0.3 < ci.loc["phi|residual", "lower"] < ci.loc["phi|residual", "upper"] < 0.9


def test_share_profile_reoptimises_phi() -> None:
    """The ICC's profile ends: the share held (theta^2 = c / (1 - c) for one random intercept)
    while sigma and phi are optimised by Nelder-Mead; the minimum is chi2_1(0.95) above."""
    data = pd.read_csv(REFERENCE / "rside" / "ovary_ar1.csv")
    res = tiers.fit("follicles ~ sin2pi + cos2pi + (1 | Mare)", data, residuals=tiers.AR1("obs"))
    table = res.variance_shares(method="profile")
    eng = res.devfun
    dmin = eng.criterion(np.asarray(res.theta), res.sigma)
    crit = stats.chi2.ppf(0.95, 1)
    for end in ("icc_lower", "icc_upper"):
        c = float(table.loc[0, end])
        theta = np.sqrt(c / (1.0 - c))

        def held(z: np.ndarray, theta: float = theta) -> float:
            return eng.criterion(np.array([theta, z[1]]), float(np.exp(z[0])))

        best = minimize(
            held,
            np.array([np.log(res.sigma), res.theta[1]]),
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12},
        )
        assert best.fun - dmin == pytest.approx(crit, abs=PROFILE_END_ATOL)
