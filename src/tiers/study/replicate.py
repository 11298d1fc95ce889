"""The per-replicate half of a simulation study: estimator specs, drawing and fitting.

:mod:`tiers.study` runs the study (batches, workers, storage, summary); this module holds what one
replicate needs: the :class:`Estimator` specs (:func:`parse_estimator`,
:func:`default_estimators`) and their checks against the design, the random stream of each
replicate (:func:`replicate_seed`) and its data (:func:`draw_replicate`), and the fit of each
estimator to it, one row per parameter (named as :meth:`NestedDesign.true_parameters` names them;
see :mod:`tiers.study` for the conventions). :func:`_run_batch` is the worker entry point.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers.errors import FormulaError, NestingError, StudyError, TiersError
from tiers.simulation.data import NestedDesign, draw_response, simulate

__all__ = ["Estimator", "default_estimators", "draw_replicate", "parse_estimator",
           "replicate_seed"]  # fmt: skip

PANEL_KINDS: tuple[str, ...] = ("ols", "fe", "re")
NAN4 = (math.nan,) * 4


#: The options a mixed-model estimator takes after its formula (``FORMULA; nagq=7``).
MIXED_OPTIONS: tuple[str, ...] = ("family", "link", "nagq")


@dataclass(frozen=True, slots=True)
class Estimator:
    """One estimator of a study: a panel estimator or a mixed-model formula.

    A panel estimator runs on ``id``, by default the innermost level. A mixed model is a GLMM
    when ``family`` is binomial or poisson, when its formula is a Stata ``melogit``/``mepoisson``
    command, or when the design is a GLMM design and ``family`` is not ``gaussian`` (see
    `glmm_options`); ``link`` and ``nagq`` (adaptive quadrature points, 1: Laplace) go with it.
    """

    name: str
    kind: Literal["ols", "fe", "re", "mixed"]
    formula: str | None = None
    id: str | None = None
    family: str | None = None
    link: str | None = None
    nagq: int | None = None

    @property
    def spec(self) -> str:
        """The text after ``NAME=`` that rebuilds it (``fe``, ``fe:teach_id``, the formula).

        A mixed model's options follow its formula: ``FORMULA; family=binomial; nagq=7``.
        """
        if self.kind == "mixed":
            opts = [
                f"{k}={getattr(self, k)}" for k in MIXED_OPTIONS if getattr(self, k) is not None
            ]
            return "; ".join([str(self.formula), *opts])
        return self.kind if self.id is None else f"{self.kind}:{self.id}"


def _mixed(name: str, text: str, whole: str) -> Estimator:
    """A mixed-model spec: the formula, then ``; key=value`` options (`MIXED_OPTIONS`)."""
    formula, *parts = (p.strip() for p in text.split(";"))
    opts: dict[str, Any] = {}
    for part in parts:
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or key not in MIXED_OPTIONS or not value or key in opts:
            raise StudyError(
                f"estimator {whole!r}: after the formula write '; key=value' options, each once, "
                f"with key one of {', '.join(MIXED_OPTIONS)} (e.g. '; nagq=7'); got {part!r}"
            )
        if key == "nagq":
            if not value.isdigit() or int(value) < 1:
                raise StudyError(
                    f"estimator {whole!r}: nagq must be a whole number >= 1 (1: Laplace); "
                    f"got {value!r}"
                )
            opts[key] = int(value)
        else:
            opts[key] = value
    if opts.get("family") == "gaussian" and ("link" in opts or "nagq" in opts):
        raise StudyError(f"estimator {whole!r}: a gaussian (linear) mixed model takes no link "
                         "or nagq")  # fmt: skip
    return Estimator(name, "mixed", formula=formula, **opts)


def glmm_options(e: Estimator, design: NestedDesign) -> dict[str, Any] | None:
    """How a mixed-model estimator is fitted: None for a linear mixed model, else GLMM options.

    The options are `tiers.fit`'s ``family``, ``link`` and ``nagq``, None where the formula's
    Stata command or the defaults decide.
    """
    from tiers.formula.glm import COMMANDS

    words = str(e.formula).split(None, 1)
    stata = bool(words) and words[0].lower() in COMMANDS
    if e.family == "gaussian" or (e.family is None and not stata and not design.is_glmm):
        return None
    family = e.family
    link = e.link
    if family is None and not stata:
        family, link = design.family, link or design.link
    return {"family": family, "link": link, "nagq": e.nagq}


def parse_estimator(text: str) -> Estimator:
    """``NAME=SPEC`` (or a bare ``ols``/``fe``/``re``) -> Estimator.

    SPEC is ``ols``, ``fe``, ``re``, ``KIND:ID`` (another panel id) or a mixed-model formula,
    optionally followed by ``; family=binomial``, ``; link=probit``, ``; nagq=7`` (a GLMM; see
    `glmm_options`). StudyError otherwise.
    """
    name, sep, spec = (part.strip() for part in text.partition("="))
    if not sep:
        spec = name
    if not name.replace("_", "").replace("-", "").isalnum():
        raise StudyError(f"estimator {text!r}: write NAME=SPEC with a plain name, e.g. fe=fe")
    kind, _, ident = (part.strip() for part in spec.partition(":"))
    if kind in PANEL_KINDS and not any(c in spec for c in "|~ "):
        return Estimator(name, kind, id=ident or None)  # type: ignore[arg-type]
    if "~" in spec or "||" in spec:
        return _mixed(name, spec, text)
    raise StudyError(
        f"unknown estimator {spec!r} in {text!r}: use ols, fe or re (fe:ID for another panel id) "
        "or a mixed-model formula such as 'y ~ x + (1 | g)' or 'y x || g:'"
    )


def default_estimators(design: NestedDesign) -> tuple[Estimator, ...]:
    """FE and RE on the innermost id, the one-level and the correctly nested mixed model.

    For the seed: the founding session's ``xtreg fe``/``re`` on students,
    ``perform tutoring || student_id:`` and the four-level model. Panel estimators only if there is
    a covariate. A GLMM design: the two mixed models as GLMMs of its family and link, by the
    Laplace approximation (and ``offset(log(exposure))`` with an exposure column); no panel
    estimators, which are linear.
    """
    rhs = " ".join([design.response, *(cv.name for cv in design.covariates)])
    levels = [lv.name for lv in design.levels]
    if design.is_glmm:
        fixed = " + ".join([*(cv.name for cv in design.covariates)] or ["1"])
        if design.exposure is not None:
            fixed += f" + offset(log({design.exposure}))"
        lhs = f"{design.response} ~ {fixed}"
        return (
            Estimator("one_level", "mixed", formula=f"{lhs} + (1 | {levels[-1]})"),
            Estimator("nested", "mixed", formula=f"{lhs} + (1 | {'/'.join(levels)})"),
        )
    panel = [Estimator("fe", "fe"), Estimator("re", "re")] if design.covariates else []
    return (
        *panel,
        Estimator("one_level", "mixed", formula=f"{rhs} || {levels[-1]}:"),
        Estimator("nested", "mixed", formula=rhs + "".join(f" || {n}:" for n in levels)),
    )


def _as_estimators(spec: Any, design: NestedDesign) -> tuple[Estimator, ...]:
    if spec is None:
        return default_estimators(design)
    if isinstance(spec, Mapping):
        spec = [f"{k}={v}" for k, v in spec.items()]
    elif isinstance(spec, str | Estimator):
        spec = [spec]
    items = [e if isinstance(e, Estimator) else parse_estimator(e) for e in spec]
    names = [e.name for e in items]
    if not items or len(set(names)) != len(names):
        raise StudyError(f"give at least one estimator, each with its own name; got {names}")
    return tuple(items)


def describe(e: Estimator, design: NestedDesign) -> str:
    """The estimator's kind in words, a GLMM's approximation included."""
    from tiers.formula.glm import COMMANDS, read_glm

    if e.kind != "mixed":
        return e.kind
    glmm = glmm_options(e, design)
    if glmm is None:
        return "linear mixed model"
    spec = read_glm(str(e.formula))
    family = glmm["family"] or spec.family
    link = glmm["link"] or spec.link or ("logit" if family == "binomial" else "log")
    nagq = glmm["nagq"] or spec.nagq
    if nagq is None and str(e.formula).split(None, 1)[0].lower() in COMMANDS:
        how = "Stata's default: adaptive quadrature, 7 points per level where tiers has it"
    elif nagq is None or nagq == 1:
        how = "Laplace approximation"
    else:
        how = f"adaptive Gauss-Hermite quadrature, {nagq} points"
    return f"GLMM {family}/{link}, {how}"


def _check_estimators(design: NestedDesign, ests: Sequence[Estimator]) -> None:
    """Refuse, before any work, estimators naming columns the design does not produce.

    Formulas are parsed, not fitted; the columns checked are the response, the fixed part's
    variables and the grouping columns.
    """
    from tiers.formula.glm import read_glm
    from tiers.formula.parse import parse

    levels = [lv.name for lv in design.levels]
    covs = [cv.name for cv in design.covariates]
    columns = sorted({*levels, design.obs_name, *covs, design.response})
    if design.exposure is not None:
        columns = sorted([*columns, design.exposure])
    for e in ests:
        if e.kind != "mixed":
            if e.id is not None and e.id not in levels:
                raise StudyError(f"estimator {e.name!r}: id {e.id!r} is not a level of {levels}")
            if not covs:
                raise StudyError(f"estimator {e.name!r}: {e.kind} needs a covariate; none given")
            continue
        glmm = glmm_options(e, design)
        if glmm is None and (e.link is not None or e.nagq is not None):
            raise StudyError(
                f"estimator {e.name!r}: link and nagq are for a GLMM; the design's outcome is "
                "normal, so give family=binomial or family=poisson too"
            )
        try:
            f = parse(read_glm(str(e.formula)).base if glmm is not None else str(e.formula))
        except FormulaError as exc:
            raise FormulaError(f"estimator {e.name!r}: {exc}") from None
        used = {f.response: "the response", **dict.fromkeys(f.group_columns, "a grouping factor")}
        for col, role in {
            **dict.fromkeys(_fixed_variables(f.fixed), "a predictor"),
            **used,
        }.items():
            if col not in columns:
                raise FormulaError(
                    f"estimator {e.name!r}: column {col!r} ({role}) is not produced by the design, "
                    f"whose columns are {columns}"
                )
        if f.response not in (design.response, *covs):
            raise FormulaError(f"estimator {e.name!r}: the response must be {design.response!r}")


def _fixed_variables(rhs: str) -> set[str]:
    terms = [t.strip() for t in rhs.split("+")]
    if all(t in ("0", "1", "-1") or t.isidentifier() for t in terms):
        return {t for t in terms if t.isidentifier()}
    from formulaic import Formula as FFormula

    try:
        return set(FFormula(rhs).required_variables)
    except Exception as exc:  # formulaic raises several types
        raise FormulaError(f"cannot parse the fixed part {rhs!r}: {exc}") from None


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
                xnames = ["(Intercept)", *sorted(_fixed_variables(f.fixed))]
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
        return exc, names + [_beta(x) for x in ["(Intercept)", *sorted(_fixed_variables(f.fixed))]]


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
