"""Simulate data from a nested (hierarchical) random-intercept design.

A :class:`NestedDesign` declares an ordered list of levels, outermost first (districts, schools,
teachers, students), each with the number of units per parent unit and the SD of its random
intercept; the number of observations per innermost unit; the residual SD; covariates with their
true coefficients; and an intercept. :func:`simulate` turns a design and a seed into a DataFrame
whose response is

    y = intercept + sum(coef * covariate) + sum(level effects) + residual.

With ``family = "binomial"`` or ``"poisson"`` the same sum without the residual is the linear
predictor ``eta`` of a GLMM, and the response is a 0/1 outcome or a count drawn given it
(`tiers.simulation.outcome`): the level SDs and coefficients are then on the link scale (for a
binary outcome, the latent scale whose residual is logistic for the logit link).

Row layout
----------
Rows are sorted by the ids, outermost first, then by the observation index, so each unit of every
level occupies one contiguous block of rows. Columns: one id column per level (outermost first), the
observation index (1..``obs_per_unit``), the covariates in declared order, the response.

Draw order
----------
Fixed, so a seed always gives the same frame on the same numpy build:

1. for each level, outermost first: ``standard_normal(ngroups[level])`` scaled by the level's SD,
   one draw per unit in id order;
2. for each covariate in declared order, one draw per row: ``random(nrows) < p`` for a Bernoulli
   covariate, ``mean + sd * standard_normal(nrows)`` for a normal one;
3. the residuals: ``residual_sd * standard_normal(nrows)``; for a binomial design instead one
   uniform per row, ``y = random(nrows) < g^-1(eta)``; for a Poisson design the exposure, if any,
   ``low + (high - low) * random(nrows)``, then ``poisson(exposure * exp(eta))``.

The number of draws depends only on the unit counts and the covariate kinds, never on the SDs,
``p`` or the coefficients, so two designs that differ only in those share their random numbers
(common random numbers for comparing designs); Poisson counts are the exception, numpy's Poisson
sampler taking a number of draws that depends on the means.

Design files
------------
:func:`load_design` reads a ``.toml`` or ``.json`` file laid out as :meth:`NestedDesign.to_dict`
writes it. The seed design in TOML::

    obs_per_unit = 2
    obs_name = "semester"
    residual_sd = 6.0
    intercept = 0.0
    response = "perform"
    levels = [
        { name = "dist_id", units = 5, sd = 2.0 },
        { name = "school_id", units = 5, sd = 3.0 },
        { name = "teach_id", units = 8, sd = 4.0 },
        { name = "student_id", units = 20, sd = 5.0 },
    ]
    covariates = [{ name = "tutoring", kind = "bernoulli", coef = 2.0, p = 0.2 }]

``[[levels]]`` tables work too. ``covariates``, ``intercept``, ``response`` and ``obs_name`` may
be left out (defaults: none, 0.0, ``"y"``, ``"obs"``); so may a covariate's ``p`` (0.5), ``mean``
(0.0) and ``sd`` (1.0). The JSON layout is the same object, ``levels`` and ``covariates`` being
arrays of objects. Unknown keys are refused, so a misspelt key cannot be silently ignored.

A GLMM design adds ``family = "binomial"`` (``link`` logit, probit or cloglog) or
``family = "poisson"`` (``link = "log"``, an optional ``exposure = "enrolled"`` column drawn
uniform on ``exposure_range = [low, high]``, default [0.5, 2.0]) and leaves out ``residual_sd``
(a GLMM has none; 0 is accepted). See ``seed_binary_design`` in `tiers.simulation.presets`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.errors import DesignError
from tiers.simulation.memory import check_memory
from tiers.simulation.outcome import check_exposure, check_family, draw_outcome
from tiers.simulation.parts import (
    Covariate,
    Level,
    _as_tuple,
    _check_count,
    _check_name,
    _check_real,
    _checked_keys,
)

__all__ = ["Covariate", "Level", "NestedDesign", "draw_response", "simulate"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NestedDesign:
    """A fully nested random-intercept design with per-observation covariates.

    Parameters
    ----------
    levels : tuple of Level
        The grouping levels, outermost first; at least one.
    obs_per_unit : int
        Observations per unit of the innermost level (the seed's two semesters per student).
    residual_sd : float
        Standard deviation of the per-observation residual.
    covariates : tuple of Covariate, default ()
        Covariates, drawn per observation.
    intercept : float, default 0.0
        True intercept.
    response : str, default "y"
        Name of the response column.
    obs_name : str, default "obs"
        Name of the observation-index column (1..`obs_per_unit` within each innermost unit).
    family : {"gaussian", "binomial", "poisson"}, default "gaussian"
        The outcome: normal with `residual_sd`, or a GLMM's 0/1 outcome or count given the linear
        predictor (`tiers.simulation.outcome`); a GLMM design's `residual_sd` must be 0.
    link : str, optional
        The GLMM's link (default: logit for binomial, log for Poisson; identity for gaussian).
    exposure : str, optional
        Poisson only: name of an exposure column, drawn uniform on `exposure_range`; the counts'
        mean is ``exposure * exp(eta)`` (fit with ``offset(log(exposure))``).
    exposure_range : tuple of float, default (0.5, 2.0)

    Raises
    ------
    DesignError
        On any invalid field: a negative or non-finite SD, units or `obs_per_unit` below 1, `p`
        outside [0, 1], duplicate column names, no levels, or a reserved name.
    """

    levels: tuple[Level, ...]
    obs_per_unit: int
    residual_sd: float
    covariates: tuple[Covariate, ...] = ()
    intercept: float = 0.0
    response: str = "y"
    obs_name: str = "obs"
    family: str = "gaussian"
    link: str | None = None
    exposure: str | None = None
    exposure_range: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so the design stays hashable.
        object.__setattr__(self, "levels", _as_tuple(self.levels, Level, "levels"))
        object.__setattr__(self, "covariates", _as_tuple(self.covariates, Covariate, "covariates"))
        if not self.levels:
            raise DesignError("a nested design needs at least one level")
        object.__setattr__(self, "obs_per_unit", _check_count(self.obs_per_unit, "obs_per_unit"))
        object.__setattr__(
            self, "residual_sd", _check_real(self.residual_sd, "residual_sd", nonneg=True)
        )
        object.__setattr__(self, "intercept", _check_real(self.intercept, "intercept"))
        _check_name(self.response, "response")
        _check_name(self.obs_name, "obs_name")
        family, link = check_family(self.family, self.link)
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "link", link)
        if family != "gaussian" and self.residual_sd != 0.0:
            raise DesignError(
                f"a {family} design has no residual SD (the latent residual of a binary outcome is "
                f"fixed by the link, a count's variance by its mean): leave residual_sd out or set "
                f"it to 0, not {self.residual_sd:g}"
            )
        rng = self.exposure_range
        if not isinstance(rng, list | tuple) or len(rng) != 2:
            raise DesignError(f"exposure_range must be [low, high]; got {rng!r}")
        lo, hi = (_check_real(v, "exposure_range") for v in rng)
        object.__setattr__(self, "exposure_range", (lo, hi))
        if self.exposure is not None:
            _check_name(self.exposure, "exposure")
        check_exposure(family, self.exposure, lo, hi)
        owners: dict[str, str] = {}
        for name, role in self._column_roles():
            if name in owners:
                raise DesignError(
                    f"duplicate column name {name!r}: used by the {owners[name]} and the {role}"
                )
            owners[name] = role
        # These would collide with the "sd_residual" and "beta_intercept" keys of true_parameters().
        if "residual" in (lv.name for lv in self.levels):
            raise DesignError("level name 'residual' is reserved for the residual SD")
        if "intercept" in (cv.name for cv in self.covariates):
            raise DesignError("covariate name 'intercept' is reserved for the intercept")

    def _column_roles(self) -> list[tuple[str, str]]:
        roles = [(lv.name, f"level {lv.name!r}") for lv in self.levels]
        roles.append((self.obs_name, "observation index (obs_name)"))
        roles += [(cv.name, f"covariate {cv.name!r}") for cv in self.covariates]
        if self.exposure is not None:
            roles.append((self.exposure, "exposure column"))
        roles.append((self.response, "response"))
        return roles

    @property
    def nrows(self) -> int:
        """Total number of rows (observations) the design generates."""
        return math.prod(lv.units for lv in self.levels) * self.obs_per_unit

    @property
    def ngroups(self) -> dict[str, int]:
        """Total number of units of each level, keyed by level name, outermost first."""
        totals = accumulate((lv.units for lv in self.levels), operator.mul)
        return dict(zip((lv.name for lv in self.levels), totals, strict=True))

    def with_units(self, level_name: str, units: int) -> NestedDesign:
        """Return a copy with one level's units per parent changed (e.g. the number of districts).

        Raises :class:`DesignError` if no level is called `level_name` or `units` is invalid.
        """
        names = [lv.name for lv in self.levels]
        if level_name not in names:
            raise DesignError(f"no level named {level_name!r}; the levels are {names}")
        levels = tuple(
            replace(lv, units=units) if lv.name == level_name else lv for lv in self.levels
        )
        return replace(self, levels=levels)

    def true_parameters(self) -> dict[str, float]:
        """The true parameters, by name.

        ``sd_<level>`` (outermost first), ``sd_residual`` (gaussian designs only),
        ``beta_intercept`` and ``beta_<covariate>``; a GLMM's on the link scale.
        """
        out = {f"sd_{lv.name}": lv.sd for lv in self.levels}
        if self.family == "gaussian":
            out["sd_residual"] = self.residual_sd
        out["beta_intercept"] = self.intercept
        out.update({f"beta_{cv.name}": cv.coef for cv in self.covariates})
        return out

    @property
    def is_glmm(self) -> bool:
        """A binary or count outcome (family binomial or poisson)."""
        return self.family != "gaussian"

    def with_family(self, family: str, link: str | None = None) -> NestedDesign:
        """The same design with another family and link; SDs and coefficients are kept as given.

        Raises :class:`DesignError` for a gaussian design with a residual SD (on which scale would
        its SDs be?) or an invalid family/link.
        """
        if family != "gaussian" and self.residual_sd != 0.0:
            raise DesignError(
                f"this design has a residual SD of {self.residual_sd:g}, so its SDs are on the "
                f"scale of a normal outcome, not on a {family} link scale: use a design written "
                "for the GLMM (family and residual_sd = 0 in the file, or --preset seed-binary)"
            )
        if family == "gaussian":
            raise DesignError(
                "a normal outcome needs its residual SD: write family = 'gaussian' and residual_sd "
                "in a design file, or use the seed preset"
            )
        keep = self.exposure if family == "poisson" else None
        return replace(self, family=family, link=link, exposure=keep)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict in the design-file layout (see the module docstring).

        A gaussian design writes no GLMM keys, a GLMM design no ``residual_sd``.
        """
        out = self._base_dict()
        if self.is_glmm:
            del out["residual_sd"]
            out["family"], out["link"] = self.family, self.link
            if self.exposure is not None:
                out["exposure"] = self.exposure
                out["exposure_range"] = list(self.exposure_range)
        return out

    def _base_dict(self) -> dict[str, Any]:
        return {
            "levels": [{"name": lv.name, "units": lv.units, "sd": lv.sd} for lv in self.levels],
            "obs_per_unit": self.obs_per_unit,
            "obs_name": self.obs_name,
            "residual_sd": self.residual_sd,
            "covariates": [
                {f.name: getattr(cv, f.name) for f in fields(Covariate)} for cv in self.covariates
            ],
            "intercept": self.intercept,
            "response": self.response,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NestedDesign:
        """Build a design from the :meth:`to_dict` layout.

        Raises :class:`DesignError` on unknown or missing keys (a misspelt key must not be silently
        ignored) or invalid values.
        """
        if isinstance(data, Mapping) and data.get("family", "gaussian") != "gaussian":
            data = {"residual_sd": 0.0, **data}
        top = _checked_keys(data, cls, "design")
        if isinstance(top.get("exposure_range"), list):
            top["exposure_range"] = tuple(top["exposure_range"])
        levels = top.pop("levels")
        covariates = top.pop("covariates", [])
        for key, value in (("levels", levels), ("covariates", covariates)):
            if not isinstance(value, list | tuple):
                raise DesignError(f"design: {key!r} must be a list of tables/objects")
        return cls(
            levels=tuple(
                Level(**_checked_keys(d, Level, f"levels[{i}]")) for i, d in enumerate(levels)
            ),
            covariates=tuple(
                Covariate(**_checked_keys(d, Covariate, f"covariates[{i}]"))
                for i, d in enumerate(covariates)
            ),
            **top,
        )


def draw_response(
    design: NestedDesign, rng: np.random.Generator, *, components: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray], list[FloatArray], FloatArray | None]:
    """The one response simulator of a nested design.

    Level effects outermost first, then the covariates, then the residuals (a GLMM design: the
    exposure, if any, and the outcome given the linear predictor), drawn from ``rng`` in that order.

    Returns
    -------
    y : array (nrows,)
        Float64 for a gaussian design, int64 (0/1 or counts) for a GLMM design.
    covariates : dict
        Per covariate its values (Bernoulli as int64, normal as float64), and the exposure column
        (float64) of a Poisson design with one.
    effects : list of arrays
        Each level's effects, one per unit.
    residual : array or None
        With ``components``: the residuals, or a GLMM design's conditional means (``mu``).
    """
    nrows = design.nrows
    counts = list(design.ngroups.values())
    effects = [rng.standard_normal(n) * lv.sd for lv, n in zip(design.levels, counts, strict=True)]
    covs: dict[str, np.ndarray] = {}
    for cv in design.covariates:
        if cv.kind == "bernoulli":
            # random() is in [0, 1), so p = 0 and p = 1 give all zeros and all ones.
            covs[cv.name] = (rng.random(nrows) < cv.p).astype(np.int64)
        else:
            x = rng.standard_normal(nrows)
            x *= cv.sd
            x += cv.mean
            covs[cv.name] = x
    if design.is_glmm:
        y = np.zeros(nrows)
        residual = None
    else:
        y = rng.standard_normal(nrows)
        y *= design.residual_sd
        residual = y.copy() if components else None
    y += design.intercept
    for cv in design.covariates:
        y += cv.coef * covs[cv.name]
    for eff, n in zip(effects, counts, strict=True):
        # Each unit owns a contiguous block of rows, so a (units, block) view adds the effects by
        # broadcasting, without an nrows-long temporary per level.
        blocks = y.reshape(n, nrows // n)
        blocks += eff[:, None]
    if design.is_glmm:
        exposure = None
        if design.exposure is not None:
            lo, hi = design.exposure_range
            exposure = lo + (hi - lo) * rng.random(nrows)
            covs[design.exposure] = exposure
        assert design.link is not None  # set by NestedDesign.__post_init__
        outcome, mu = draw_outcome(design.family, design.link, y, exposure, rng)
        return outcome, covs, effects, (mu if components else None)
    return y, covs, effects, residual


def simulate(
    design: NestedDesign,
    seed: int | np.random.Generator | np.random.SeedSequence | None = None,
    *,
    restart_ids: bool = False,
    max_rows: int = 50_000_000,
    components: bool = False,
) -> pd.DataFrame:
    """Draw one data set from a nested design.

    Parameters
    ----------
    design : NestedDesign
        The design; rows and draws are laid out as the module docstring describes.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        Passed to :func:`numpy.random.default_rng`. A Generator is used (and advanced) as is;
        ``None`` draws fresh entropy.
    restart_ids : bool, default False
        False: each level's ids run 1..N over the whole data set. True: they restart at 1 within
        each parent unit (1..units in every school), as real data often has; a unit is then
        identified only by its id together with its ancestors' ids.
    max_rows : int, default 50,000,000
        Refuse designs with more rows than this, before drawing anything.
    components : bool, default False
        Also return the true effect of each level per row (``<level>_effect``) and the residual
        (``residual``; a GLMM design: the conditional mean ``mu``), for checking estimates against
        the truth.

    Returns
    -------
    pandas.DataFrame
        Id columns (int64, outermost first), the observation index (int64), the covariates
        (Bernoulli as int64, normal as float64), a Poisson design's exposure (float64), the
        response (float64; int64 0/1 or counts for a GLMM design), then any components.

    Raises
    ------
    DesignError
        If ``design.nrows > max_rows``, or a component column name clashes with a design column.
    """
    if not isinstance(design, NestedDesign):
        raise DesignError(f"simulate needs a NestedDesign, got {type(design).__name__}")
    max_rows = _check_count(max_rows, "max_rows")
    nrows = design.nrows
    if nrows > max_rows:
        raise DesignError(
            f"the design has {nrows:,} rows, more than max_rows={max_rows:,}; "
            f"pass simulate(..., max_rows={nrows}) or larger to generate it anyway"
        )
    # the columns and the response's temporaries, 8 bytes a cell: refused here, not by MemoryError
    ncols = len(design.levels) + 3 + len(design.covariates) + 2 * len(design.levels) * components
    check_memory(nrows * 8 * (ncols + 3), f"the design's {nrows:,} rows")
    taken = {name for name, _ in design._column_roles()}
    last = "mu" if design.is_glmm else "residual"
    extra = [f"{lv.name}_effect" for lv in design.levels] + [last] if components else []
    clash = sorted(taken.intersection(extra))
    if clash:
        raise DesignError(f"components=True would add column(s) {clash} already in the design")

    rng = np.random.default_rng(seed)
    counts = list(design.ngroups.values())
    y, covs, effects, residual = draw_response(design, rng, components=components)

    cols: dict[str, np.ndarray] = {}
    for lv, n in zip(design.levels, counts, strict=True):
        units = np.arange(n, dtype=np.int64)
        ids = units % lv.units + 1 if restart_ids else units + 1
        cols[lv.name] = np.repeat(ids, nrows // n)
    cols[design.obs_name] = np.tile(
        np.arange(1, design.obs_per_unit + 1, dtype=np.int64), counts[-1]
    )
    for cv in design.covariates:
        cols[cv.name] = covs[cv.name]
    if design.exposure is not None:
        cols[design.exposure] = covs[design.exposure]
    cols[design.response] = y
    if components:
        for lv, eff, n in zip(design.levels, effects, counts, strict=True):
            cols[f"{lv.name}_effect"] = np.repeat(eff, nrows // n)
        cols[last] = residual  # type: ignore[assignment]
    # copy=False: the arrays are ours alone, and copying 8M-row columns would double peak memory.
    return pd.DataFrame(cols, copy=False)
