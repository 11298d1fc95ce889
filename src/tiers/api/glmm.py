"""Fit a GLMM: formula parts -> design -> response checks -> PIRLS objective -> optimum -> result.

`fit_glmm` is what `tiers.fit` calls when a family is given (or the formula is a Stata ``melogit``,
``meprobit``, ``mecloglog`` or ``mepoisson`` command).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from tiers.api.glmm_result import GlmmResult
from tiers.data.glm_response import glm_response
from tiers.design.design import Design, build_design
from tiers.design.diagnostics import Limits
from tiers.engine.agq_nested import MAX_CELLS, check_size
from tiers.engine.glm_family import Family, check_response
from tiers.engine.glm_family import family as make_family
from tiers.engine.glmm_sparse import RandomSystem, SparseSystem
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm, PirlsError
from tiers.errors import (
    ConvergenceWarning,
    DataError,
    SeparationWarning,
    SingularFitWarning,
    TiersError,
    TiersWarning,
)
from tiers.formula.glm import LINKS, GlmFormula, read_glm
from tiers.formula.types import Formula
from tiers.optimize.glmm import (
    GlmmObjective,
    deviance_hessian,
    optimize_glmm,
    start_values,
    subsample_start,
)
from tiers.results.glmm import GlmmFit, GlmmTerm


def _family(spec: GlmFormula, family: str | Family | None, link: str | None) -> Family:
    if isinstance(family, Family):
        fam = family if link is None else make_family(family.name, link)
    elif family is not None:
        if not isinstance(family, str):
            raise DataError(f"family must be one of {', '.join(map(repr, LINKS))} or a Family")
        fam = make_family(family, link)
    elif spec.family is not None:
        fam = make_family(spec.family, link or spec.link)
    else:
        fam = make_family("binomial", link)
    if spec.family is not None and (spec.family, spec.link) != (fam.name, fam.link):
        if family is not None or link is not None:
            raise DataError(
                f"the Stata command asks for {spec.family}/{spec.link} but family/link say "
                f"{fam.name}/{fam.link}: give one"
            )
    return fam


#: Stata's melogit/meprobit/mepoisson integrate at 7 adaptive points per level by default.
STATA_INTPOINTS = 7


def _stata_default(spec: GlmFormula, design: Design) -> tuple[int, str | None]:
    """Stata's default of 7 points where tiers has the quadrature, else Laplace with a note."""
    quadrature = (len(design.terms) == 1 and design.terms[0].q == 1) or design.engine == "nested"
    cells = design.frame.nobs * STATA_INTPOINTS ** len(design.terms)
    if quadrature and cells <= MAX_CELLS:
        return STATA_INTPOINTS, None
    why = "this random part" if not quadrature else "a model this size"
    return 1, (
        f"fitted by the Laplace approximation: Stata's default of {STATA_INTPOINTS} adaptive "
        f"quadrature points is not available in tiers for {why} (write intpoints(#) or laplace "
        "to choose)"
    )


def _nagq(spec: GlmFormula, nagq: int | None, design: Design) -> int:
    n = spec.nagq if nagq is None else nagq
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"nagq must be a positive whole number (1: Laplace); got {n!r}")
    single = len(design.terms) == 1 and design.terms[0].q == 1
    if n > 1 and not single and design.engine != "nested":
        raise DataError(
            f"adaptive quadrature with nagq={n} is available for one scalar random effect "
            "(1 | group), as in lme4, and for nested random intercepts (1 | a/b/c), as in "
            f"Stata's melogit; this model has {len(design.terms)} terms with slopes or crossed "
            "factors: use nagq=1 (Laplace)"
        )
    if n > 1 and not single:
        check_size(design.frame.nobs, len(design.terms), int(n))
    return int(n)


