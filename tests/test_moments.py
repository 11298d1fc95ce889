"""`tiers.fit_moments`: unbiased variance components (against the truth, within Monte Carlo error),
GLS by backfitting (against a dense GLS), agreement with the likelihood fit, and refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tiers
from tiers.errors import DataError

TRUTH = {"a": 0.49, "b": 0.16, "e": 1.0, "beta": (1.0, 0.5)}


def crossed(seed: int, n: int = 3000, na: int = 60, nb: int = 40) -> pd.DataFrame:
    """Unbalanced crossed pairs drawn with replacement (some cells hold two observations)."""
    rng = np.random.default_rng(seed)
    a = np.minimum(rng.geometric(0.03, n) - 1, na - 1)
    b = rng.integers(0, nb, n)
    x = rng.normal(size=n) + 0.3 * (a % 3)
    y = (
        TRUTH["beta"][0]
        + TRUTH["beta"][1] * x
        + rng.normal(0, np.sqrt(TRUTH["a"]), na)[a]
        + rng.normal(0, np.sqrt(TRUTH["b"]), nb)[b]
        + rng.normal(0, np.sqrt(TRUTH["e"]), n)
    )
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


FORMULA = "y ~ x + (1 | a) + (1 | b)"


def test_unbiased_within_monte_carlo_error():
    """Over 80 replicates each mean is within 3.5 Monte Carlo SEs of the truth (a false alarm on
    one of five quantities has probability about 0.002)."""
    fits = [tiers.fit_moments(FORMULA, crossed(seed)) for seed in range(80)]
    assert any(f.nobs > 0 and f.sweeps > 0 for f in fits)
    est = np.array([[*f.variances, *f.beta] for f in fits])
    truth = np.array([TRUTH["a"], TRUTH["b"], TRUTH["e"], *TRUTH["beta"]])
    mc_se = est.std(axis=0, ddof=1) / np.sqrt(len(fits))
    assert np.all(np.abs(est.mean(axis=0) - truth) <= 3.5 * mc_se), (est.mean(axis=0), mc_se)
    # the GLS standard errors describe the spread of beta across replicates (within 25%: the
    # SD of 80 draws is itself uncertain by ~8%, and the components are estimated)
    se = np.array([f.std_errors.to_numpy() for f in fits]).mean(axis=0)
    np.testing.assert_allclose(est[:, 3:].std(axis=0, ddof=1), se, rtol=0.25)


def test_backfitting_equals_dense_gls():
    """beta and its covariance equal GLS with V formed densely at the estimated components."""
    data = crossed(5, n=400, na=25, nb=15)
    m = tiers.fit_moments(FORMULA, data)
    a = pd.factorize(data["a"])[0]
    b = pd.factorize(data["b"])[0]
    Za = np.eye(a.max() + 1)[a]
    Zb = np.eye(b.max() + 1)[b]
    s_a, s_b, s_e = m.variances
    V = s_a * Za @ Za.T + s_b * Zb @ Zb.T + s_e * np.eye(len(data))
    X = np.column_stack([np.ones(len(data)), data["x"]])
    Vi = np.linalg.inv(V)
    cov = np.linalg.inv(X.T @ Vi @ X)
    beta = cov @ X.T @ Vi @ data["y"].to_numpy()
    np.testing.assert_allclose(m.beta, beta, rtol=1e-8)
    np.testing.assert_allclose(m.vcov_beta, cov, rtol=1e-8)


def test_close_to_the_likelihood_fit():
    """On 20,000 rows the two estimators agree to within their sampling error: beta within a
    quarter of an SE, the SDs within 5%."""
    data = crossed(9, n=20000, na=300, nb=200)
    m = tiers.fit_moments(FORMULA, data)
    r = tiers.fit(FORMULA, data)
    se = r.std_errors.to_numpy()
    assert np.all(np.abs(m.beta - r.fixef.to_numpy()) <= 0.25 * se)
    sds_reml = np.append(np.asarray(r.theta) * r.sigma, r.sigma)
    np.testing.assert_allclose(np.sqrt(m.variances), sds_reml, rtol=0.05)
    np.testing.assert_allclose(m.std_errors.to_numpy(), se, rtol=0.05)
    assert "Gao and Owen" in str(m)
    assert list(m.coef_table().columns)[:2] == ["estimate", "std_error"]


def test_other_random_parts_refused():
    data = crossed(1)
    with pytest.raises(DataError, match=r"two crossed random intercepts"):
        tiers.fit_moments("y ~ x + (x | a) + (1 | b)", data)
    with pytest.raises(DataError, match=r"two crossed random intercepts"):
        tiers.fit_moments("y ~ x + (1 | a)", data)


def test_same_grouping_refused():
    """Two factors that group the rows the same way (the moment equations would be singular) are
    refused, as by the likelihood fit."""
    data = crossed(2)
    data["c"] = "c" + data["a"]
    with pytest.raises(tiers.TiersError, match=r"define the same 60 groups"):
        tiers.fit_moments("y ~ x + (1 | a) + (1 | c)", data)


def test_moment_start_unbiased_for_three_factors():
    """The K-factor moment equations behind the crossed engine's start: unbiased over 60
    replicates of three crossed factors with repeated cells (within 3.5 Monte Carlo SEs)."""
    from tiers.engine.moment_start import moment_variances

    truth = np.array([0.5, 0.2, 0.3, 1.0])
    est = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = 2000
        codes = [
            rng.integers(0, 40, n),
            np.minimum(rng.geometric(0.05, n) - 1, 29),
            rng.integers(0, 8, n),
        ]
        y = sum(
            rng.normal(0, np.sqrt(v), c.max() + 1)[c] for v, c in zip(truth[:3], codes, strict=True)
        )
        y = y + rng.normal(0, 1.0, n)
        est.append(moment_variances(y - y.mean(), codes))
    est = np.array(est)
    mc_se = est.std(axis=0, ddof=1) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - truth) <= 3.5 * mc_se), (est.mean(axis=0), mc_se)
