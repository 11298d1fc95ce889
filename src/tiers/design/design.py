"""The frozen `Design`: a model's rows, grouping structure and engine, decided once.

formula + data -> model frame -> grouping factors -> terms -> nesting: `build_design` runs these
stages and the diagnostics once; every fit of the same rows (REML and ML, bootstrap and simulation
replicates, profiles) shares the result. The structure picks the engine here, never in a hot loop
(``../shared/STYLE.md`` section 2):

* ``nested`` (`tiers.engine.nested_scalar`): nested random intercepts, a tree of scalar effects;
* ``tree`` (`tiers.engine.nested_block`): nested grouping with slopes or several terms on a level;
* ``crossed`` (`tiers.engine.crossed`): grouping factors that do not nest;
* ``rside`` (`tiers.engine.rside`): nested grouping with a residual structure (AR(1), ...).
* ``pseudo`` (`tiers.engine.pseudo`): nested factors with sampling weights (pseudo-likelihood).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from tiers.data.frame import ModelFrame, build_frame
from tiers.design.covariance import CovStructure
from tiers.design.diagnostics import (
    EXACT_FIT_ROWS,
    Limits,
    check_child_nesting,
    check_estimable,
    check_exact_fit,
    check_resources,
    estimated_seconds,
    identical_partition_error,
    level_messages,
)
from tiers.design.grouping import (
    GroupingFactor,
    Nesting,
    build_factors,
    compact_levels,
    nested_chain,
)
from tiers.design.residuals import ResidualLayout, build_residual_layout
from tiers.design.terms import TermSpec, build_terms, slopes_without_within_variation
from tiers.design.weights import RowWeights, resolve_weights
from tiers.errors import DataError, IdentificationWarning, LinearProbabilityWarning, TiersWarning
from tiers.formula.parse import parse
from tiers.formula.types import Formula
from tiers.formula.weighting import WeightSpec

EngineName = Literal["nested", "tree", "crossed", "rside", "pseudo"]


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One grouping level: its name, number of groups and observations per group."""

    name: str
    columns: tuple[str, ...]
    ngroups: int
    min_obs: int
    mean_obs: float
    max_obs: int
    implicit: bool


@dataclass(frozen=True, slots=True)
class TermInfo:
    """One random-effects term: its group, effects, covariance structure and theta entries."""

    group: str
    znames: tuple[str, ...]
    covariance: str
    start: int
    stop: int
    diagonal: tuple[bool, ...]

    @property
    def q(self) -> int:
        """Effects per group."""
        return len(self.znames)


