"""Simulate data from a nested (hierarchical) random-intercept design.

A :class:`NestedDesign` declares an ordered list of levels, outermost first (districts, schools,
teachers, students), each with the number of units per parent unit and the SD of its random
intercept; the number of observations per innermost unit; the residual SD; covariates with their
true coefficients; and an intercept. :func:`simulate` turns a design and a seed into a DataFrame
whose response is

    y = intercept + sum(coef * covariate) + sum(level effects) + residual.

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
3. the residuals: ``residual_sd * standard_normal(nrows)``.

The number of draws depends only on the unit counts and the covariate kinds, never on the SDs,
``p`` or the coefficients, so two designs that differ only in those share their random numbers
(common random numbers for comparing designs).

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
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from itertools import accumulate
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.errors import DesignError
from tiers.simulation.memory import check_memory

FloatArray = NDArray[np.float64]

_KINDS: tuple[str, ...] = ("bernoulli", "normal")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DesignError(f"{what}: name must be a non-empty string, got {value!r}")
    return value


def _check_real(value: object, what: str, *, nonneg: bool = False) -> float:
    # bool is an Integral; True as an SD is far more likely a mistake than a 1.
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or (nonneg and value < 0)
    ):
        need = "a finite number >= 0" if nonneg else "a finite number"
        raise DesignError(f"{what} must be {need}, got {value!r}")
    return float(value)


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DesignError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class Level:
    """One level of a nested design.

    Parameters
    ----------
    name : str
        Name of the level's id column, e.g. ``"school_id"``.
    units : int
        Number of units of this level within each unit of the enclosing level (for the outermost
        level: the total number of units).
    sd : float
        Standard deviation of the level's normal random intercept; 0 switches the level off while
        keeping its ids.
    """

    name: str
    units: int
    sd: float

    def __post_init__(self) -> None:
        _check_name(self.name, "level")
        what = f"level {self.name!r}"
        # Coerce numpy scalars and TOML ints to plain Python types so designs compare and serialise
        # the same however they were built.
        object.__setattr__(self, "units", _check_count(self.units, f"{what}: units"))
        object.__setattr__(self, "sd", _check_real(self.sd, f"{what}: sd", nonneg=True))


@dataclass(frozen=True, slots=True)
class Covariate:
    """A covariate drawn independently for every observation, with its true coefficient.

    Parameters
    ----------
    name : str
        Column name.
    kind : {"bernoulli", "normal"}
        ``"bernoulli"``: 0/1 integers, 1 with probability `p` (in [0, 1]); ``"normal"``: floats
        with mean `mean` and standard deviation `sd`.
    coef : float
        True coefficient of the covariate in the response.
    """

    name: str
    kind: Literal["bernoulli", "normal"]
    coef: float
    p: float = 0.5
    mean: float = 0.0
    sd: float = 1.0

    def __post_init__(self) -> None:
        _check_name(self.name, "covariate")
        what = f"covariate {self.name!r}"
        if self.kind not in _KINDS:
            raise DesignError(f"{what}: kind must be one of {list(_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "coef", _check_real(self.coef, f"{what}: coef"))
        p = _check_real(self.p, f"{what}: p")
        if not 0.0 <= p <= 1.0:
            raise DesignError(f"{what}: p must lie in [0, 1], got {p!r}")
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "mean", _check_real(self.mean, f"{what}: mean"))
        object.__setattr__(self, "sd", _check_real(self.sd, f"{what}: sd", nonneg=True))


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

        ``sd_<level>`` (outermost first), ``sd_residual``, ``beta_intercept`` and
        ``beta_<covariate>``.
        """
        out = {f"sd_{lv.name}": lv.sd for lv in self.levels}
        out["sd_residual"] = self.residual_sd
        out["beta_intercept"] = self.intercept
        out.update({f"beta_{cv.name}": cv.coef for cv in self.covariates})
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict in the design-file layout (see the module docstring)."""
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
        top = _checked_keys(data, cls, "design")
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


def _as_tuple(value: object, kind: type, what: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, kind) for v in value):
        raise DesignError(f"{what} must be a tuple of {kind.__name__} objects, got {value!r}")
    return tuple(value)


def _checked_keys(data: object, cls: type, what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise DesignError(f"{what} must be a table/object, got {data!r}")
    allowed = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise DesignError(f"{what}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")
    # A field without a default is required; dataclasses mark that with the MISSING sentinel.
    missing = [
        n
        for n, f in allowed.items()
        if n not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise DesignError(f"{what}: missing required key(s) {missing}")
    return dict(data)


def draw_response(
    design: NestedDesign, rng: np.random.Generator, *, components: bool = False
) -> tuple[FloatArray, dict[str, np.ndarray], list[FloatArray], FloatArray | None]:
    """The one response simulator of a nested design.

    Level effects outermost first, then the covariates, then the residuals, drawn from ``rng`` in
    that order.

    Returns
    -------
    y : array (nrows,)
    covariates : dict
        Per covariate its values (Bernoulli as int64, normal as float64).
    effects : list of arrays
        Each level's effects, one per unit.
    residual : array or None
        The residuals, with ``components``.
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
        (``residual``), for checking estimates against the truth.

    Returns
    -------
    pandas.DataFrame
        Id columns (int64, outermost first), the observation index (int64), the covariates
        (Bernoulli as int64, normal as float64), the response (float64), then any components.

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
    ncols = len(design.levels) + 2 + len(design.covariates) + 2 * len(design.levels) * components
    check_memory(nrows * 8 * (ncols + 3), f"the design's {nrows:,} rows")
    taken = {name for name, _ in design._column_roles()}
    extra = [f"{lv.name}_effect" for lv in design.levels] + ["residual"] if components else []
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
    cols[design.response] = y
    if components:
        for lv, eff, n in zip(design.levels, effects, counts, strict=True):
            cols[f"{lv.name}_effect"] = np.repeat(eff, nrows // n)
        cols["residual"] = residual  # type: ignore[assignment]
    # copy=False: the arrays are ours alone, and copying 8M-row columns would double peak memory.
    return pd.DataFrame(cols, copy=False)
