"""Simulate-then-fit: the seed design at 50 districts recovers the true SDs."""

from __future__ import annotations

import numpy as np
import pytest

import tiers


@pytest.mark.slow
def test_seed_design_recovers_true_sds() -> None:
    design = tiers.seed_design(districts=50)
    data = tiers.simulate(design, seed=2024)
    res = tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", data)
    assert res.converged and not res.is_singular
    truth = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    sdi = res.sd_inference
    # The estimate of each SD is approximately normal around the truth with the SD given by the
    # observed information (its Wald SE). |estimate - truth| < 4 SE fails with probability
    # ~6e-5 per parameter for a correct estimator; a biased or wrong estimator (e.g. one that
    # splits the variance evenly, as the seed's reversed model did) misses by many SEs.
    z = (sdi.sd - truth) / sdi.se
    assert np.all(np.abs(z) < 4), z
    # The SEs themselves are of the size the design implies: 50 districts determine the district
    # SD far worse than 80,000 rows determine the residual SD.
    assert sdi.se[0] > 10 * sdi.se[-1]
    np.testing.assert_allclose(res.fixef["tutoring"], 2.0, atol=4 * res.std_errors["tutoring"])
