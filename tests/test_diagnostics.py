"""Nesting diagnostics: implicit nesting, singleton levels, levels with few groups."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tiers
from tiers.errors import IdentificationWarning

CORRECT_STATA = "perform tutoring || dist_id: || school_id: || teach_id: || student_id:"
CORRECT_LME4 = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"


@pytest.mark.parametrize("formula", [CORRECT_STATA, CORRECT_LME4])
def test_restarted_ids_fit_as_globally_unique_ids(seed_small, formula: str) -> None:
    design = tiers.seed_design(districts=5)
    restarted = tiers.simulate(design, seed=1, restart_ids=True)
    unique = tiers.fit(formula, seed_small)
    implicit = tiers.fit(formula, restarted)
    np.testing.assert_allclose(implicit.criterion, unique.criterion, rtol=1e-12)
    np.testing.assert_allclose(implicit.theta, unique.theta, atol=1e-9)
    np.testing.assert_allclose(implicit.fixef, unique.fixef, rtol=1e-9)
    assert [lv.ngroups for lv in implicit.levels] == [5, 25, 200, 4000]
    notes = "\n".join(implicit.notes)
    assert "teach_id: labels repeat across" in notes and "200 groups formed as" in notes
    assert "200 groups formed as" in str(implicit)
    assert not any(lv.implicit for lv in unique.levels)


def test_few_groups_note_next_to_interval(seed_small) -> None:
    res = tiers.fit(CORRECT_STATA, seed_small)
    assert any("dist_id has only 5 groups" in n for n in res.notes)
    lines = str(res).splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("dist_id: Identity"))
    assert "only 5 groups" in lines[at + 2]  # the line right under dist_id's sd(_cons)


def test_singleton_level_warns(seed_small) -> None:
    # 70% of students lose their second semester: most student groups hold one observation
    rng = np.random.default_rng(5)
    lose = rng.random(seed_small["student_id"].max() + 1) < 0.7
    keep = (seed_small["semester"] == 1) | ~lose[seed_small["student_id"].to_numpy()]
    with pytest.warns(IdentificationWarning, match="student_id.*single observation"):
        res = tiers.fit("perform ~ tutoring + (1 | teach_id/student_id)", seed_small[keep])
    assert any("single observation" in w for w in res.warnings)


def test_no_warning_for_clean_design(seed_small) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdentificationWarning)
        tiers.fit(CORRECT_LME4, seed_small)
