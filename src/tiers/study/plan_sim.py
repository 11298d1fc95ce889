"""Design planning for a GLMM design, by simulation.

`tiers.study.plan` answers for a linear design from the expected Fisher information in closed form.
A binary or count outcome has no such closed form: the information depends on the integral over
the random effects that the fit itself approximates (Laplace or adaptive quadrature), and the
first-order approximations of the literature (marginal quasi-likelihood) are biased for the
variance components exactly where planning matters (Rodriguez & Goldman 1995). So a GLMM design is
planned by simulation: ``replicates`` data sets of the design, each fitted by the correctly nested
GLMM with the approximation chosen (Laplace, or ``nagq`` adaptive quadrature points per level),
and per parameter the mean estimate, bias, empirical SD, mean reported SE, Wald coverage and, for
each covariate, the power: the share of fits whose two-sided Wald z test rejects ``beta = 0`` at
``alpha``, with its Monte Carlo standard error ``sqrt(p (1 - p) / R)``.

With a target (power or SE), sizes of the searched level are simulated in turn (those given, or
the design's, doubled until the target is met, at most `MAX_DOUBLINGS` times) and the smallest
size that meets it is reported; the simulated sizes are all kept, so the answer can be read with
its Monte Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tiers._lazy import stats
from tiers.errors import DesignError
from tiers.simulation.data import NestedDesign
from tiers.study.estimators import Estimator, default_estimators, describe

__all__ = ["MAX_DOUBLINGS", "SimulatedPlan", "plan_by_simulation"]

#: Without given sizes, a target search doubles the units at most this many times.
MAX_DOUBLINGS = 5


@dataclass(frozen=True)
class SimulatedPlan:
    """A GLMM design planned by simulation (`plan_by_simulation`).

    ``table`` holds one row per size and parameter: truth, mean, bias, sd (empirical), mean_se,
    coverage, power (covariates), power_mcse, n_ok, n_failed.
    """

    design: NestedDesign
    level: str
    estimator: Estimator
    approximation: str
    replicates: int
    seed: int
    alpha: float
    table: pd.DataFrame
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def at(self, size: int) -> pd.DataFrame:
        """The rows of one simulated size, indexed by parameter."""
        return self.table[self.table["size"] == size].set_index("parameter")

    def __repr__(self) -> str:
        sizes = sorted(set(self.table["size"]))
        return (
            f"<SimulatedPlan {self.approximation}: {self.replicates} replicates at "
            f"{self.level} = {sizes}>"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able document: NaN becomes None."""

        def num(x: Any) -> Any:
            if isinstance(x, float | np.floating):
                return float(x) if math.isfinite(x) else None
            return int(x) if isinstance(x, np.integer) else x

        return {
            "design": self.design.to_dict(),
            "method": "simulation",
            "approximation": self.approximation,
            "estimator": self.estimator.spec,
            "replicates": self.replicates,
            "seed": self.seed,
            "alpha": self.alpha,
            "level": self.level,
            "truth": self.design.true_parameters(),
            "results": [
                {k: num(v) for k, v in row.items()} for row in self.table.to_dict("records")
            ],
            "targets": {k: {kk: num(vv) for kk, vv in v.items()} for k, v in self.targets.items()},
            "notes": list(self.notes),
        }


def _summarise(study: Any, alpha: float) -> pd.DataFrame:
    """The study's summary with each covariate's power and its Monte Carlo SE.

    Not the intercept's: its rejection rate is a power only against the truth of zero effect.
    """
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    reps = study.replicates
    ok = reps[(reps["status"] == "ok") & np.isfinite(reps["se"]) & (reps["se"] > 0)]
    power = {}
    for (size, param), g in ok.groupby(["size", "parameter"]):
        if str(param).startswith("beta_") and param != "beta_intercept":
            p = float(np.mean(np.abs(g["estimate"] / g["se"]) > z))
            power[(int(size), str(param))] = (p, math.sqrt(p * (1.0 - p) / len(g)))
    s = study.summary
    cols = ["size", "parameter", "truth", "mean", "bias", "sd", "mean_se", "coverage", "n_ok",
            "n_failed"]  # fmt: skip
    out = s[cols].copy()
    keys = list(zip(out["size"].astype(int), out["parameter"].astype(str), strict=True))
    out["power"] = [power.get(k, (math.nan, math.nan))[0] for k in keys]
    out["power_mcse"] = [power.get(k, (math.nan, math.nan))[1] for k in keys]
    return out


