"""`tiers.fit` and the staged API: prepare -> deviance_function -> optimize_theta -> assemble."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast, overload

import numpy as np
from numpy.typing import ArrayLike

from tiers._threads import single_thread_blas
from tiers.api.result import LmmResult
from tiers.api.weighting import drop_zero_weights as drop_zero
from tiers.api.weighting import vce_option, weight_spec
from tiers.design.design import Design, build_design
from tiers.design.diagnostics import Limits
from tiers.design.summary import SummaryFrame
from tiers.engine.contract import Engine
from tiers.engine.registry import build_engine
from tiers.errors import FormulaError, InferenceError
from tiers.fitting import assemble as _assemble
from tiers.fitting import fit_design, resolve_reml
from tiers.formula.parse import parse
from tiers.formula.residuals import ResidualStructure
from tiers.formula.types import Formula
from tiers.optimize.minimize import OptSummary, certify
from tiers.variance.vce import check_vce

if TYPE_CHECKING:
    from tiers.api.glmm_result import GlmmResult
    from tiers.engine.glm_family import Family

#: Stata's GLMM commands: a formula starting with one is fitted as a GLMM without ``family=``.
_GLMM_COMMANDS = ("melogit", "meprobit", "mecloglog", "mepoisson")


def _is_dask_frame(data: object) -> bool:
    """`tiers.scale.fit.is_dask_frame`, importing tiers.scale only where Dask is loaded."""
    if "dask" not in sys.modules:  # a Dask frame cannot exist without it
        return False
    from tiers.scale.fit import is_dask_frame

    return is_dask_frame(data)


@overload
def fit(
    formula: str | Formula,
    data: Any,
    *,
    reml: bool | None = None,
    force: bool = False,
    limits: Limits | None = None,
    residuals: ResidualStructure | None = None,
    weights: str | Mapping[str, str] | None = None,
    weight_type: str | None = None,
    pwscale: str = "none",
    conditional: bool = True,
    vce: str = "model",
    drop_zero_weights: bool = False,
    family: None = None,
    link: None = None,
    nagq: None = None,
    trials: None = None,
) -> LmmResult: ...


@overload
def fit(
    formula: str | Formula,
    data: Any,
    *,
    force: bool = False,
    limits: Limits | None = None,
    family: str | Family,
    link: str | None = None,
    nagq: int | None = None,
    trials: str | None = None,
) -> GlmmResult: ...


def fit(
    formula: str | Formula,
    data: Any,
    *,
    reml: bool | None = None,
    force: bool = False,
    limits: Limits | None = None,
    residuals: ResidualStructure | None = None,
    weights: str | Mapping[str, str] | None = None,
    weight_type: str | None = None,
    pwscale: str = "none",
    conditional: bool = True,
    vce: str = "model",
    drop_zero_weights: bool = False,
    family: str | Family | None = None,
    link: str | None = None,
    nagq: int | None = None,
    trials: str | None = None,
) -> LmmResult | GlmmResult:
    """Fit a linear mixed model by REML (default, as lme4) or ML, or a GLMM with ``family=``.

    Parameters
    ----------
    formula : str or Formula
        lme4 syntax (``"perform ~ tutoring + (1 | dist_id/school_id)"``, ``(x | g)``,
        ``(x || g)``, crossed ``(1 | a) + (1 | b)``) or Stata syntax (``"perform tutoring ||
        dist_id: || school_id: x, covariance(unstructured)"``, ``|| _all: R.factor``).
    data : pandas, polars or Dask DataFrame
        A `dask.dataframe.DataFrame` (or ``tiers.read_data("data/*.parquet", lazy=True)``) is
        reduced to sufficient statistics on the active Dask scheduler and fitted on them (nested
        or crossed, intercepts and slopes; see `tiers.scale`): the result is the same as in memory, except that
        what needs the rows again (fitted values, residuals, the bootstrap) refuses.
    reml : bool, optional
        REML (True) or ML (False). Default: what the formula says (Stata's ``, mle``), else REML.
    force : bool
        Fit even when the diagnostics find the variance components not identified, or a declared
        child not nested in its parent; the warning is kept on the result.
    limits : tiers.Limits, optional
        The size of model refused before fitting (covariance parameters, memory, estimated
        time); default `tiers.design.diagnostics.LIMITS`. Raise them to fit larger models.
    residuals : ResidualStructure, optional
        The residuals' structure within the innermost group: ``tiers.AR1("wave")``,
        ``tiers.CAR1("months")``, ``tiers.Toeplitz("wave", 2)``, ``tiers.MA("wave", 2)``, ``tiers.Banded("wave", 1)``,
        ``tiers.Exchangeable()``,
        ``tiers.Unstructured("wave")``,
        ``tiers.Independent(by="stratum")`` (see `tiers.formula.residuals`); Stata's
        ``residuals()`` option says the same in the formula. Default: independent residuals.
    weights : str or dict, optional
        A column of weights, or ``{level: column}`` for sampling weights at several levels (the
        one key that is not a grouping level names the observations': ``{"student": "w1",
        "school": "w2"}``).
    weight_type : {"precision", "frequency", "sampling"}, optional
        ``precision`` (default for one column): lme4's ``weights=``, residual variance
        ``sigma^2 / w``; ``frequency``: each row counts ``w`` times (Stata's ``fweight``);
        ``sampling`` (default for a mapping): inverse selection probabilities, fitted by
        pseudo-maximum likelihood (Stata's ``pweight``).
    pwscale : {"none", "size", "effective", "gk"}
        Scaling of level-1 sampling weights (Stata's ``pwscale()``); default as given.
    conditional : bool
        Level-1 sampling weights are conditional on their cluster (Stata's convention, default);
        False for overall weights (WeMix's default), divided by the weight of the level above.
    vce : {"model", "robust", "cr2"}
        Standard errors: the model's (default), the sandwich clustered on the top level (every
        parameter; Stata's ``vce(robust)``; fitted by ML), or CR2 for the fixed effects with
        Satterthwaite df (clubSandwich's). Sampling weights always get the sandwich. Stata's
        ``vce()`` in the formula does the same.
    drop_zero_weights : bool
        Drop the rows whose precision weight is zero (they carry no information) instead of
        refusing them; the count is said in the notes.

    family : {"binomial", "poisson"} or Family, optional
        Fit a generalized linear mixed model (lme4's ``glmer``) by Laplace or adaptive
        quadrature. Also implied by a Stata formula starting with ``melogit``, ``meprobit``,
        ``mecloglog`` or ``mepoisson``. The response is 0/1, ``cbind(successes, failures)``, the
        successes (or a proportion) with ``trials``, or a count; ``offset(log(exposure))`` in the
        formula (Stata: ``exposure(var)``, ``offset(var)``). The linear model's options
        (``reml``, ``residuals``, weights, ``vce``) do not apply.
    link : {"logit", "probit", "cloglog", "log"}, optional
        Default logit (binomial), log (Poisson).
    nagq : int, optional
        Adaptive Gauss-Hermite points for one scalar random effect or nested random intercepts;
        default 1 (Laplace), or the formula's ``intpoints(#)`` (Stata's commands: 7).
    trials : str, optional
        The column of binomial trials.

    Returns
    -------
    LmmResult, or GlmmResult for a GLMM

    Raises
    ------
    FormulaError, DataError, NestingError
        With a message naming the column or term and what to do.
    InferenceError
        A Stata formula with ``dfmethod(kroger)`` and ``reml=False``.
    """
    first = formula.split(None, 1)[:1] if isinstance(formula, str) else []
    glmm = family is not None or (bool(first) and first[0].lower() in _GLMM_COMMANDS)
    if glmm or link is not None or nagq is not None or trials is not None:
        if not glmm:
            raise TypeError("link=, nagq= and trials= need family= ('binomial' or 'poisson')")
        lmm_only = {
            "reml": reml is not None,
            "residuals": residuals is not None,
            "weights": weights is not None or weight_type is not None,
            "pwscale": pwscale != "none",
            "conditional": conditional is not True,
            "vce": vce != "model",
            "drop_zero_weights": bool(drop_zero_weights),
        }
        given = [name for name, on in lmm_only.items() if on]
        if given:
            raise TypeError(
                f"{', '.join(given)} apply to linear mixed models; a GLMM (family=) is fitted by "
                "maximum likelihood without them"
            )
        from tiers.api.glmm import fit_glmm

        with single_thread_blas():
            return fit_glmm(
                formula,
                data,
                family=family,
                link=link,
                nagq=nagq,
                trials=trials,
                force=force,
                limits=limits,
            )
    start = time.perf_counter()
    formula = with_residuals(formula, residuals)
    if _is_dask_frame(data):
        from tiers.api.summarised import SummarisedResult
        from tiers.scale.fit import fit_dask

        _dask_options(weights, vce, drop_zero_weights)
        with single_thread_blas():
            res = fit_dask(
                formula, data, reml=reml, force=force, limits=limits, result_type=SummarisedResult
            )
        return cast(LmmResult, res)
    with single_thread_blas():
        spec = weight_spec(weights, weight_type, pwscale, conditional)
        data, spec = drop_zero(data, spec, drop_zero_weights)
        vce_spec = vce_option(vce)
        design = build_design(formula, data, force=force, limits=limits, weights=spec)
        rw = design.weights
        if design.formula.dfmethod == "kenward-roger" and rw is not None and rw.sampling:
            from tiers.inference.kenward_roger import sampling_refusal

            raise InferenceError(f"the formula asks for dfmethod(kroger): {sampling_refusal()}")
        if design.formula.dfmethod == "kenward-roger" and reml is False:
            raise InferenceError(
                "the formula asks for dfmethod(kroger), which needs REML: fit with reml=True "
                "(or drop the option)"
            )
        if vce_spec is not None and design.formula.vce is not None:
            raise ValueError("vce is given twice, in the formula and as vce=; give it once")
        out = fit_design(design, reml=reml, start=start, result_type=LmmResult, vce=vce_spec)
    return cast(LmmResult, out)


def with_residuals(formula: str | Formula, residuals: ResidualStructure | None) -> str | Formula:
    """The formula with ``residuals`` set, refusing a second structure or another type."""
    if residuals is None:
        return formula
    if not isinstance(residuals, ResidualStructure):
        raise FormulaError(
            "residuals= takes a residual structure: tiers.AR1('time'), tiers.CAR1('time'), "
            "tiers.Toeplitz('time', order), tiers.MA('time', order), tiers.Banded('time', order), "
            "tiers.Exchangeable(), tiers.Unstructured('time') or tiers.Independent(by='stratum'); "
            f"got {residuals!r}"
        )
    f = parse(formula) if isinstance(formula, str) else formula
    if f.residuals is not None and f.residuals != residuals:
        raise FormulaError(
            f"the formula already sets residuals({f.residuals!r}); give the structure once"
        )
    return f.with_residuals(residuals)


def _dask_options(weights: object, vce: str, drop_zero_weights: bool) -> None:
    """Refuse the options a fit from a Dask DataFrame's statistics does not take."""
    if weights is not None or vce != "model" or drop_zero_weights:
        raise ValueError(
            "weights=, vce= and drop_zero_weights= are not supported for a Dask DataFrame (its "
            "fit uses unweighted sufficient statistics and model-based standard errors); fit "
            "the computed data (ddf.compute()) for them"
        )


def _result_type(design: Design) -> type[LmmResult]:
    """`LmmResult`, or its summarised form for a design known through statistics (Dask)."""
    if isinstance(design.frame, SummaryFrame):
        from tiers.api.summarised import SummarisedResult

        return SummarisedResult
    return LmmResult


def prepare(
    formula: str | Formula,
    data: Any,
    *,
    force: bool = False,
    limits: Limits | None = None,
    residuals: ResidualStructure | None = None,
    weights: str | Mapping[str, str] | None = None,
    weight_type: str | None = None,
    pwscale: str = "none",
    conditional: bool = True,
) -> Design:
    """Stage 1 (lme4's ``lFormula``): model frame, grouping structure and engine, decided once.

    See `tiers.design.design.build_design`; ``residuals`` and the weighting keywords are `fit`'s.
    A Dask DataFrame is reduced to its sufficient statistics (`tiers.scale.fit.prepare_dask`).
    """
    if _is_dask_frame(data):
        from tiers.scale.fit import prepare_dask

        _dask_options(weights, "model", False)
        return prepare_dask(with_residuals(formula, residuals), data, force=force, limits=limits)
    spec = weight_spec(weights, weight_type, pwscale, conditional)
    # as `fit` builds it: the frame's column products (`tiers.data.crossprod`) woke a threaded
    # BLAS, whose idle threads then spun into the next stage (InstEval's set-up 0.07 -> 0.14 s CPU)
    with single_thread_blas():
        return build_design(
            with_residuals(formula, residuals), data, force=force, limits=limits, weights=spec
        )


def deviance_function(design: Design, *, reml: bool | None = None) -> Engine:
    """Stage 2 (lme4's ``mkLmerDevfun``): the engine, the criterion as a function of theta.

    ``reml`` defaults to what the formula says (Stata's ``, mle``), else REML.
    """
    # as `fit` builds it: a threaded BLAS's idle threads spin after the set-up's few n x p
    # products (InstEval: 0.13-0.23 s of CPU for 0.08 s of work)
    with single_thread_blas():
        return build_engine(design, reml=resolve_reml(design, reml))


def assemble(
    design: Design,
    opt: OptSummary | ArrayLike,
    *,
    reml: bool | None = None,
    engine: Engine | None = None,
    warn: bool = True,
) -> LmmResult:
    """Stage 4 (lme4's ``mkMerMod``): the result at the optimiser's theta, or at a theta given.

    Parameters
    ----------
    design : Design
    opt : OptSummary or array
        What `optimize_theta` returned, or a theta (then it is not optimised: the result's
        ``opt`` certifies whether it is an optimum of the criterion, and says it was given).
    reml : bool, optional
        The criterion (default: the formula's, else REML). Ignored when ``engine`` is given.
    engine : Engine, optional
        The engine `opt` came from (saves rebuilding it).
    warn : bool
        Emit the warnings (singular fit, not certified); they are kept on the result either way.
    """
    with single_thread_blas():
        if engine is None:
            engine = build_engine(design, reml=resolve_reml(design, reml))
        if not isinstance(opt, OptSummary):
            theta = np.asarray(opt, dtype=np.float64)
            if theta.shape != (engine.n_theta,):
                raise ValueError(
                    f"theta must have {engine.n_theta} entries for this design; got shape "
                    f"{theta.shape}"
                )
            opt = certify(engine, theta)
        # the formula's vce(), and the sandwich sampling weights always get
        vce = check_vce(design, design.formula.vce, engine.reml)
        out = _assemble(design, engine, opt, warn=warn, result_type=_result_type(design), vce=vce)
        return cast(LmmResult, out)
