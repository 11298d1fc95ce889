"""The per-replicate half of a simulation study: drawing and fitting.

:mod:`tiers.study` runs the study (batches, workers, storage, summary); this module holds what one
replicate needs, for the estimators of `tiers.study.estimators`: the random stream of each
replicate (:func:`replicate_seed`) and its data (:func:`draw_replicate`), and the fit of each
estimator to it, one row per parameter (named as :meth:`NestedDesign.true_parameters` names them;
see :mod:`tiers.study` for the conventions). :func:`_run_batch` is the worker entry point.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tiers.errors import NestingError, TiersError
from tiers.simulation.data import NestedDesign, draw_response, simulate
from tiers.study.estimators import Estimator, fixed_variables, glmm_options

__all__ = ["draw_replicate", "replicate_seed"]

NAN4 = (math.nan,) * 4


# ------------------------------------------------------------------------------ replicates --


def replicate_seed(seed: int, size: int, replicate: int) -> np.random.SeedSequence:
    """The stream of one replicate: ``SeedSequence(seed, spawn_key=(size, replicate))``."""
    return np.random.SeedSequence(seed, spawn_key=(int(size), int(replicate)))


def draw_replicate(
    design: NestedDesign, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The response and covariates :func:`~tiers.simulation.data.simulate` draws from ``rng``, as arrays.

    The same draws in the same order (level effects outermost first, covariates, residuals) and
    the same additions, so ``y`` equals simulate's bit for bit; the ids depend on the design only
    and are not rebuilt. Covariates come back as float64.
    """
    y, raw, _, _ = draw_response(design, rng)
    covs = {name: np.asarray(x, dtype=np.float64) for name, x in raw.items()}
    return y, covs


@dataclass
class _Layout:
    """What a worker keeps for one size.

    Ids, prepared mixed models (or the error preparing one raised), and each estimator's parameter
    names.
    """

    design: NestedDesign
    ids: dict[str, np.ndarray]
    prepared: dict[str, Any]
    params: dict[str, list[str]]


_CACHE: dict[tuple, _Layout] = {}


def _layout(design: NestedDesign, seed: int, size: int, ests: Sequence[Estimator]) -> _Layout:
    """Build (or reuse) one size's layout: the design built once, on replicate 0's data."""
    from tiers.design.design import Design, build_design
    from tiers.formula.parse import parse

    key = (json.dumps(design.to_dict(), sort_keys=True), seed, size, tuple(ests))
    if key not in _CACHE:
        _CACHE.clear()  # one size at a time: a worker never holds two large layouts
        rng = np.random.default_rng(replicate_seed(seed, size, 0))
        data = simulate(design, rng, max_rows=design.nrows)
        cols = [lv.name for lv in design.levels] + [design.obs_name]
        lay = _Layout(design, {c: data[c].to_numpy() for c in cols}, {}, {})
        for e in ests:
            if e.kind != "mixed":
                sds = [] if e.kind == "ols" else [f"sd_{e.id or design.levels[-1].name}"]
                betas = [f"beta_{cv.name}" for cv in design.covariates] + ["beta_intercept"]
                lay.params[e.name] = [*sds, "sd_residual", *betas]
                continue
            glmm = glmm_options(e, design)
            if glmm is not None:
                lay.prepared[e.name], lay.params[e.name] = _glmm_layout(e, glmm, data)
                continue
            prep: Design | TiersError
            try:
                prep = build_design(str(e.formula), data, force=True)
                if prep.nesting is None:
                    raise NestingError(
                        f"the grouping factors of {e.formula!r} do not nest; a study fits nested "
                        "mixed models only"
                    )
                groups = [fac.columns[-1] for fac in prep.nesting.factors]
                xnames = [*prep.frame.xnames, *prep.frame.omitted]  # omitted: replicate 0's draw
            except TiersError as exc:  # every replicate of this size then fails with it
                prep, f = exc, parse(str(e.formula))
                groups = [t.group[-1] for t in f.random]
                xnames = ["(Intercept)", *sorted(fixed_variables(f.fixed))]
            lay.prepared[e.name] = prep
            lay.params[e.name] = _sd_names(groups) + [_beta(x) for x in xnames]
        _CACHE[key] = lay
    return _CACHE[key]


