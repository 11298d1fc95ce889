"""tiers: hierarchical (multilevel) linear mixed models, fast and checked against lme4.

>>> import tiers
>>> data = tiers.simulate(tiers.seed_design(districts=5), seed=1)
>>> res = tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", data)
>>> print(res)                      # Stata's layout
>>> print(res.summary("lme4"))      # lme4's layout
"""

from __future__ import annotations

# the subpackages the README names, reachable after a plain ``import tiers``
# (``tiers.panel.fixed_effects``, ``tiers.report.comparison.compare``, ``tiers.comparison``)
from tiers import inference as inference
from tiers import panel as panel
from tiers import report as report
from tiers.api import LmmResult, assemble, deviance_function, fit, optimize_theta, prepare
from tiers.api.reading import read_data
from tiers.data.io import write_data
from tiers.design.design import Design
from tiers.design.diagnostics import Limits
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
from tiers.inference import lrtest as _lrtest  # noqa: F401
from tiers.moments import MomentsResult, fit_moments
from tiers.report import comparison as comparison
from tiers.simulation.data import NestedDesign, simulate
from tiers.simulation.presets import seed_binary_design, seed_design


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
    # ``tiers.plot`` needs matplotlib: imported on first use, so ``import tiers`` stays light
    if name == "plot":
        import importlib

        return importlib.import_module("tiers.plot")
    if name == "GlmmResult":  # the GLMM result type, imported with the first GLMM
        from tiers.api.glmm_result import GlmmResult

        return GlmmResult
    raise AttributeError(f"module 'tiers' has no attribute {name!r}")


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
