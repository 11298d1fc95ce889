"""Features built separately that do not combine yet are refused in words, never ignored."""

from __future__ import annotations

import numpy as np
import pytest

import tiers
from tiers.errors import DataError, InferenceError

from .conftest import load_case


@pytest.fixture(scope="module")
def sleep():
    data, _ = load_case("sleepstudy")
    return data.assign(w=np.linspace(0.5, 2.0, len(data)))


def test_a_residual_structure_with_weights_is_refused(sleep) -> None:
    with pytest.raises(DataError, match="residual structures are not fitted with weights"):
        tiers.fit(
            "Reaction ~ Days + (1 | Subject)", sleep, residuals=tiers.AR1("Days"), weights="w"
        )


@pytest.mark.parametrize("vce", ["robust", "cr2"])
def test_a_sandwich_with_a_residual_structure_is_refused(sleep, vce: str) -> None:
    with pytest.raises(DataError, match="with a residual structure is not supported"):
        tiers.fit(
            "Reaction ~ Days + (1 | Subject)",
            sleep,
            residuals=tiers.AR1("Days"),
            vce=vce,
            reml=False,
        )


def test_each_works_on_its_own(sleep) -> None:
    ar1 = tiers.fit("Reaction ~ Days + (1 | Subject)", sleep, residuals=tiers.AR1("Days"))
    weighted = tiers.fit("Reaction ~ Days + (1 | Subject)", sleep, weights="w")
    assert ar1.converged and weighted.converged
    assert ar1.criterion != weighted.criterion


@pytest.fixture(scope="module")
def by_stratum(sleep):
    data = sleep.assign(half=np.where(sleep["Days"] < 5, "early", "late"))
    return tiers.fit(
        "Reaction ~ Days + (1 | Subject)", data, residuals=tiers.Independent(by="half")
    )


def test_no_single_r2_or_share_where_the_residual_variance_differs_by_stratum(by_stratum) -> None:
    """The late stratum's residual SD is 1.9 times the early one's: no one decomposition."""
    assert by_stratum.residual_inference.estimate[0] > 1.5
    with pytest.raises(InferenceError, match="differs by stratum"):
        by_stratum.r2()
    with pytest.raises(InferenceError, match="differs by stratum"):
        by_stratum.variance_shares()
    assert by_stratum.to_dict()["r2"] == {"marginal": None, "conditional": None}
    table = tiers.table(by_stratum).to_markdown()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("|")]
    assert "R2 marginal" not in rows and not any(r.startswith("ICC") for r in rows)
    assert "SD (Residual)" in rows
    assert "no ICC or R2 where the residual variance differs by stratum" in table


def test_one_residual_variance_keeps_r2_and_shares(sleep) -> None:
    ar1 = tiers.fit("Reaction ~ Days + (1 | Subject)", sleep, residuals=tiers.AR1("Days"))
    assert 0.0 < ar1.r2().marginal < ar1.r2().conditional < 1.0
    assert ar1.variance_shares()["share"].sum() == pytest.approx(1.0)
