"""The fitting stage: a `Design` and an engine -> optimised theta -> a frozen result.

lme4's stages (``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``) are
`tiers.design.design.build_design`, `tiers.engine.registry.build_engine`,
`tiers.optimize.minimize.optimize_theta` and `assemble`; `fit_design` runs the last three (a
bootstrap or simulation replicate reuses the design and passes another response).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from numpy.typing import NDArray

from tiers._tails import chi2_sf
from tiers._threads import single_thread_blas
from tiers.design.design import Design, TermInfo, signature
from tiers.design.diagnostics import check_exact_fit
from tiers.design.summary import SummaryFrame
from tiers.design.terms import TermSpec
from tiers.engine.contract import Engine
from tiers.engine.registry import build_engine
from tiers.errors import ConvergenceWarning, DataError, SingularFitWarning, TiersWarning
from tiers.formula.weighting import VceSpec
from tiers.optimize.minimize import OptSummary, optimize_theta
from tiers.results.lrtest import LRTest
from tiers.results.result import FitResult, FitState
from tiers.variance.vce import check_vce, robust_vcov

FloatArray = NDArray[np.float64]

#: A single fit estimated to take longer than this many seconds is announced before it starts.
LONG_FIT_SECONDS = 60.0


def resolve_reml(design: Design, reml: bool | None, vce: VceSpec | None = None) -> bool:
    """The criterion: ``reml`` when given, else what the formula says, else REML.

    What the formula says is Stata's ``, mle``; REML is lme4's default. Sampling weights and the
    sandwich estimator are built on the ML (pseudo-)likelihood: unless REML is asked for, they
    are fitted by ML; REML asked for with sampling weights is refused (there is no REML
    pseudo-likelihood).
    """
    asked = reml if reml is not None else design.formula.reml
    if design.engine == "pseudo":
        if asked:
            raise DataError(
                "sampling weights are fitted by pseudo-maximum likelihood, which is ML-based: a "
                "REML pseudo-likelihood does not exist (Stata's mixed refuses reml with pweights "
                "too). tiers fits sampling-weighted models by ML: leave reml unset or pass "
                "reml=False"
            )
        return False
    if asked is not None:
        return bool(asked)
    return not (vce is not None and vce.kind == "robust")


def fit_design(
    design: Design,
    *,
    reml: bool | None = None,
    y: FloatArray | None = None,
    X: FloatArray | None = None,
    engine: Engine | None = None,
    warn: bool = True,
    start: float | None = None,
    result_type: type[FitResult] = FitResult,
    vce: VceSpec | None = None,
) -> FitResult:
    """Fit a design: build the engine (unless given), optimise theta, assemble the result.

    Parameters
    ----------
    design : Design
    reml : bool, optional
        See `resolve_reml`.
    y, X : arrays, optional
        Another response or fixed-effects matrix on the same rows (a replicate).
    engine : Engine, optional
        An engine of this design to reuse (switched to the criterion asked for).
    warn : bool
        Emit the warnings; with False they are only kept on the result (replicates).
    start : float, optional
        ``time.perf_counter()`` when the fit began (for ``fit_seconds``).
    result_type : type
        `FitResult` or a subclass (the public `tiers.LmmResult`).
    vce : VceSpec, optional
        The covariance to report (default: the formula's ``vce()``, else the model's; the
        sandwich with sampling weights); see `tiers.variance.vce`.
    """
    start = time.perf_counter() if start is None else start
    asked = vce if vce is not None else design.formula.vce
    use_reml = resolve_reml(design, reml, asked)
    chosen = check_vce(design, asked, use_reml)
    if warn and engine is None and design.estimated_seconds > LONG_FIT_SECONDS:
        minutes = design.estimated_seconds / 60.0
        warnings.warn(
            f"this model may take about {minutes:,.0f} minutes to fit (a rough estimate from "
            f"{design.n_theta:,} covariance parameters and {design.frame.nobs:,} rows); "
            "no progress is shown during a single fit",
            TiersWarning,
            stacklevel=3,
        )
    with single_thread_blas():
        if engine is None:
            engine = build_engine(design, reml=use_reml, y=y, X=X)
        elif engine.reml != use_reml:
            engine = engine.with_reml(use_reml)
        try:
            opt = optimize_theta(engine)
            res = assemble(
                design,
                engine,
                opt,
                y=y,
                X=X,
                warn=warn,
                start=start,
                result_type=result_type,
                vce=chosen,
            )
        except (np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError) as exc:
            _explain_exact_fit(design, y, X)
            # the design's checks refuse the known causes; this is the net for the rest
            raise DataError(
                f"the model {design.formula.text!r} cannot be estimated on these data: a matrix "
                f"became singular during the fit ({exc}), typically because the random effects "
                "fit the response (almost) exactly or the fixed effects are (almost) collinear; "
                "simplify the random effects or check the predictors"
            ) from None
        return res


def _explain_exact_fit(design: Design, y: FloatArray | None, X: FloatArray | None) -> None:
    """Raise the reason a fit came out degenerate, when it is an exact fit of the response.

    Checked before the fit only on small data (`tiers.design.diagnostics.EXACT_FIT_ROWS`).
    """
    frame = design.frame
    if y is None and isinstance(frame, SummaryFrame):
        return  # the rows are not held (tiers.scale); the fit's own error says what failed
    check_exact_fit(
        design.formula.response,
        frame.y if y is None else y,
        frame.X if X is None else X,
        design.terms,
    )


def refit(res: FitResult, *, reml: bool) -> FitResult:
    """The same model on the same rows by the other criterion (a new result of the same type)."""
    st = res.state
    return fit_design(
        st.design, reml=reml, y=st.y, X=st.X, engine=res.devfun, result_type=type(res)
    )


def lr_vs_linear(engine: Engine, deviance: float, loglik: float) -> LRTest:
    """LR test against theta = 0 (no random effects) under the same criterion.

    REML vs REML, ML vs ML; chibar2(01) for one component (Self and Liang 1987), else a conservative
    chi2(k).
    """
    k = engine.n_theta
    dev0 = engine.deviance(engine.theta_null)
    chi2 = max(dev0 - deviance, 0.0)
    method = "REML" if engine.reml else "ML"
    if k == 1:
        p = 0.5 * chi2_sf(chi2, 1)
        reason = "one variance component on the boundary: a 50:50 mixture of chi2(0) and chi2(1)"
        return LRTest(chi2, 1, p, "chibar2(01)", reason, method, -0.5 * dev0, loglik)
    reason = (
        f"{k} covariance parameters, some on the boundary: the chi2({k}) p-value is conservative"
    )
    p = chi2_sf(chi2, k)
    return LRTest(chi2, k, p, f"chi2({k})", reason, method, -0.5 * dev0, loglik, conservative=True)


def assemble(
    design: Design,
    engine: Engine,
    opt: OptSummary,
    *,
    y: FloatArray | None = None,
    X: FloatArray | None = None,
    warn: bool = True,
    start: float | None = None,
    result_type: type[FitResult] = FitResult,
    vce: VceSpec | None = None,
) -> FitResult:
    """The frozen result at the optimiser's theta (lme4's ``mkMerMod``).

    Estimates read off the engine, the LR test against the linear model, notes and warnings in
    words; with ``vce`` (checked by `tiers.variance.vce.check_vce`) the robust covariance.
    """
    start = time.perf_counter() if start is None else start
    sol = engine.solve(opt.theta)
    y_used = design.frame.y if y is None else y
    robust = None
    if vce is not None:
        X_used = design.frame.X if X is None else X
        robust = robust_vcov(design, vce, opt.theta, sol.beta, sol.sigma, y_used, X_used)
    # max |y| without an n-row |y| (64 MB at 8 million rows)
    scale = max(-float(y_used.min()), float(y_used.max())) if y_used.size else 0.0
    data_signature = signature(np.asarray(y_used))
    if y is None and isinstance(design.frame, SummaryFrame):  # rows summarised (tiers.scale)
        scale, data_signature = design.frame.y_absmax, design.frame.y_signature
    if not (np.isfinite(sol.deviance) and sol.sigma > 1e-6 * scale):
        # a (near) zero residual SD: say why when the response is fitted exactly
        _explain_exact_fit(design, y, X)
    terms = design.term_infos
    notes, warns = design.messages()
    if robust is not None:
        notes.append(f"standard errors: {robust.label}")
    emitted: list[tuple[str, type[Warning]]] = [(m, design.warning_category(m)) for m in warns]
    singular = _singular_words(design.terms, terms, opt.theta)
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
    state = FitState(design, engine.reml, y, X)
    result = result_type(
        formula=design.formula,
        reml=engine.reml,
        nobs=design.nobs,
        n_dropped=design.frame.n_dropped,
        xnames=design.frame.xnames,
        beta=_ro(sol.beta),
        unscaled_vcov=_ro(sol.unscaled_vcov),
        levels=design.level_infos,
        theta=_ro(opt.theta),
        sigma=sol.sigma,
        criterion=sol.deviance,
        opt=opt,
        lr_linear=lr_vs_linear(engine, sol.deviance, -0.5 * sol.deviance),
        notes=tuple(notes),
        warnings=tuple(warns),
        fit_seconds=time.perf_counter() - start,
        engine=design.engine,
        data_signature=data_signature,
        terms=terms,
        robust=robust,
        _state=state,
    )
    # the engine that found theta is the result's own: keep it rather than rebuild it on first use
    result.__dict__["devfun"] = engine
    return result


def _singular_words(
    specs: list[TermSpec], infos: tuple[TermInfo, ...], theta: np.ndarray
) -> list[str]:
    """Plain words for each term on the boundary: an SD at zero, or effects perfectly correlated.

    Perfect correlation shows as a zero diagonal entry of T after the first: the effect is a fixed
    multiple of the others.
    """
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


def _ro(a: FloatArray) -> FloatArray:
    arr = np.array(a, dtype=np.float64)
    arr.setflags(write=False)
    return arr