def _glmm_layout(
    e: Estimator, glmm: dict[str, Any], data: pd.DataFrame
) -> tuple[dict[str, Any] | TiersError, list[str]]:
    """A GLMM estimator's options and parameter names, from a fit to replicate 0's data.

    The fit checks what only a fit can (the response for the family, the offset's columns, the
    quadrature for this random part); its error, if any, is kept and fails every replicate.
    """
    from tiers.formula.glm import read_glm
    from tiers.formula.parse import parse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = _glmm_fit(e, glmm, data)
        groups = [t.factor.columns[-1] for t in res.design.terms]
        xnames = [*res.fit.xnames, *res.design.frame.omitted]
        return glmm, _sd_names(groups)[:-1] + [_beta(x) for x in xnames]
    except TiersError as exc:
        f = parse(read_glm(str(e.formula)).base)
        names = _sd_names([t.group[-1] for t in f.random])[:-1]
        return exc, names + [_beta(x) for x in ["(Intercept)", *sorted(fixed_variables(f.fixed))]]


def _glmm_fit(e: Estimator, glmm: dict[str, Any], data: pd.DataFrame) -> Any:
    from tiers.api.glmm import fit_glmm

    return fit_glmm(str(e.formula), data, force=True, **glmm)


def _glmm_values(res: Any) -> dict[str, tuple[float, ...]]:
    """A GLMM's SDs with Wald intervals (theta +- z SE, cut at 0) and its fixed effects.

    A scalar term's theta is its SD; an SD at zero has no SE and so no interval, as for a linear
    mixed model. A term with random slopes reports its intercept's SD without an interval.
    """
    from scipy.stats import norm

    f, z = res.fit, float(norm.ppf(0.975))
    names = _sd_names([t.factor.columns[-1] for t in res.design.terms])[:-1]
    vals: dict[str, tuple[float, ...]] = {}
    for name, info, term in zip(names, res.design.term_infos, f.terms, strict=True):
        if info.q == 1:
            sd, se = float(f.theta[info.start]), float(f.theta_se[info.start])
            ok = np.isfinite(se)
            vals[name] = (sd, se, max(0.0, sd - z * se) if ok else math.nan, sd + z * se)
        else:
            vals[name] = (float(term.sd[0]), *NAN4[1:])
    for x, r in res.coef_table(exponentiate=False).iterrows():
        vals[_beta(str(x))] = (r["estimate"], r["std_error"], r["lower"], r["upper"])
    return vals


def _beta(xname: str) -> str:
    return "beta_intercept" if xname in ("(Intercept)", "_cons") else f"beta_{xname}"


def _sd_names(groups: list[str]) -> list[str]:
    """``sd_<grouping column>`` per level, then ``sd_residual``; a repeated name gets ``_2``."""
    names = [f"sd_{g}" for g in groups] + ["sd_residual"]
    return [
        n if n not in names[:i] else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)
    ]


def _fit_mixed(lay: _Layout, e: Estimator, y: np.ndarray, covs: dict[str, np.ndarray]) -> Any:
    """Refit the prepared model with this replicate's y and X.

    If X is rank deficient this time (a covariate drawn constant), or was for replicate 0 (whose X
    the model was prepared with), the replicate goes through the full fit, which drops what it must
    and says so.
    """
    from tiers.api import LmmResult, fit
    from tiers.data.frame import model_matrix
    from tiers.fitting import fit_design

    prep = lay.prepared[e.name]
    if isinstance(prep, Exception):
        raise prep
    cols = {**lay.ids, **covs, lay.design.response: y}
    xnames = prep.frame.xnames
    if all(x == "(Intercept)" or x in covs for x in xnames):
        X = np.column_stack([covs[x] if x in covs else np.ones(y.size) for x in xnames])
    else:
        mm, names = model_matrix(prep.formula.fixed, pd.DataFrame(cols), what="fixed part")
        X = mm[:, [names.index(x) for x in xnames]]
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    if (
        not prep.frame.omitted
        and np.all(norms > 0)
        and np.linalg.eigvalsh((X.T @ X) / np.outer(norms, norms))[0] > 1e-10
    ):
        y_ = cols[prep.formula.response]
        return fit_design(prep, y=y_, X=X, warn=False, result_type=LmmResult)
    return fit(prep.formula, pd.DataFrame(cols), force=True)


