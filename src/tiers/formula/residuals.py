"""Residual structures within the innermost group: what the user asked for (pure syntax, no data).

The residuals of one innermost group (a student followed over waves) have covariance
``sigma^2 R_g``, ``R_g = S_g C_g S_g``: ``C_g`` a correlation matrix and ``S_g`` a diagonal of SD
ratios. The structures are those of Stata's ``mixed, residuals()`` and nlme's ``correlation=`` /
``weights=`` arguments:

* `AR1`: ``corr = phi^|t_i - t_j|`` on an integer time (Stata ``ar 1, t(time)``; nlme ``corAR1``,
  which nlme fits as ``corARMA(p = 1)`` on the time values when there are gaps);
* `CAR1`: the same on a continuous time, ``0 < phi < 1`` (nlme ``corCAR1``);
* `Toeplitz`: a free correlation per lag up to ``order``, none beyond (Stata ``toeplitz #,
  t(time)``): any values that keep the correlation matrix over the occasions positive definite;
* `MA`: the same lags as the correlations of a moving average of that order (Stata ``ma #,
  t(time)``; nlme ``corARMA(q = order)``), a smaller set of values (lag 1 within +-0.5 for an
  MA(1), where a Toeplitz(1) over three occasions reaches +-0.71);
* `Banded`: unstructured within a band: an SD per occasion and a correlation per pair of
  occasions at most ``order`` occasions apart, none beyond (Stata ``banded #, t(time)``);
* `Exchangeable`: one correlation between any two residuals of a group (Stata ``exchangeable``,
  nlme ``corCompSymm``);
* `Unstructured`: an SD per occasion and a correlation per pair of occasions (Stata
  ``unstructured, t(time)``; nlme ``corSymm`` with ``varIdent(~ 1 | time)``);
* `Independent` with ``by``: an SD per stratum (Stata ``independent, by(stratum)``; nlme
  ``varIdent(~ 1 | stratum)``). ``by`` on a correlation structure keeps one correlation and
  gives each stratum its SD (nlme's ``correlation=`` with ``weights=varIdent``).

``group`` names a column whose values split the innermost random-effects group into the residual
groups (nlme's ``form = ~ t | school/student`` when the random effects stop at school); by
default the residual groups are the innermost random-effects groups (Stata's rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tiers.errors import FormulaError

Kind = Literal[
    "ar1", "car1", "toeplitz", "ma", "banded", "exchangeable", "unstructured", "independent"
]
KINDS: tuple[str, ...] = (
    "ar1",
    "car1",
    "toeplitz",
    "ma",
    "banded",
    "exchangeable",
    "unstructured",
    "independent",
)
#: The structures of lag correlations on the time's values, with an order (the largest lag).
LAGGED: tuple[str, ...] = ("toeplitz", "ma")
#: The structures with an order: lags on the time, or occasions apart (banded).
ORDERED: tuple[str, ...] = (*LAGGED, "banded")
#: The structures with an SD per occasion of the time.
BY_OCCASION: tuple[str, ...] = ("unstructured", "banded")
#: Unstructured residuals have T (T + 1) / 2 parameters; more occasions than this are refused.
MAX_OCCASIONS = 12


@dataclass(frozen=True, init=False)
class ResidualStructure:
    """One residual structure (use the subclasses: `AR1`, `CAR1`, `Exchangeable`, ...).

    Attributes
    ----------
    kind : {"ar1", "car1", "toeplitz", "ma", "banded", "exchangeable", "unstructured", \
"independent"}
    time : str or None
        The time column (AR(1), CAR(1), Toeplitz, MA, banded, unstructured).
    by : str or None
        A column whose strata get their own residual SD.
    group : str or None
        A column splitting the innermost random-effects group into residual groups.
    order : int
        Toeplitz and MA: the largest lag with a correlation; banded: the most occasions apart
        with one (0 for the other structures).
    """

    kind: Kind
    time: str | None
    by: str | None
    group: str | None
    order: int

    def __init__(
        self,
        kind: Kind,
        time: str | None = None,
        by: str | None = None,
        group: str | None = None,
        order: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise FormulaError(
                f"residual structure must be one of {', '.join(KINDS)}; got {kind!r}"
            )
        for name, value in (("time", time), ("by", by), ("group", group)):
            if value is not None and (not isinstance(value, str) or not value):
                raise FormulaError(f"{name}= takes a column name, got {value!r}")
        if kind in ORDERED and (isinstance(order, bool) or not isinstance(order, int) or order < 1):
            what = {"toeplitz": "a Toeplitz", "ma": "an MA", "banded": "a banded"}[kind]
            raise FormulaError(f"{what} structure needs an order of 1 or more, got {order!r}")
        if kind in ("ar1", "car1", *BY_OCCASION, *LAGGED) and time is None:
            raise FormulaError(f"the {kind} residual structure needs a time column (time=)")
        if kind == "independent" and by is None:
            raise FormulaError(
                "independent residuals with one variance are the default; give by= a column for "
                "a residual SD per stratum"
            )
        if kind in BY_OCCASION and by is not None:
            raise FormulaError(
                f"{kind} residuals already have an SD per occasion; by= is not allowed"
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "by", by)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "order", order if kind in ORDERED else 0)

    def __repr__(self) -> str:
        args = [repr(self.time)] if self.time is not None else []
        args += [repr(self.order)] if self.kind in ORDERED else []
        args += [f"{k}={v!r}" for k, v in (("by", self.by), ("group", self.group)) if v]
        return f"{type(self).__name__}({', '.join(args)})"

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns the structure reads."""
        return tuple(c for c in (self.group, self.time, self.by) if c is not None)

    def describe(self) -> str:
        """The structure in words, as the summaries head it (Stata's ``Residual: AR(1)``)."""
        name = {
            "ar1": "AR(1)",
            "car1": "CAR(1)",
            "toeplitz": f"Toeplitz({self.order})",
            "ma": f"MA({self.order})",
            "banded": f"Banded({self.order})",
            "exchangeable": "Exchangeable",
            "unstructured": "Unstructured",
            "independent": "Independent",
        }[self.kind]
        return f"{name}, by {self.by}" if self.by is not None else name


