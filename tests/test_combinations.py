"""Features built separately that do not combine yet are refused in words, never ignored."""

from __future__ import annotations

import numpy as np
import pytest

import tiers
from tiers.errors import DataError

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
