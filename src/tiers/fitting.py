"""``tiers.fit``: formula + data -> frozen result, through the stages of the pipeline.

parse -> build_frame -> build_factors -> structure (nested? slopes?) -> engine -> minimize_theta
-> LmmResult. The structure picks the engine once:

* ``nested``: nested random intercepts (the tree of scalar effects, analytic gradient);
* ``tree``: nested grouping with slopes or several terms on a level;
* ``crossed``: grouping factors that do not nest (blocked Cholesky).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiers._threads import single_thread_blas
from tiers.data.frame import ModelFrame, build_frame
from tiers.design.diagnostics import check_child_nesting, identical_partition_error, level_messages
from tiers.design.grouping import GroupingFactor, Nesting, build_factors, nested_chain
from tiers.design.terms import TermSpec, build_terms, slopes_without_within_variation
from tiers.engine.gaussian import ProfiledProblem
from tiers.engine.nested_scalar import NestedProblem
from tiers.errors import (
    ConvergenceWarning,
    DataError,
    IdentificationWarning,
    SingularFitWarning,
)
from tiers.formula.parse import Formula, parse
from tiers.optimize.minimize import fd_gradient, minimize_theta, value_hessian
from tiers.results.result import Deferred, LevelInfo, LmmResult, TermInfo
from tiers.variance.information import var_inference
from tiers.variance.sd import lr_vs_linear, sd_inference


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
        lme4 syntax (``"perform ~ tutoring + (1 | dist_id/school_id)"``, ``(x | g)``,
        ``(x || g)``, crossed ``(1 | a) + (1 | b)``) or Stata syntax (``"perform tutoring ||
        dist_id: || school_id: x, covariance(unstructured)"``, ``|| _all: R.factor``).
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
        start = time.perf_counter()
        if _prepared:
            return fit_prepared(
                _prepared["prepared"], reml=reml, problem=_prepared["problem"], start=start
            )
        return fit_prepared(prepare(formula, data, force=force), reml=reml, start=start)


@dataclass(frozen=True)
class Prepared:
    """A model's rows and grouping structure, decided once; fits can share it.

    ``engine`` is ``nested``, ``tree`` or ``crossed``; ``levels`` (outermost first) holds the
    terms of each level for the nested engines, ``terms`` all terms in theta order.
    """

    formula: Formula
    frame: ModelFrame
    factors: list[GroupingFactor]
    engine: str
    terms: list[TermSpec]
    nesting: Nesting | None = None
    levels: list[list[TermSpec]] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def prepare(formula: str | Formula, data: Any, *, force: bool = False) -> Prepared:
    """Parse, build the model frame and the grouping structure, run the diagnostics, pick the
    engine."""
    f = parse(formula) if isinstance(formula, str) else formula
    frame = build_frame(f, data)
    if frame.X.shape[1] == 0:
        raise DataError("the fixed part has no columns; keep at least the intercept")
    factors = build_factors(f, frame.data)
    if not force:
        check_child_nesting(f, frame.data, factors)
    terms = build_terms(f, frame.data, factors)
    _check_sizes(terms, frame.nobs)
    warns = [
        f"the slope of {name} in the term for {t.name} does not vary within any group: its "
        "variance cannot be told apart from the intercept's (not identified); drop it from the term"
        for t in terms
        for name in slopes_without_within_variation(t)
    ]
    distinct: dict[tuple[str, ...], GroupingFactor] = {}
    for gf in factors:
        distinct.setdefault(gf.columns, gf)
    nesting = nested_chain(list(distinct.values()))
    if nesting is None:
        return Prepared(f, frame, factors, "crossed", terms, warnings=tuple(warns))
    if nesting.identical and not force:
        coarse, fine = nesting.identical[0]
        raise identical_partition_error(f, frame.data, coarse, fine)
    levels = [[t for t in terms if t.factor.columns == gf.columns] for gf in nesting.factors]
    scalar = all(len(lv) == 1 and lv[0].intercept_only for lv in levels)
    ordered = [t for lv in levels for t in lv]
    return Prepared(
        f,
        frame,
        factors,
        "nested" if scalar else "tree",
        ordered,
        nesting,
        levels,
        warnings=tuple(warns),
    )


def _build_problem(prep: Prepared, y: np.ndarray, X: np.ndarray, reml: bool) -> ProfiledProblem:
    if prep.engine == "nested":
        assert prep.nesting is not None
        return NestedProblem(y, X, prep.nesting.tree, reml=reml)
    if prep.engine == "tree":
        from tiers.engine.nested_block import TreeProblem

        assert prep.nesting is not None
        return TreeProblem(y, X, prep.levels, list(prep.nesting.tree.parents), reml=reml)
    from tiers.engine.crossed import CrossedProblem

    return CrossedProblem(y, X, prep.terms, reml=reml)


def _optimize(problem: ProfiledProblem, prep: Prepared):
    if isinstance(problem, NestedProblem):
        K = problem.K
        return minimize_theta(problem.deviance_and_gradient, np.ones(K), np.zeros(K))
    lower, upper = problem.theta_lower, problem.theta_upper  # type: ignore[attr-defined]
    if getattr(problem, "has_gradient", False):
        fun = problem.deviance_and_gradient  # type: ignore[attr-defined]
        hessian = None
    else:
        fun = fd_gradient(problem.deviance, lower, upper)

        def hessian(x: np.ndarray, free: np.ndarray) -> np.ndarray:
            return value_hessian(problem.deviance, x, free)

    return minimize_theta(
        fun,
        problem.theta_start,
        lower,
        upper=upper,
        hessian=hessian,  # type: ignore[attr-defined]
    )


def _term_infos(prep: Prepared, problem: ProfiledProblem) -> tuple[TermInfo, ...]:
    out, at = [], 0
    for t in prep.terms:
        n = t.cov.n_theta
        out.append(
            TermInfo(
                t.name, t.znames, t.cov.kind, at, at + n, tuple(bool(v) for v in t.cov.diagonal())
            )
        )
        at += n
    return tuple(out)


def fit_prepared(
    prep: Prepared,
    *,
    reml: bool | None = None,
    y: np.ndarray | None = None,
    X: np.ndarray | None = None,
    problem: ProfiledProblem | None = None,
    warn: bool = True,
    start: float | None = None,
) -> LmmResult:
    """Fit a prepared model; ``y``/``X`` replace the response and fixed-effects matrix (a
    bootstrap or simulation replicate: the structure is reused).

    ``warn=False`` keeps the warnings on the result without emitting them (replicates).
    """
    start = time.perf_counter() if start is None else start
    f, frame = prep.formula, prep.frame
    use_reml = (f.reml if f.reml is not None else True) if reml is None else bool(reml)
    y = frame.y if y is None else np.ascontiguousarray(y, dtype=np.float64)
    X = frame.X if X is None else np.ascontiguousarray(X, dtype=np.float64)
    if problem is None:
        problem = _build_problem(prep, y, X, use_reml)
    elif problem.reml != use_reml:
        problem = problem.with_reml(use_reml)
    opt = _optimize(problem, prep)
    ev = problem.evaluate(opt.theta)
    sigma = problem.sigma(ev)
    terms = _term_infos(prep, problem)
    sd_names = tuple((t.group, z) for t in terms for z in t.znames) + (("Residual", ""),)
    theta = opt.theta

    def inference():
        with single_thread_blas():
            if isinstance(problem, NestedProblem):
                return sd_inference(problem, theta, sigma, names=sd_names), None
            return var_inference(
                problem,
                [t.cov for t in prep.terms],
                [t.name for t in prep.terms],
                [t.znames for t in prep.terms],
                [slice(t.start, t.stop) for t in terms],
                theta,
                sigma,
            )

    lrt = lr_vs_linear(problem, ev.deviance, opt.theta.size)
    factors = prep.nesting.factors if prep.nesting is not None else _distinct(prep.factors)
    levels = tuple(_level_info(gf) for gf in factors)
    notes = list(frame.notes) + _implicit_notes(factors)
    warns, level_notes = level_messages(tuple(factors))
    warns = list(prep.warnings) + warns
    notes += level_notes
    if prep.nesting is not None:
        for coarse, fine in prep.nesting.identical:
            warns.append(
                f"{coarse.name} and {fine.name} define the same {fine.nlevels:,} groups: their "
                "variance components are not identified and their split is arbitrary (fitted "
                "with force)"
            )
    emitted: list[tuple[str, type[Warning]]] = [(m, IdentificationWarning) for m in warns]
    singular = _singular_words(prep.terms, terms, opt.theta)
    if singular:
        msg = (
            f"boundary (singular) fit: {'; '.join(singular)}. The data show no variation of those "
            "effects beyond what the other terms and the residual explain; consider simplifying "
            "the random effects."
        )
        warns.append(msg)
        emitted.append((msg, SingularFitWarning))
    if not opt.converged:
        warns.append(opt.message)
        emitted.append((opt.message, ConvergenceWarning))
    if warn:
        for msg, category in emitted:
            warnings.warn(msg, category, stacklevel=4)
    return LmmResult(
        formula=f,
        reml=use_reml,
        nobs=frame.nobs,
        n_dropped=frame.n_dropped,
        xnames=frame.xnames,
        beta=_ro(problem.beta(ev)),
        unscaled_vcov=_ro(problem.unscaled_vcov(ev)),
        levels=levels,
        theta=_ro(opt.theta),
        sigma=sigma,
        criterion=ev.deviance,
        opt=opt,
        lr_linear=lrt,
        notes=tuple(notes),
        warnings=tuple(warns),
        fit_seconds=time.perf_counter() - start,
        engine=prep.engine,
        data_signature=_signature(y),
        terms=terms,
        _var_inference=Deferred(inference),
        _problem=problem,
        _refit_args={"prepared": prep, "problem": problem, "nesting": prep.nesting},
    )


def _singular_words(
    specs: list[TermSpec], infos: tuple[TermInfo, ...], theta: np.ndarray
) -> list[str]:
    """Plain words for each term on the boundary: an SD at zero, or effects perfectly correlated
    (a zero diagonal entry of T after the first: the effect is a fixed multiple of the others)."""
    out = []
    for spec, info in zip(specs, infos, strict=True):
        th = theta[info.start : info.stop]
        if not any(d and v < 1e-4 for d, v in zip(info.diagonal, th, strict=True)):
            continue
        sds = np.sqrt(np.clip(np.diag(spec.cov.covariance(th)), 0.0, None))
        scale = max(float(sds.max()), 1.0)
        zero = [z for z, sd in zip(info.znames, sds, strict=True) if sd < 1e-4 * scale]
        if zero:
            out.append(f"the SD of {', '.join(zero)} for {info.group} is estimated as zero")
        else:
            out.append(
                f"the effects of {info.group} are perfectly correlated (a correlation of +-1)"
            )
    return out


def _distinct(factors: list[GroupingFactor]) -> list[GroupingFactor]:
    seen: dict[tuple[str, ...], GroupingFactor] = {}
    for gf in factors:
        seen.setdefault(gf.columns, gf)
    return sorted(seen.values(), key=lambda g: g.nlevels)


def _implicit_notes(factors) -> list[str]:
    return [
        f"{gf.columns[-1]}: labels repeat across {':'.join(gf.columns[:-1])}; {gf.nlevels:,} "
        f"groups formed as {' x '.join(gf.columns)}"
        for gf in factors
        if gf.implicit
    ]


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


def _check_sizes(terms: list[TermSpec], nobs: int) -> None:
    """lme4's checks: a term cannot have as many random effects as there are observations."""
    for t in terms:
        nre = t.nlevels * t.q
        if nre < nobs:
            continue
        if t.q == 1:
            what = (
                f"the grouping factor {t.name!r} has {t.nlevels:,} groups for {nobs:,} "
                "observations, one observation per group"
            )
        else:
            what = (
                f"the term for {t.name!r} has {nre:,} random effects ({t.nlevels:,} groups x "
                f"{t.q} effects) for {nobs:,} observations"
            )
        raise DataError(
            f"{what}: its variance cannot be told apart from the residual variance (lme4 refuses "
            "this too); remove the term, use fewer effects, or use data with repeated "
            "observations per group"
        )