class AR1(ResidualStructure):
    """AR(1) residuals on an integer time: ``corr(e_i, e_j) = phi^|t_i - t_j|``, gaps respected."""

    def __init__(self, time: str, *, by: str | None = None, group: str | None = None) -> None:
        super().__init__("ar1", time, by, group)


class CAR1(ResidualStructure):
    """Continuous-time AR(1): ``corr(e_i, e_j) = phi^|t_i - t_j|``, ``0 < phi < 1``, any real t."""

    def __init__(self, time: str, *, by: str | None = None, group: str | None = None) -> None:
        super().__init__("car1", time, by, group)


class Toeplitz(ResidualStructure):
    """A free correlation per lag ``1..order`` of the integer time, none beyond (Stata's toeplitz).

    Any lag correlations for which the banded Toeplitz matrix over the occasions (every time from
    the earliest to the latest of a group) is positive definite: Stata's ``toeplitz #``. `MA` is
    the moving-average version (nlme's ``corARMA(q = order)``).
    """

    def __init__(
        self, time: str, order: int, *, by: str | None = None, group: str | None = None
    ) -> None:
        super().__init__("toeplitz", time, by, group, order)


class MA(ResidualStructure):
    """The lag correlations of a moving average of ``order`` on the integer time (MA(q)).

    ``e_t = a_t + theta_1 a_(t-1) + ... + theta_q a_(t-q)``, fitted through an invertible
    ``theta`` (Stata's ``ma #``, nlme's ``corARMA(q = order)``). Its lag correlations are those
    of a `Toeplitz` of the same order restricted to what a moving average can produce (for all
    lengths of series): an MA(1)'s lag-1 correlation lies within +-0.5.
    """

    def __init__(
        self, time: str, order: int, *, by: str | None = None, group: str | None = None
    ) -> None:
        super().__init__("ma", time, by, group, order)


class Exchangeable(ResidualStructure):
    """One correlation between any two residuals of a group (compound symmetry)."""

    def __init__(self, *, by: str | None = None, group: str | None = None) -> None:
        super().__init__("exchangeable", None, by, group)


class Unstructured(ResidualStructure):
    """An SD per occasion (value of ``time``) and a correlation per pair of occasions."""

    def __init__(self, time: str, *, group: str | None = None) -> None:
        super().__init__("unstructured", time, None, group)


class Banded(ResidualStructure):
    """Unstructured within a band (Stata's ``banded #``).

    An SD per occasion (value of ``time``) and a correlation per pair of occasions at most
    ``order`` occasions apart in the sorted occasions, 0 beyond; ``order`` of the number of
    occasions - 1 is `Unstructured`.
    """

    def __init__(self, time: str, order: int, *, group: str | None = None) -> None:
        super().__init__("banded", time, None, group, order)


class Independent(ResidualStructure):
    """Independent residuals with an SD per stratum of ``by`` (nlme's ``varIdent``)."""

    def __init__(self, *, by: str, group: str | None = None) -> None:
        super().__init__("independent", None, by, group)


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SUB = re.compile(rf"\b(t|ti|tim|time|by|group)\s*\(\s*({_NAME})\s*\)", re.IGNORECASE)
SUPPORTED = (
    "ar 1, t(time); toeplitz #, t(time); ma #, t(time); banded #, t(time); exchangeable; "
    "independent, by(stratum); unstructured, t(time) (abbreviated as Stata allows: ar, toe, ba, "
    "exc, ind, un)"
)


