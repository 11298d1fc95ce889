"""tiers: hierarchical (multilevel) linear mixed models, fast and checked against lme4.

>>> import tiers
>>> data = tiers.simulate(tiers.seed_design(districts=5), seed=1)
>>> res = tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", data)
>>> print(res)                      # Stata's layout
>>> print(res.summary("lme4"))      # lme4's layout
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import TYPE_CHECKING

# The fit's path is imported with tiers, so that the first `tiers.fit` of a process costs what
# the next ones do; every other public name is imported on first use (PEP 562), so that a
# command loads only what it uses: all modules together cost a fresh process about 0.3 s more
# (the panel estimators, the reports, the simulation, the crossed engines), ten fits at 80,000
# rows.
from tiers.api import LmmResult, assemble, deviance_function, fit, optimize_theta, prepare

if TYPE_CHECKING:
    from tiers import inference as inference
    from tiers import panel as panel
    from tiers import report as report
    from tiers.api.glmm_result import GlmmResult
    from tiers.api.reading import read_data
    from tiers.data.io import write_data
    from tiers.design.design import Design
    from tiers.design.diagnostics import Limits
    from tiers.formula.parse import parse
    from tiers.formula.residuals import (
        AR1,
        CAR1,
        MA,
        Banded,
        Exchangeable,
        Independent,
        ResidualStructure,
        Toeplitz,
        Unstructured,
    )
    from tiers.formula.types import Formula
    from tiers.moments import MomentsResult, fit_moments
    from tiers.report import comparison as comparison
    from tiers.simulation.data import NestedDesign, simulate
    from tiers.simulation.presets import seed_binary_design, seed_design

from tiers.errors import (
    ComparisonError,
    ConvergenceWarning,
    DataError,
    DesignError,
    FormulaError,
    IdentificationWarning,
    LinearProbabilityWarning,
    NestingError,
    SeparationWarning,
    SingularFitWarning,
    TiersError,
    TiersWarning,
)


def _started_as_the_command() -> bool:
    """Whether this process is the ``tiers`` command (its script, ``python -m tiers[.cli]``).

    The command fits once and exits: it imports only what that fit uses, on use. A Python
    session imports with tiers what any fit may use, so that its first fit costs what the next do.
    """
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script in ("tiers", "tiers.exe", "tiers-script.py"):
        return True
    argv = getattr(sys, "orig_argv", ())
    return any(a == "-m" and b in ("tiers", "tiers.cli") for a, b in itertools.pairwise(argv))


if not _started_as_the_command():
    # L-BFGS-B, for designs the Newton polish from the start does not certify (a balanced nested
    # design needs none), and with it scipy.linalg, scipy.sparse and scipy.special: 0.1-0.2 s
    import scipy.optimize  # noqa: F401

#: Where each lazily imported public name lives.
_NAMES = {
    "GlmmResult": "tiers.api.glmm_result",
    "read_data": "tiers.api.reading",
    "write_data": "tiers.data.io",
    "Design": "tiers.design.design",
    "Limits": "tiers.design.diagnostics",
    "parse": "tiers.formula.parse",
    **dict.fromkeys(
        ("AR1", "CAR1", "MA", "Banded", "Exchangeable", "Independent", "ResidualStructure"),
        "tiers.formula.residuals",
    ),
    "Toeplitz": "tiers.formula.residuals",
    "Unstructured": "tiers.formula.residuals",
    "Formula": "tiers.formula.types",
    "MomentsResult": "tiers.moments",
    "fit_moments": "tiers.moments",
    "NestedDesign": "tiers.simulation.data",
    "simulate": "tiers.simulation.data",
    "seed_design": "tiers.simulation.presets",
    "seed_binary_design": "tiers.simulation.presets",
}

#: The subpackages the README names, reachable after a plain ``import tiers``
#: (``tiers.panel.fixed_effects``, ``tiers.report.comparison.compare``, ``tiers.comparison``);
#: `tiers.inference` and `tiers.report` import their submodules on first use in turn.
_MODULES = {
    "inference": "tiers.inference",
    "panel": "tiers.panel",
    "report": "tiers.report",
    "comparison": "tiers.report.comparison",
    "plot": "tiers.plot",  # needs matplotlib
}


def vctest(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see tiers.inference.vctest
    """Test variance components on the boundary; see `tiers.inference.vctest.vctest`."""
    from tiers.inference.vctest import vctest as _vctest

    return _vctest(*args, **kwargs)


def table(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see tiers.report.table
    """Fits side by side as a publication table; see `tiers.report.table.table`."""
    from tiers.report.table import table as _table

    return _table(*args, **kwargs)


def marginsplot(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy re-export, see tiers.report.marginsplot
    """Figure of `tiers.LmmResult.margins`; see `tiers.report.marginsplot.marginsplot`."""
    from tiers.report.marginsplot import marginsplot as _plot

    return _plot(*args, **kwargs)


def pool(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see tiers.inference.pool
    """Combine fits over imputed data sets by Rubin's rules; see `tiers.inference.pool.pool`."""
    from tiers.inference.pool import pool as _pool

    return _pool(*args, **kwargs)


def run_study(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see tiers.study.runner
    """Monte Carlo study of estimators over design sizes; see `tiers.study.runner.run_study`."""
    from tiers.study.runner import run_study as _run

    return _run(*args, **kwargs)


def plan_design(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see tiers.study.plan
    """Expected standard errors of a balanced nested design; see `tiers.study.plan.plan_design`."""
    from tiers.study.plan import plan_design as _plan

    return _plan(*args, **kwargs)


def plan_by_simulation(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export
    """Plan a GLMM design by simulation; see `tiers.study.plan_sim.plan_by_simulation`."""
    from tiers.study.plan_sim import plan_by_simulation as _plan

    return _plan(*args, **kwargs)


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook (PEP 562)
    import importlib

    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'tiers' has no attribute {name!r}")
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES) | set(_MODULES))


__version__ = "0.1.0"

__all__ = [
    "AR1",
    "CAR1",
    "Banded",
    "ComparisonError",
    "ConvergenceWarning",
    "DataError",
    "Design",
    "DesignError",
    "Exchangeable",
    "Formula",
    "FormulaError",
    "GlmmResult",
    "IdentificationWarning",
    "Independent",
    "LinearProbabilityWarning",
    "Limits",
    "LmmResult",
    "MA",
    "marginsplot",
    "MomentsResult",
    "NestedDesign",
    "NestingError",
    "ResidualStructure",
    "SeparationWarning",
    "SingularFitWarning",
    "TiersError",
    "TiersWarning",
    "Toeplitz",
    "Unstructured",
    "assemble",
    "deviance_function",
    "fit",
    "fit_moments",
    "parse",
    "optimize_theta",
    "plan_by_simulation",
    "plan_design",
    "pool",
    "prepare",
    "read_data",
    "run_study",
    "seed_binary_design",
    "seed_design",
    "simulate",
    "table",
    "vctest",
    "write_data",
]
