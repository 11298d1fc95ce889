"""Designs to start from: the seed's presets (`seed_design`, `seed_binary_design`) and files."""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tiers.errors import DesignError
from tiers.simulation.data import Covariate, Level, NestedDesign


def seed_design(districts: int = 5) -> NestedDesign:
    """The founding Stata simulation: districts > schools > teachers > students > semesters.

    5 schools per district, 8 teachers per school, 20 students per teacher, 2 semesters per student;
    SDs 2, 3, 4, 5 for district, school, teacher, student and 6 for the residual; ``tutoring`` is
    Bernoulli(0.2) per observation with effect 2; intercept 0; response ``perform``.

    Parameters
    ----------
    districts : int, default 5
        Number of districts: 5 gives 8,000 rows, 50 gives 80,000, 5000 gives 8,000,000.
    """
    return NestedDesign(
        levels=(
            Level("dist_id", districts, 2.0),
            Level("school_id", 5, 3.0),
            Level("teach_id", 8, 4.0),
            Level("student_id", 20, 5.0),
        ),
        obs_per_unit=2,
        residual_sd=6.0,
        covariates=(Covariate("tutoring", "bernoulli", coef=2.0, p=0.2),),
        intercept=0.0,
        response="perform",
        obs_name="semester",
    )


#: The seed's SDs and effect times this put the latent logistic residual (SD pi/sqrt(3) = 1.81) where
#: the seed's semester shock of SD 6 stood (6 x 0.3 = 1.8): the same shares on the logit scale.
LOGIT_SCALE = 0.3


def seed_binary_design(districts: int = 5, link: str = "logit") -> NestedDesign:
    """The seed's design with a pass/fail outcome: a binomial GLMM on the latent scale.

    The seed's levels and counts (districts > schools > teachers > students > semesters) and
    Bernoulli(0.2) ``tutoring``; the response ``pass`` is 1 with probability ``g^-1(eta)``, eta the
    seed's sum without the semester shock, on the latent scale of the link:

    * logit: SDs 0.6, 0.9, 1.2, 1.5 and a tutoring effect of 0.6 (log odds ratio; odds ratio
      1.82): the seed's 2, 3, 4, 5 and 2 times `LOGIT_SCALE`, so the latent logistic residual
      (SD 1.81) stands for the seed's semester SD of 6 and each level keeps its share;
    * probit: the seed's SDs and effect divided by 6 (the latent residual SD is 1);
    * cloglog: times pi/sqrt(6)/6 (the Gumbel residual's SD pi/sqrt(6)).

    Intercept 0: a pass rate of one half for an average untutored student (logit, probit).

    Parameters
    ----------
    districts : int, default 5
        Number of districts (5: 8,000 rows; 50: 80,000).
    link : {"logit", "probit", "cloglog"}
    """
    scales = {"logit": LOGIT_SCALE, "probit": 1.0 / 6.0, "cloglog": math.pi / math.sqrt(6) / 6}
    if link not in scales:
        raise DesignError(f"the seed-binary preset's link must be one of {', '.join(scales)}; "
                          f"got {link!r}")  # fmt: skip
    base = seed_design(districts)
    k = scales[link]
    return replace(
        base,
        levels=tuple(replace(lv, sd=round(lv.sd * k, 12)) for lv in base.levels),
        covariates=tuple(replace(cv, coef=round(cv.coef * k, 12)) for cv in base.covariates),
        residual_sd=0.0,
        response="pass",
        family="binomial",
        link=link,
    )


PRESETS: dict[str, Callable[..., NestedDesign]] = {
    "seed": seed_design,
    "seed-binary": seed_binary_design,
}


def load_design(path: str | os.PathLike[str]) -> NestedDesign:
    """Read a design from a ``.toml`` or ``.json`` file in the :meth:`NestedDesign.to_dict` layout.

    Raises :class:`DesignError`, naming the file, if the suffix is neither, the file does not parse
    or the design is invalid; :class:`OSError` if the file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise DesignError(f"{path}: design files must end in .toml or .json, not {suffix!r}")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8")) if suffix == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DesignError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from exc
    try:
        return NestedDesign.from_dict(data)
    except DesignError as exc:
        raise DesignError(f"{path}: {exc}") from exc
