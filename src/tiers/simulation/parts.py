"""The parts of a simulated design: its levels and covariates, and the checks of their values.

`tiers.simulation.data` builds a `NestedDesign` from them; the checks here refuse a bad value with a
`DesignError` naming the field.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal

from tiers.errors import DesignError

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