def plan_by_simulation(
    design: NestedDesign,
    *,
    nagq: int = 1,
    replicates: int = 100,
    seed: int = 1,
    level: str | None = None,
    sizes: Iterable[int] | None = None,
    power_target: float | None = None,
    target_se: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    workers: int | None = None,
    progress: bool = False,
) -> SimulatedPlan:
    """Simulate a GLMM design and fit each data set; see the module docstring.

    Parameters
    ----------
    design : NestedDesign
        A GLMM design (family binomial or poisson); its SDs and coefficients are the truth.
    nagq : int, default 1
        1: the Laplace approximation; more: adaptive Gauss-Hermite quadrature with ``nagq``
        points per nested level (Stata's ``intpoints()``).
    replicates, seed, workers, progress
        As `tiers.study.runner.run_study`.
    level : str, optional
        The level whose units per parent the sizes are (default: the outermost).
    sizes : iterable of int, optional
        Sizes to simulate (default: the design's own; with a target, it doubled until met).
    power_target : float, optional
        The smallest simulated size at which each covariate's power reaches it.
    target_se : mapping PARAM -> SE, optional
        The smallest simulated size at which the mean reported SE is at or below it.
    alpha : float

    Raises
    ------
    DesignError
        Not a GLMM design, an unknown level or parameter, alpha or power outside (0, 1), a bad
        target or ``nagq``.
    """
    from tiers.study.runner import run_study

    if not isinstance(design, NestedDesign) or not design.is_glmm:
        raise DesignError(
            "plan_by_simulation plans a GLMM design (family binomial or poisson); a linear "
            "design is planned analytically by tiers.study.plan.plan_design"
        )
    for what, value in (("alpha", alpha), ("power", power_target)):
        if value is not None and not 0.0 < value < 1.0:
            raise DesignError(f"{what} must lie strictly between 0 and 1, got {value!r}")
    if isinstance(nagq, bool) or not isinstance(nagq, int) or nagq < 1:
        raise DesignError(f"nagq must be a whole number >= 1 (1: Laplace); got {nagq!r}")
    names = [lv.name for lv in design.levels]
    level = names[0] if level is None else level
    if level not in names:
        raise DesignError(f"no level named {level!r}; the levels are {names}")
    truth = design.true_parameters()
    for param, t in (target_se or {}).items():
        if param not in truth:
            raise DesignError(f"unknown parameter {param!r}; the parameters are {list(truth)}")
        if not (isinstance(t, int | float) and t > 0):
            raise DesignError(f"the target SE of {param} must be a positive number, got {t!r}")
    nested = default_estimators(design)[-1]
    est = Estimator("nested", "mixed", formula=nested.formula, nagq=None if nagq == 1 else nagq)
    approximation = describe(est, design)
    current = next(lv.units for lv in design.levels if lv.name == level)
    wanted = [current] if sizes is None else sorted({int(s) for s in sizes})
    searching = sizes is None and (power_target is not None or bool(target_se))
    frames: list[pd.DataFrame] = []
    covs = [f"beta_{cv.name}" for cv in design.covariates if cv.coef != 0]

    def run(size_list: list[int]) -> pd.DataFrame:
        study = run_study(design, [est], size_list, replicates, seed, level=level,
                          workers=workers, progress=progress)  # fmt: skip
        return _summarise(study, alpha)

    def met(rows: pd.DataFrame) -> bool:
        at = rows.set_index("parameter")
        ok = all(at.loc[p, "power"] >= power_target for p in covs) if power_target else True
        return ok and all(at.loc[p, "mean_se"] <= t for p, t in (target_se or {}).items())

    frames.append(run(wanted))
    size = current
    for _ in range(MAX_DOUBLINGS if searching else 0):
        if met(frames[-1]):
            break
        size *= 2
        frames.append(run([size]))
    table = pd.concat(frames, ignore_index=True)
    targets: dict[str, dict[str, Any]] = {}
    simulated = sorted(set(table["size"]))

    def first(ok: Any) -> int | None:
        return next((s for s in simulated if ok(table[table["size"] == s].set_index("parameter"))),
                    None)  # fmt: skip

    if power_target is not None:
        for p in covs:
            u = first(lambda at, p=p: at.loc[p, "power"] >= power_target)
            targets[p] = {"target_power": float(power_target), "units": u, "level": level}
    for p, t in (target_se or {}).items():
        u = first(lambda at, p=p, t=t: at.loc[p, "mean_se"] <= t)
        targets[p] = {"target_se": float(t), "units": u, "level": level}
    return SimulatedPlan(design, level, est, approximation, replicates, seed, alpha, table, targets,
                         _bias_notes(table, nagq))  # fmt: skip


def _bias_notes(table: pd.DataFrame, nagq: int) -> tuple[str, ...]:
    """A note per parameter whose bias is clear (over 3 Monte Carlo SEs and 10% of the truth).

    Then, if an SD is among them, why SDs are shrunk and what reduces it: ML shrinks the SD of a
    level with few groups towards zero, and the Laplace approximation shrinks SDs further for a
    binary outcome with few rows per group (Breslow & Lin 1995).
    """
    notes, sds = [], False
    for r in table.itertuples():
        n, truth = int(r.n_ok), float(r.truth)
        if n < 2 or not math.isfinite(r.sd) or truth == 0 or not math.isfinite(r.bias):
            continue
        if abs(r.bias) > 3.0 * r.sd / math.sqrt(n) and abs(r.bias) > 0.1 * abs(truth):
            sds = sds or str(r.parameter).startswith("sd_")
            notes.append(f"size {int(r.size)}: {r.parameter} is biased by {r.bias / truth:+.0%} "
                         f"of its true value {truth:g} over {n} fits")  # fmt: skip
    if sds:
        laplace = (
            ", and the Laplace approximation shrinks them further for a binary outcome with few "
            "rows per group (Breslow & Lin 1995): more groups, or nagq > 1 (adaptive quadrature, "
            "slower), reduce it"
            if nagq == 1
            else ": more groups reduce it"
        )
        notes.append(f"ML shrinks the SD of a level with few groups towards zero{laplace}")
    return tuple(notes)