@dataclass(frozen=True)
class Design:
    """A model's rows and grouping structure, decided once; fits can share it.

    Attributes
    ----------
    formula : Formula
    frame : ModelFrame
        Response, fixed-effects matrix and the rows used.
    factors : list of GroupingFactor
        Grouping factors of the random terms, in formula order.
    engine : {"nested", "tree", "crossed"}
        The engine the structure calls for (see the module docstring).
    terms : list of TermSpec
        All random-effects terms in theta order.
    nesting : Nesting or None
        The nesting tree when the factors nest, else None.
    levels : list of list of TermSpec
        For the nested engines, the terms of each level, outermost first.
    warnings : tuple of str
        What the diagnostics found that does not stop the fit.
    response_warnings : tuple of str
        What the response says about the model: a 0/1 response is fitted as a linear probability
        model (`tiers.errors.LinearProbabilityWarning`).
    residuals : ResidualLayout or None
        The residual structure's groups and parameters (`tiers.design.residuals`), else None.
    weights : RowWeights or None
        Precision, frequency or sampling weights (`tiers.design.weights`).
    limits : Limits or None
        The size limits the design was checked against (default `diagnostics.LIMITS`); the crossed
        engine checks its predicted factor against them too.
    learned_specs : dict
        formulaic's model specs learned where the rows are not held (a Dask fit,
        `tiers.scale.fit`), by right-hand side: the fixed part's and each random term's
        expression, with the state of their stateful transforms learned from every row.
    """

    formula: Formula
    frame: ModelFrame
    factors: list[GroupingFactor]
    engine: EngineName
    terms: list[TermSpec]
    nesting: Nesting | None = None
    levels: list[list[TermSpec]] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    response_warnings: tuple[str, ...] = ()
    residuals: ResidualLayout | None = None
    weights: RowWeights | None = None
    limits: Limits | None = None
    learned_specs: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def fixed_spec(self) -> Any:
        """Formulaic's model spec of the fixed part on these rows.

        New data (predictions) and the fixed part's terms (F tests) are coded with it, as the fit
        was.
        """
        return self.term_spec(self.formula.fixed)

    def term_spec(self, rhs: str) -> Any:
        """Formulaic's model spec of a right-hand side (the fixed part, a random term's) on these rows.

        Stateful transforms (``center(x)``, ``poly(x, 2)``) keep what they learned from the fit's
        rows, so new data is coded as the fit was.
        """
        if rhs in self.learned_specs:
            return self.learned_specs[rhs]
        from formulaic import model_matrix as fmm

        return fmm(rhs, self.frame.data, na_action="ignore").model_spec

    def __getstate__(self) -> dict[str, Any]:
        # the model spec is rebuilt on first use after unpickling
        state = dict(self.__dict__)
        state.pop("fixed_spec", None)
        return state

    @property
    def nobs(self) -> int:
        """Observations: the rows used, or the sum of frequency weights."""
        return self.frame.nobs if self.weights is None else self.weights.nobs

    @property
    def nested(self) -> bool:
        """The grouping factors nest (a tree): cumulative ICCs and tree algorithms apply."""
        return self.nesting is not None

    @property
    def estimated_seconds(self) -> float:
        """A rough fitting time (within a factor of a few); see `estimated_seconds`."""
        return estimated_seconds(
            self.terms, self.frame.nobs, self.nested and self.formula.residuals is None
        )

    @property
    def n_theta(self) -> int:
        """Number of covariance parameters."""
        return sum(t.cov.n_theta for t in self.terms)

    @property
    def term_infos(self) -> tuple[TermInfo, ...]:
        """Each term's group, effects, covariance structure and slice of theta."""
        out, at = [], 0
        for t in self.terms:
            n = t.cov.n_theta
            diagonal = tuple(bool(v) for v in t.cov.diagonal())
            out.append(TermInfo(t.name, t.znames, t.cov.kind, at, at + n, diagonal))
            at += n
        return tuple(out)

    @property
    def theta_names(self) -> tuple[str, ...]:
        """lme4's name of each entry of theta, in theta order.

        ``group.(Intercept)``, ``group.Days.(Intercept)``, ``group.Days``; see `theta_names`.
        """
        return theta_names(self.term_infos)

    @property
    def grouping_levels(self) -> list[GroupingFactor]:
        """The distinct grouping factors: outermost first when nested, else by size."""
        if self.nesting is not None:
            return list(self.nesting.factors)
        seen: dict[tuple[str, ...], GroupingFactor] = {}
        for gf in self.factors:
            seen.setdefault(gf.columns, gf)
        return sorted(seen.values(), key=lambda g: g.nlevels)

    @property
    def level_infos(self) -> tuple[LevelInfo, ...]:
        """Size summaries of the grouping levels."""
        out = []
        for gf in self.grouping_levels:
            sizes = gf.sizes()
            out.append(
                LevelInfo(
                    name=gf.name,
                    columns=gf.columns,
                    ngroups=gf.nlevels,
                    min_obs=int(sizes.min()),
                    mean_obs=float(sizes.mean()),
                    max_obs=int(sizes.max()),
                    implicit=gf.implicit,
                )
            )
        return tuple(out)

    def messages(self) -> tuple[list[str], list[str]]:
        """Notes and identification warnings about the rows and levels, in plain words."""
        factors = self.grouping_levels
        notes = (
            list(self.formula.notes)
            + (list(self.weights.notes) if self.weights is not None else [])
            + list(self.frame.notes)
            + [
                f"{gf.columns[-1]}: labels repeat across {':'.join(gf.columns[:-1])}; {gf.nlevels:,} "
                f"groups formed as {' x '.join(gf.columns)}"
                for gf in factors
                if gf.implicit
            ]
        )
        warns, level_notes = level_messages(tuple(factors))
        warns = list(self.response_warnings) + list(self.warnings) + warns
        notes += level_notes
        if self.nesting is not None:
            for coarse, fine in self.nesting.identical:
                warns.append(
                    f"{coarse.name} and {fine.name} define the same {fine.nlevels:,} groups: their "
                    "variance components are not identified and their split is arbitrary (fitted "
                    "with force)"
                )
        return notes, warns

    def warning_category(self, message: str) -> type[TiersWarning]:
        """The class a fit emits one of `messages`' warnings with."""
        if message in self.response_warnings:
            return LinearProbabilityWarning
        return IdentificationWarning


def linear_probability(y: np.ndarray, response: str) -> tuple[str, ...]:
    """The warning for a response of only 0s and 1s (a linear probability model), else none."""
    if y.size == 0 or y[0] not in (0.0, 1.0) or not np.all((y == 0.0) | (y == 1.0)):
        return ()
    if y.min() == y.max():
        return ()
    return (
        f"the response {response!r} takes only the values 0 and 1: a linear probability model is "
        "being fitted (fitted values can fall outside 0 to 1, and the residuals are not normal); "
        "fit a logistic mixed model instead with family='binomial' (Stata's melogit, lme4's glmer)",
    )


def theta_names(terms: tuple[TermInfo, ...]) -> tuple[str, ...]:
    """lme4's names of the entries of theta, term by term.

    For example ``group.(Intercept)``, ``group.Days.(Intercept)``, ``group.Days``.
    """
    return tuple(
        f"{t.group}.{n}"
        for t in terms
        for n in CovStructure(t.covariance, t.q).param_names(t.znames)
    )