def _separation(problem: Glmm, beta: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """The predictor that separates a binary outcome, if the GLM's fitted probabilities hit 0 or 1.

    Under (quasi-)complete separation the GLM's coefficient diverges and some fitted
    probabilities reach 0 or 1 (Albert & Anderson 1984); the predictor with the largest
    standardized coefficient is named.
    """
    if problem.family.name != "binomial":
        return []
    mu = problem.family.linkinv(problem.offset + problem.X @ beta)
    if not np.any((mu < 1e-8) | (mu > 1.0 - 1e-8)):
        return []
    size = np.abs(beta) * problem.X.std(axis=0)
    size[[i for i, n in enumerate(names) if n == "(Intercept)"]] = -1.0
    if size.max() <= 0:
        return []
    name = names[int(np.argmax(size))]
    return [
        f"{name}: the outcome is (quasi-)completely separated by this predictor (fitted "
        "probabilities of 0 or 1 in the model without random effects); its estimate and standard "
        "error are not meaningful: drop it or combine its categories"
    ]


def _same(y: np.ndarray, system: RandomSystem) -> str:
    """Say how many groups have every outcome the same (they can drive an SD to zero)."""
    parts = []
    for t in system.terms:
        lo = np.full(t.nlevels, np.inf)
        hi = np.full(t.nlevels, -np.inf)
        np.minimum.at(lo, t.codes, y)
        np.maximum.at(hi, t.codes, y)
        same = int(np.sum(lo == hi))
        if same:
            parts.append(f"{same:,} of the {t.nlevels:,} groups of {t.name}")
    if not parts:
        return ""
    return (
        "; every outcome is the same in "
        + ", ".join(parts)
        + " (fine, but such groups can drive an SD to the boundary)"
    )


def _sqrt_diag(cov: np.ndarray) -> np.ndarray:
    """Standard errors: NaN where the Hessian's inverse is not positive on the diagonal."""
    d = np.diag(cov)
    return np.sqrt(np.where(d >= 0, d, np.nan))


def fit_glmm(
    formula: str | Formula,
    data: Any,
    *,
    family: str | Family | None = None,
    link: str | None = None,
    nagq: int | None = None,
    trials: str | None = None,
    force: bool = False,
    limits: Limits | None = None,
) -> GlmmResult:
    """Fit a generalized linear mixed model by Laplace or adaptive Gauss-Hermite quadrature.

    See `tiers.fit` for the parameters.
    """
    start = time.perf_counter()
    spec = read_glm(formula) if isinstance(formula, str) else GlmFormula(formula.text, "")
    fam = _family(spec, family, link)
    base: str | Formula = spec.base if isinstance(formula, str) else formula
    design = build_design(base, data, force=force, limits=limits, glmm=True)
    note = None
    if spec.family is not None and spec.nagq is None and nagq is None:
        n, note = _stata_default(spec, design)
    else:
        n = _nagq(spec, nagq, design)
    resp = glm_response(design.frame, data, spec, trials=trials)
    if fam.name != "binomial" and resp.trials_name is not None:
        raise DataError(
            f"binomial trials ({resp.trials_name}) were given for the {fam.name} family: drop "
            "them, or use family='binomial'; for counts per unit of exposure use "
            "offset(log(exposure))"
        )
    if fam.name == "binomial" and resp.trials_name is None and np.any(resp.successes > 1):
        raise DataError(
            f"a binomial response must lie in [0, 1]; {design.formula.response!r} reaches "
            f"{resp.successes.max():g}: for counts of successes give the trials "
            "(cbind(successes, failures) ~ ..., trials='column', or Stata's binomial(column))"
        )
    check_response(
        fam,
        resp.successes,
        resp.trials,
        resp.offset,
        response=design.formula.response,
        trials_name=resp.trials_name,
    )
    wt = resp.trials if fam.name == "binomial" else np.ones_like(resp.successes)
    y = resp.successes / wt if fam.name == "binomial" else resp.successes
    system: RandomSystem
    if design.engine == "nested" and design.nesting is not None:
        system = TreeSystem(design.terms, design.nesting.tree)
    else:
        system = SparseSystem(design.terms, design.frame.nobs)
    problem = Glmm(y, wt, resp.offset, design.frame.X, system, fam)
    x0, glm_ok = start_values(problem)
    warns = _separation(problem, x0[problem.n_theta :], design.frame.xnames)
    # a large nested fit starts from its subsample's optimum when PIRLS runs there
    sub = subsample_start(problem, n, x0)
    if sub is not None and GlmmObjective(problem, n)(sub[0]) >= 1e299:
        sub = None
    if sub is None and GlmmObjective(problem, n)(x0) >= 1e299:
        raise TiersError(
            "the penalized IRLS (inner iteration) fails at the start values (the GLM's "
            "coefficients, lme4's theta): the outcome may be separated by a predictor or the "
            "offset may be extreme; check the data, or simplify the fixed part"
        )
    if sub is None:
        opt, polished = optimize_glmm(problem, n, x0)
    else:
        opt, polished = optimize_glmm(problem, n, sub[0], curvature=sub[1])
    k = problem.n_theta
    theta, beta = opt.theta[:k], opt.theta[k:]
    at_bound = np.asarray(opt.at_bound)
    if polished is not None and np.array_equal(polished[1], ~at_bound):
        H, free = polished
    else:
        H, free = deviance_hessian(problem, n, opt.theta)
    try:
        cov = np.full((opt.theta.size,) * 2, np.nan)
        idx = np.flatnonzero(free)
        cov[np.ix_(idx, idx)] = 2.0 * np.linalg.inv(H)
        if np.any(np.linalg.eigvalsh(0.5 * (H + H.T)) <= 0):
            raise np.linalg.LinAlgError("not positive definite")
    except np.linalg.LinAlgError:
        cov[:] = np.nan
        warns.append(
            "the Hessian of the deviance is singular or not positive definite at the end point: "
            "standard errors are not available (some parameter is not determined by the data)"
        )
    try:
        m = problem.modes(theta, beta)
    except PirlsError as exc:
        raise TiersError(
            f"the penalized IRLS (inner iteration) fails at the end point ({exc}): the "
            "conditional modes are not determined; simplify the random part or check for "
            "separation"
        ) from None
    cv = system.cond_var()
    frame_data = design.frame.data
    terms = []
    for t, T, b, v in zip(system.terms, system.lambda_blocks(), system.b(m.u), cv, strict=True):
        terms.append(
            GlmmTerm(
                group=t.name,
                znames=t.znames,
                covariance=T @ T.T,
                b=b,
                cond_var=np.einsum("ij,njk,lk->nil", T, v, T),
                levels=tuple(t.factor.labels(frame_data)),
            )
        )
    if not opt.converged:
        warns.append(f"the optimum is not certified: {opt.message}")
    if any(opt.at_bound[:k]):
        names = [nm for nm, at in zip(design.theta_names, opt.at_bound[:k], strict=True) if at]
        warns.append(
            f"singular fit: {', '.join(names)} estimated at zero (boundary)" + _same(y, system)
        )
    if not glm_ok:
        warns.append("the GLM without random effects (start values) did not converge")
    fit = GlmmFit(
        formula=spec.text,
        family=fam.name,
        link=fam.link,
        nagq=n,
        nobs=design.frame.nobs,
        xnames=design.frame.xnames,
        beta=beta.copy(),
        vcov=cov[k:, k:].copy(),
        theta=theta.copy(),
        theta_names=design.theta_names,
        theta_se=_sqrt_diag(cov[:k, :k]),
        terms=tuple(terms),
        deviance=float(opt.deviance),
        saturated=problem.saturated,
        eta=m.eta,
        mu=m.mu,
        offset=resp.offset,
        offset_terms=resp.offset_names,
        ngroups={t.name: t.nlevels for t in design.terms},
        opt=opt,
        exponentiate=spec.exponentiate,
        warnings=tuple(warns),
        notes=tuple(design.formula.notes)
        + tuple(design.frame.notes)
        + ((note,) if note is not None else ()),
        seconds=time.perf_counter() - start,
    )
    for w in warns:
        cat: type[TiersWarning] = (
            SingularFitWarning if w.startswith("singular") else ConvergenceWarning
        )
        if "separated" in w:
            cat = SeparationWarning
        warnings.warn(w, cat, stacklevel=3)
    return GlmmResult(fit, design, fam, problem)
