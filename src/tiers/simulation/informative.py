"""An informative two-stage sample from a finite population: what sampling weights correct.

The population has ``schools`` schools of ``students`` students each, with

    y = intercept + slope x + u_school + e,   u ~ N(0, sd_school^2),   e ~ N(0, sd_residual^2),

``x ~ N(0, 1)``. The sample is drawn in two stages by Poisson sampling (each unit independently):

1. school j with probability ``pi_j`` proportional to ``exp(school_selection * u_j / sd_school)``,
   scaled so that ``sampled_schools`` are expected (capped at 1);
2. student i of a sampled school with probability ``pi_i|j`` proportional to
   ``exp(student_selection * e_i / sd_residual)``, scaled to ``sampled_students`` expected per
   school (capped at 1).

Selection rising with the school effect and with the residual is informative: the sampled
schools and students have larger effects and residuals than the population's, so an unweighted fit
overstates the intercept and understates the variances. The weights are the inverse
probabilities: ``w_school = 1 / pi_j``, ``w_student = 1 / pi_i|j`` (conditional on the school)
and ``w_total`` their product (the overall weight).

Draw order, for a fixed seed: school effects, then per school the students' x, then their
residuals, then the schools' selection uniforms, then the students' (one per population student).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tiers.errors import DesignError


@dataclass(frozen=True, slots=True)
class TwoStagePopulation:
    """A finite population of schools and students, and how it is sampled (see the module)."""

    schools: int = 400
    students: int = 200
    intercept: float = 50.0
    slope: float = 2.0
    sd_school: float = 3.0
    sd_residual: float = 5.0
    sampled_schools: float = 80.0
    sampled_students: float = 30.0
    school_selection: float = 1.0
    student_selection: float = 0.7

    def check(self) -> None:
        """Refuse a design that cannot be sampled as described.

        Raises
        ------
        DesignError
            Naming the value and what it must be.
        """
        if self.schools < 2 or self.students < 2:
            raise DesignError("the population needs at least 2 schools of at least 2 students")
        if min(self.sd_school, self.sd_residual) <= 0:
            raise DesignError("sd_school and sd_residual must be positive")
        if not 0 < self.sampled_schools <= self.schools:
            raise DesignError(f"sampled_schools must be in (0, {self.schools}]")
        if not 0 < self.sampled_students <= self.students:
            raise DesignError(f"sampled_students must be in (0, {self.students}]")


def _probabilities(score: np.ndarray, expected: float) -> np.ndarray:
    """Poisson-sampling probabilities proportional to ``exp(score)`` summing to ``expected``."""
    raw = np.exp(score - score.max())
    p = raw * expected / raw.sum()
    for _ in range(50):  # cap at 1 and redistribute the excess (a few rounds at most)
        over = p >= 1.0
        if not np.any(p > 1.0):
            break
        rest = expected - over.sum()
        p = np.where(over, 1.0, raw * rest / raw[~over].sum())
    return np.minimum(p, 1.0)


def informative_sample(population: TwoStagePopulation, seed: int) -> pd.DataFrame:
    """Draw one informative two-stage sample (see the module docstring).

    Returns
    -------
    DataFrame
        ``school`` (ids ``s1``...), ``x``, ``y``, ``w_student`` (conditional), ``w_school``,
        ``w_total``, one row per sampled student, schools in id order.
    """
    population.check()
    pop = population
    rng = np.random.default_rng(seed)
    u = pop.sd_school * rng.standard_normal(pop.schools)
    x = rng.standard_normal((pop.schools, pop.students))
    e = pop.sd_residual * rng.standard_normal((pop.schools, pop.students))
    pi_school = _probabilities(pop.school_selection * u / pop.sd_school, pop.sampled_schools)
    take_school = rng.random(pop.schools) < pi_school
    draws = rng.random((pop.schools, pop.students))
    parts = []
    for j in np.flatnonzero(take_school):
        pi = _probabilities(pop.student_selection * e[j] / pop.sd_residual, pop.sampled_students)
        keep = draws[j] < pi
        if keep.sum() < 2:
            continue
        y = pop.intercept + pop.slope * x[j, keep] + u[j] + e[j, keep]
        parts.append(
            pd.DataFrame(
                {
                    "school": f"s{j + 1}",
                    "x": x[j, keep],
                    "y": y,
                    "w_student": 1.0 / pi[keep],
                    "w_school": 1.0 / pi_school[j],
                }
            )
        )
    if not parts:
        raise DesignError("no school was sampled; raise sampled_schools")
    out = pd.concat(parts, ignore_index=True)
    out["w_total"] = out["w_student"] * out["w_school"]
    return out