def build_design(
    formula: str | Formula,
    data: Any,
    *,
    force: bool = False,
    limits: Limits | None = None,
    weights: WeightSpec | None = None,
    glmm: bool = False,
) -> Design:
    """Parse, build the model frame and grouping structure, run the diagnostics, pick the engine.

    Parameters
    ----------
    formula : str or Formula
        lme4 or Stata syntax.
    data : pandas or polars DataFrame
    force : bool
        Keep going when the diagnostics find a declared child not nested in its parent, or two
        levels that define the same groups (the warning is kept on the design).
    limits : Limits, optional
        The size limits a model is refused above (default `tiers.design.diagnostics.LIMITS`).
    weights : WeightSpec, optional
        Weights given outside the formula (`tiers.fit`'s ``weights=``); not with weights written
        in the formula.
    glmm : bool
        The design of a generalized linear mixed model: one observation per group is allowed
        (an observation-level random effect models overdispersion, as in lme4's ``glmer``), there
        is no residual variance to fit exactly, and a 0/1 response is not a linear probability
        model.

    Returns
    -------
    Design

    Raises
    ------
    FormulaError, DataError, NestingError
        With a message naming the column or term and what to do.
    """
    f = parse(formula) if isinstance(formula, str) else formula
    if weights is not None and f.weights is not None:
        raise DataError("weights are given twice, in the formula and as weights=; give them once")
    spec = weights if weights is not None else f.weights
    frame = build_frame(f, data)
    if frame.x_columns.shape[1] == 0:
        raise DataError("the fixed part has no columns; keep at least the intercept")
    factors = build_factors(f, frame.data)
    distinct: dict[tuple[str, ...], GroupingFactor] = {}
    for gf in factors:
        distinct.setdefault(gf.columns, gf)
    nesting = nested_chain(list(distinct.values()))
    if nesting is not None:
        # per-row codes of the leaf level only (the outer levels' follow from them)
        compact = compact_levels(nesting)
        factors = [dataclasses.replace(compact[gf.columns], name=gf.name) for gf in factors]
        nesting = dataclasses.replace(
            nesting,
            factors=tuple(compact[gf.columns] for gf in nesting.factors),
            identical=tuple((compact[a.columns], compact[b.columns]) for a, b in nesting.identical),
        )
    if not force:
        check_child_nesting(f, frame.data, factors)
    terms = build_terms(f, frame.data, factors)
    if not glmm:
        _check_sizes(terms, frame.nobs)
    sums_only = nesting is not None and f.residuals is None
    check_resources(terms, frame.nobs, frame.x_columns.shape[1], limits, sums_only)
    check_estimable(f.response, frame.y, frame.x_columns, frame.xnames, terms)
    if frame.nobs <= EXACT_FIT_ROWS and not glmm:
        check_exact_fit(f.response, frame.y, frame.X, terms)
    warns = tuple(
        f"the slope of {name} in the term for {t.name} does not vary within any group: its "
        "variance cannot be told apart from the intercept's (not identified); drop it from the term"
        for t in terms
        for name in slopes_without_within_variation(t)
    )
    binary = () if glmm else linear_probability(frame.y, f.response)
    rw = None
    if spec is not None:
        rw = resolve_weights(spec, data, frame, list(nesting.factors) if nesting else None)
    if nesting is None:
        if f.residuals is not None:
            raise DataError(
                "residual structures are fitted with nested random effects only: the grouping "
                f"factors of {f.text!r} do not nest (crossed); drop residuals= or the crossed term"
            )
        return Design(
            f,
            frame,
            factors,
            "crossed",
            terms,
            warnings=warns,
            response_warnings=binary,
            weights=rw,
            limits=limits,
        )
    if nesting.identical and not force:
        coarse, fine = nesting.identical[0]
        raise identical_partition_error(f, frame.data, coarse, fine)
    levels = [[t for t in terms if t.factor.columns == gf.columns] for gf in nesting.factors]
    scalar = all(len(lv) == 1 and lv[0].intercept_only for lv in levels)
    ordered = [t for lv in levels for t in lv]
    engine: EngineName = "nested" if scalar else "tree"
    layout = None
    if f.residuals is not None and rw is not None:
        raise DataError(
            "residual structures are not fitted with weights yet: drop residuals= or weights= "
            "(each works on its own)"
        )
    if f.residuals is not None:
        layout = build_residual_layout(f.residuals, frame.data, nesting.factors[-1], levels[-1])
        engine = "rside"
    if rw is not None and rw.sampling:
        engine = "pseudo"
    return Design(
        f,
        frame,
        factors,
        engine,
        ordered,
        nesting,
        levels,
        warnings=warns,
        response_warnings=binary,
        residuals=layout,
        weights=rw,
        limits=limits,
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


def signature(y: np.ndarray) -> tuple[float, float]:
    """A cheap fingerprint of the rows used: the sum and sum of squares of y.

    Comparisons use it to refuse fits to other rows; row order does not change a likelihood, and
    does not change this.
    """
    return float(np.sum(y)), float(y @ y)