def _fit_rows(lay: _Layout, e: Estimator, y: np.ndarray, covs: dict[str, np.ndarray]) -> list:
    """Fit one estimator to one replicate: a row per parameter; NaNs if it failed.

    Each row: parameter, estimate, se, lower, upper, singular, converged, seconds, warnings, error,
    n_param, status.
    """
    from tiers.panel.estimators import fixed_effects, pooled_ols, random_effects

    vals: dict[str, tuple[float, ...]] = {}
    singular, converged, notes, error = False, False, [], ""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if e.kind == "mixed" and isinstance(lay.prepared[e.name], dict):
                res = _glmm_fit(
                    e,
                    lay.prepared[e.name],
                    pd.DataFrame({**lay.ids, **covs, lay.design.response: y}),
                )
                vals = _glmm_values(res)
                singular, converged, notes = res.is_singular, res.converged, list(res.fit.warnings)
                ct = None
            elif e.kind == "mixed":
                res = _fit_mixed(lay, e, y, covs)
                sdi = res.sd_inference
                names = _sd_names([lv.columns[-1] for lv in res.levels])
                vals = {p: (sdi.sd[k], sdi.se[k], sdi.lower[k], sdi.upper[k])
                        for k, p in enumerate(names)}  # fmt: skip
                ct = res.coef_table(0.95)
                singular, converged, notes = res.is_singular, res.converged, list(res.warnings)
            else:
                d = lay.design
                gid = e.id or d.levels[-1].name
                data = {d.response: y, **covs, gid: lay.ids[gid]}
                xs = [cv.name for cv in d.covariates]
                if e.kind == "ols":
                    res = pooled_ols(data, d.response, xs)
                    assert res.df_resid is not None  # pooled OLS always has residual df
                    vals["sd_residual"] = (math.sqrt(res.rss / res.df_resid), *NAN4[1:])
                else:
                    res = (fixed_effects if e.kind == "fe" else random_effects)(data, d.response, xs, gid)  # fmt: skip
                    assert res.sigma_u is not None and res.sigma_e is not None  # set by fe and re
                    vals[f"sd_{gid}"] = (float(res.sigma_u), *NAN4[1:])
                    vals["sd_residual"] = (float(res.sigma_e), *NAN4[1:])
                ct = res.coef
                singular, converged, notes = e.kind == "re" and res.sigma_u == 0.0, True, list(res.notes)  # fmt: skip
            for name, r in ct.iterrows() if ct is not None else ():
                vals[_beta(str(name))] = (
                    r["estimate"],
                    r["std_error"],
                    r["ci_lower"],
                    r["ci_upper"],
                )
        except Exception as exc:  # a failed fit is counted, never dropped
            vals, error = {}, f"{type(exc).__name__}: {exc}"
    noted = " | ".join(dict.fromkeys(notes + [str(w.message) for w in caught]))
    secs, params = time.perf_counter() - start, lay.params[e.name]
    status = "failed" if error else "ok"
    return [(p, *map(float, vals.get(p, NAN4)), bool(singular), bool(converged), secs, noted,
             error, len(params), status) for p in params]  # fmt: skip


def _run_batch(task: tuple) -> list[tuple]:
    """Worker entry: fit the listed estimators to the listed replicates of one size."""
    from tiers._threads import single_thread_blas

    design_dict, seed, size, ests, todo = task
    design = NestedDesign.from_dict(design_dict)
    lay = _layout(design, seed, size, ests)
    by_name = {e.name: e for e in ests}
    rows: list[tuple] = []
    with single_thread_blas():  # one BLAS thread per process: the processes are the parallelism
        for rep, names in todo:
            y, covs = draw_replicate(design, np.random.default_rng(replicate_seed(seed, size, rep)))
            for name in names:
                rows += [(size, rep, name, *r) for r in _fit_rows(lay, by_name[name], y, covs)]
    return rows
