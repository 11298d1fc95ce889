"""Profile intervals of a GLMM against lme4's confint(method = "profile") (cbpp, logit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import tiers
from tests.test_glmm_reference import CBPP_FORMULA, _cbpp

REF = json.loads((Path(__file__).parent / "data" / "glmm" / "glmm_profile.json").read_text())
#: lme4 interpolates its profile with a spline through ~10 points per side; ours finds each bound
#: by root finding on exact profile values: they agree to ~1e-3.
PROFILE_ATOL = 3e-3


def test_profile_intervals_match_lme4() -> None:
    res = tiers.fit(CBPP_FORMULA, _cbpp(), family="binomial")
    ci = res.confint(method="profile")
    np.testing.assert_allclose(ci.iloc[:, 0], REF["lower"], atol=PROFILE_ATOL)
    np.testing.assert_allclose(ci.iloc[:, 1], REF["upper"], atol=PROFILE_ATOL)
    wald = res.confint()
    # the SD's profile interval is asymmetric (longer above), unlike Wald's
    sd = ci.iloc[0]
    est = res.fit.theta[0]
    assert sd.iloc[1] - est > est - sd.iloc[0]
    assert wald.shape == ci.shape
