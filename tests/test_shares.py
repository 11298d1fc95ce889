"""Variance shares and cumulative ICCs (estat icc) with delta-method intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logit

import tiers


@pytest.fixture(scope="module")
def res(seed_small):
    return tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", seed_small)


def test_shares_sum_to_one_and_match_hand_computation(res) -> None:
    shares = res.variance_shares()
    variances = res.varcorr["variance"].to_numpy()
    np.testing.assert_allclose(shares["variance"], variances, rtol=1e-12)
    np.testing.assert_allclose(shares["share"], variances / variances.sum(), rtol=1e-12)
    np.testing.assert_allclose(shares["share"].sum(), 1.0, rtol=1e-12)
    # estat icc, cumulative: level k's ICC sums the variances of levels 1..k
    icc = np.cumsum(variances[:-1]) / variances.sum()
    np.testing.assert_allclose(shares["icc"].to_numpy()[:-1], icc, rtol=1e-12)
    assert np.isnan(shares["icc"].iloc[-1])


def test_intervals_inside_unit_interval_and_around_estimate(res) -> None:
    shares = res.variance_shares()
    for col in ("share", "icc"):
        ok = shares[col].notna()
        lo, hi, est = (shares.loc[ok, c].to_numpy() for c in (f"{col}_lower", f"{col}_upper", col))
        assert np.all((0 < lo) & (lo < est) & (est < hi) & (hi < 1))


def test_delta_method_against_numerical_gradient(res) -> None:
    """The analytic gradient of logit(share) in the log SDs equals finite differences."""
    sdi = res.sd_inference
    log_sd = np.log(sdi.sd)
    z = 1.959963984540054

    def logit_share(x: np.ndarray, k: int) -> float:
        v = np.exp(2 * x)
        return float(logit(v[k] / v.sum()))

    shares = res.variance_shares()
    for k in range(len(log_sd)):
        h = 1e-6
        grad = np.array(
            [
                (logit_share(log_sd + h * e, k) - logit_share(log_sd - h * e, k)) / (2 * h)
                for e in np.eye(len(log_sd))
            ]
        )
        se = np.sqrt(grad @ sdi.cov_log_sd @ grad)
        centre = logit(shares["share"].iloc[k])
        lo = 1 / (1 + np.exp(-(centre - z * se)))
        np.testing.assert_allclose(shares["share_lower"].iloc[k], lo, rtol=1e-5)


def test_level_is_checked(res) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        res.variance_shares(level=1.2)


def test_json_has_variance_shares(res) -> None:
    doc = res.to_dict()
    assert [row["level"] for row in doc["variance_shares"]] == [lv.name for lv in res.levels] + [
        "Residual"
    ]
    assert abs(sum(row["share"] for row in doc["variance_shares"]) - 1) < 1e-12