def parse_residuals(text: str, *, stata: bool = True) -> ResidualStructure:
    """Stata's ``residuals(...)`` content: ``ar 1, t(time)``, ``exchangeable``, ....

    With ``stata=False`` (the CLI's ``--residuals``) also ``car 1, t(time)``, ``group(column)``
    and ``by()`` with a correlation structure: one correlation and an SD per stratum (nlme's
    ``varIdent``; Stata's ``by()`` there would fit a separate structure per stratum).

    Raises
    ------
    FormulaError
        Naming what is not supported and listing what is.
    """
    body, _, opts = text.partition(",")
    words = body.split()
    if not words:
        raise FormulaError(f"residuals() needs a structure; supported: {SUPPORTED}")
    rtype = words[0].lower()
    sub: dict[str, str] = {}
    rest = opts
    for m in _SUB.finditer(opts):
        word = m.group(1).lower()
        key = word if word in ("by", "group") else "t"
        if key == "group" and stata:
            raise FormulaError(
                "residuals(): Stata's residual groups are the lowest level's; group() is a tiers "
                "extension of --residuals and tiers.fit(residuals=)"
            )
        if key in sub:
            raise FormulaError(f"residuals(): {key}() is given twice")
        sub[key] = m.group(2)
        rest = rest.replace(m.group(0), " ")
    if rest.strip():
        raise FormulaError(
            f"residuals(): option {rest.strip()!r} is not supported; supported: {SUPPORTED}"
        )
    time, by, group = sub.get("t"), sub.get("by"), sub.get("group")
    if not stata and rtype in ("car", "car1"):
        order = words[1] if len(words) > 1 else ("1" if rtype == "car1" else "")
        if order != "1" or time is None:
            raise FormulaError("write the continuous-time AR(1) as 'car 1, t(time)'")
        return CAR1(time, by=by, group=group)
    if rtype in ("ar", "ar1") or (len(rtype) >= 2 and "ar".startswith(rtype)):
        order = words[1] if len(words) > 1 else ("1" if rtype == "ar1" else "")
        if order != "1":
            raise FormulaError(
                f"residuals(ar {order}): only AR(1) is supported (write 'ar 1, t(time)')"
            )
        if by is not None and stata:
            raise _by_with_correlation("ar 1")
        if time is None:
            raise FormulaError("residuals(ar 1) needs the time variable: 'ar 1, t(time)'")
        return AR1(time, by=by, group=group)
    if len(rtype) >= 3 and "toeplitz".startswith(rtype):
        order = words[1] if len(words) > 1 else ""
        if not order.isdigit() or int(order) < 1:
            raise FormulaError("write the Toeplitz structure as 'toeplitz #, t(time)' with # >= 1")
        if by is not None and stata:
            raise _by_with_correlation("toeplitz")
        if time is None:
            raise FormulaError("residuals(toeplitz #) needs the time variable: 't(time)'")
        return Toeplitz(time, int(order), by=by, group=group)
    if rtype == "ma":
        order = words[1] if len(words) > 1 else ""
        if not order.isdigit() or int(order) < 1:
            raise FormulaError("write the moving average as 'ma #, t(time)' with # >= 1")
        if by is not None and stata:
            raise _by_with_correlation("ma")
        if time is None:
            raise FormulaError("residuals(ma #) needs the time variable: 't(time)'")
        return MA(time, int(order), by=by, group=group)
    if len(rtype) >= 2 and "banded".startswith(rtype):
        order = words[1] if len(words) > 1 else ""
        if not order.isdigit() or int(order) < 1:
            raise FormulaError("write the banded structure as 'banded #, t(time)' with # >= 1")
        if by is not None:
            raise _by_with_correlation("banded")
        if time is None:
            raise FormulaError("residuals(banded #) needs the time variable: 't(time)'")
        return Banded(time, int(order), group=group)
    if len(rtype) >= 3 and "exchangeable".startswith(rtype):
        if by is not None and stata:
            raise _by_with_correlation("exchangeable")
        _no_time(time, "exchangeable")
        return Exchangeable(by=by, group=group)
    if len(rtype) >= 2 and "unstructured".startswith(rtype):
        if by is not None:
            raise _by_with_correlation("unstructured")
        if time is None:
            raise FormulaError("residuals(unstructured) needs the time variable: 't(time)'")
        return Unstructured(time, group=group)
    if len(rtype) >= 3 and "independent".startswith(rtype):
        _no_time(time, "independent")
        if by is None:
            raise FormulaError(
                "residuals(independent) without by() is the default model; write "
                "'independent, by(stratum)' for an SD per stratum"
            )
        return Independent(by=by, group=group)
    known = ("arma", "exponential", "exp")
    why = "is not supported yet by tiers" if rtype in known else "is not a residual structure"
    raise FormulaError(f"residuals({words[0]}) {why}; supported: {SUPPORTED}")


def _no_time(time: str | None, what: str) -> None:
    if time is not None:
        raise FormulaError(f"residuals({what}) takes no t(): its correlation does not use time")


def _by_with_correlation(what: str) -> FormulaError:
    return FormulaError(
        f"residuals({what}, by()) in Stata estimates a separate {what} structure per stratum, "
        "which tiers does not fit; tiers fits one correlation with an SD per stratum (nlme's "
        f"correlation + varIdent) from Python: residuals=tiers.AR1('time', by='stratum')"
    )
