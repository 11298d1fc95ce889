"""tiers: hierarchical (multilevel) linear mixed models, fast and checked against lme4.

>>> import tiers
>>> data = tiers.simulate(tiers.seed_design(districts=5), seed=1)
>>> res = tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", data)
>>> print(res)                      # Stata's layout
>>> print(res.summary("lme4"))      # lme4's layout
"""

from __future__ import annotations

from .errors import (
    ComparisonError,
    ConvergenceWarning,
    DataError,
    DesignError,
    FormulaError,
    IdentificationWarning,
    NestingError,
    SingularFitWarning,
    TiersError,
    TiersWarning,
)
from .formula import Formula, parse
from .io import read_data, write_data
from .model import fit
from .results import LmmResult
from .simulate import NestedDesign, seed_design, simulate

__version__ = "0.1.0"

__all__ = [
    "ComparisonError",
    "ConvergenceWarning",
    "DataError",
    "DesignError",
    "Formula",
    "FormulaError",
    "IdentificationWarning",
    "LmmResult",
    "NestedDesign",
    "NestingError",
    "SingularFitWarning",
    "TiersError",
    "TiersWarning",
    "fit",
    "parse",
    "read_data",
    "seed_design",
    "simulate",
    "write_data",
]
