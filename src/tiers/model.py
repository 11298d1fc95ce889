"""``tiers.fit``: formula + data -> frozen result, through the stages of the pipeline.

parse -> build_frame -> build_factors / nested_chain -> NestedProblem -> minimize_theta -> LmmResult
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._threads import single_thread_blas
from .diagnostics import check_child_nesting, identical_partition_error, level_messages
from .errors import (
    ConvergenceWarning,
    DataError,
    IdentificationWarning,
    NestingError,
    SingularFitWarning,
)
from .formula import Formula, parse
from .frame import ModelFrame, build_frame
from .grouping import GroupingFactor, Nesting, build_factors, nested_chain
from .nested import NestedProblem
from .optimize import minimize_theta
from .results import LevelInfo, LmmResult
from .varcomp import lr_vs_linear, sd_inference


def fit(
    formula: str | Formula,
    data: Any,
    *,
    reml: bool | None = None,
    force: bool = False,
    _prepared: dict[str, Any] | None = None,
) -> LmmResult:
    """Fit a linear mixed model by REML (default, as lme4) or ML.

    Parameters
    ----------
    formula : str or Formula
        lme4 syntax (``"perform ~ tutoring + (1 | dist_id/school_id)"``) or Stata syntax
        (``"perform tutoring || dist_id: || school_id:"``).
    data : pandas or polars DataFrame
    reml : bool, optional
        REML (True) or ML (False). Default: what the formula says (Stata's ``, mle``), else REML.
    force : bool
        Fit even when the diagnostics find the variance components not identified, or a declared
        child not nested in its parent; the warning is kept on the result.

    Returns
    -------
    LmmResult

    Raises
    ------
    FormulaError, DataError, NestingError
        With a message naming the column or term and what to do.
    """
    with single_thread_blas():
        return _fit(formula, data, reml=reml, force=force, _prepared=_prepared)


@dataclass(frozen=True)
class Prepared:
    """A model's rows and grouping structure, decided once; fits can share it.

    ``fit_prepared`` fits it, optionally with another response and fixed-effects matrix of the same
    shape (a bootstrap or simulation replicate: the tree and its renumbering are reused).
    """

    formula: Formula
    frame: ModelFrame
    factors: list[GroupingFactor]
    nesting: Nesting


def prepare(formula: str | Formula, data: Any, *, force: bool = False) -> Prepared:
    """Parse, build the model frame and the grouping structure, and run the nesting diagnostics."""
    f = parse(formula) if isinstance(formula, str) else formula
    frame = build_frame(f, data)
    if frame.X.shape[1] == 0:
        raise DataError("the fixed part has no columns; keep at least the intercept")
    factors = build_factors(f, frame.data)
    _check_identified_sizes(factors, frame.nobs)
    if not force:
        check_child_nesting(f, frame.data, factors)
    nesting = nested_chain(factors)
    if nesting is None or not all(t.is_intercept_only for t in f.random):
        raise NestingError(
            "this model has crossed grouping factors or random slopes; tiers' nested engine "
            "fits nested random intercepts only, and the general engine is not available yet"
        )
    if nesting.identical and not force:
        coarse, fine = nesting.identical[0]
        raise identical_partition_error(f, frame.data, coarse, fine)
    return Prepared(f, frame, factors, nesting)


def _fit(
    formula: str | Formula,
    data: Any,
    *,
    reml: bool | None,
    force: bool,
    _prepared: dict[str, Any] | None,
) -> LmmResult:
    start = time.perf_counter()
    if _prepared:
        prep: Prepared = _prepared["prepared"]
        problem: NestedProblem | None = _prepared["problem"]
    else:
        prep = prepare(formula, data, force=force)
        problem = None
    return fit_prepared(prep, reml=reml, problem=problem, start=start)


def fit_prepared(
    prep: Prepared,
    *,
    reml: bool | None = None,
    y: np.ndarray | None = None,
    X: np.ndarray | None = None,
    problem: NestedProblem | None = None,
    warn: bool = True,
    start: float | None = None,
) -> LmmResult:
    """Fit a prepared model; ``y``/``X`` replace the response and fixed-effects matrix.

    ``warn=False`` keeps the warnings on the result without emitting them (replicates).
    """
    start = time.perf_counter() if start is None else start
    f, frame, nesting = prep.formula, prep.frame, prep.nesting
    use_reml = (f.reml if f.reml is not None else True) if reml is None else bool(reml)
    y = frame.y if y is None else np.ascontiguousarray(y, dtype=np.float64)
    X = frame.X if X is None else np.ascontiguousarray(X, dtype=np.float64)
    if problem is None:
        problem = NestedProblem(y, X, nesting.tree, reml=use_reml)
    elif problem.reml != use_reml:
        problem = problem.with_reml(use_reml)
    K = problem.K
    opt = minimize_theta(problem.deviance_and_gradient, np.ones(K), np.zeros(K))
    ev = problem.evaluate(opt.theta)
    sigma = problem.sigma(ev)
    beta = problem.beta(ev)
    unscaled = problem.unscaled_vcov(ev)
    sdi = sd_inference(problem, opt.theta, sigma)
    lrt = lr_vs_linear(problem, ev.deviance)

    levels = tuple(_level_info(gf) for gf in nesting.factors)
    notes = list(frame.notes)
    for gf in nesting.factors:
        if gf.implicit:
            parent = ":".join(gf.columns[:-1])
            notes.append(
                f"{gf.columns[-1]}: labels repeat across {parent}; {gf.nlevels:,} groups formed as "
                f"{' x '.join(gf.columns)}"
            )
    warns, level_notes = level_messages(nesting.factors)
    notes += level_notes
    for coarse, fine in nesting.identical:
        warns.append(
            f"{coarse.name} and {fine.name} define the same {fine.nlevels:,} groups: their variance "
            "components are not identified and their split is arbitrary (fitted with force)"
        )
    emitted: list[tuple[str, type[Warning]]] = [(m, IdentificationWarning) for m in warns]
    zero = [lv.name for lv, th in zip(levels, opt.theta, strict=True) if th < 1e-4]
    if zero:
        msg = (
            f"boundary (singular) fit: the SD of {', '.join(zero)} is estimated as zero; the data "
            "show no variation between those groups beyond what the other levels and the "
            "residual explain. Consider removing that level."
        )
        warns.append(msg)
        emitted.append((msg, SingularFitWarning))
    if not opt.converged:
        warns.append(opt.message)
        emitted.append((opt.message, ConvergenceWarning))
    if warn:
        for msg, category in emitted:
            warnings.warn(msg, category, stacklevel=4)
    elapsed = time.perf_counter() - start
    return LmmResult(
        formula=f,
        reml=use_reml,
        nobs=frame.nobs,
        n_dropped=frame.n_dropped,
        xnames=frame.xnames,
        beta=_ro(beta),
        unscaled_vcov=_ro(unscaled),
        levels=levels,
        theta=_ro(opt.theta),
        sigma=sigma,
        criterion=ev.deviance,
        opt=opt,
        sd_inference=sdi,
        lr_linear=lrt,
        notes=tuple(notes),
        warnings=tuple(warns),
        fit_seconds=elapsed,
        engine="nested",
        data_signature=_signature(y),
        _problem=problem,
        _refit_args={"prepared": prep, "problem": problem, "nesting": nesting},
    )


def _ro(a: np.ndarray) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _signature(y: np.ndarray) -> tuple[float, float]:
    """A cheap fingerprint of the rows used (sum and sum of squares of y), so comparisons can refuse
    fits to other rows; row order does not change a likelihood, and does not change this."""
    return float(np.sum(y)), float(y @ y)


def _level_info(gf: GroupingFactor) -> LevelInfo:
    sizes = gf.sizes()
    return LevelInfo(
        name=gf.name,
        columns=gf.columns,
        ngroups=gf.nlevels,
        min_obs=int(sizes.min()),
        mean_obs=float(sizes.mean()),
        max_obs=int(sizes.max()),
        implicit=gf.implicit,
    )


def _check_identified_sizes(factors: list[GroupingFactor], nobs: int) -> None:
    for gf in factors:
        if gf.nlevels >= nobs:
            raise DataError(
                f"the grouping factor {gf.name!r} has {gf.nlevels:,} groups for {nobs:,} "
                "observations, one observation per group: its variance cannot be told apart from "
                "the residual variance (lme4 refuses this too); remove the term or use data with "
                "repeated observations per group"
            )
