"""Designs to start from: the seed's preset (`seed_design`, `PRESETS`) and design files."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
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


PRESETS: dict[str, Callable[..., NestedDesign]] = {"seed": seed_design}


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
