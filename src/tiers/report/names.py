"""Coefficient and effect names as Stata prints them, read off formulaic's column names.

formulaic names the columns of ``i.sex c.meanses##c.cses`` ``C(sex)[T.girl]``, ``meanses``,
``cses``, ``meanses:cses``; Stata's table shows a ``sex`` header row with the level ``girl`` under
it (the base level left out, as formulaic leaves it out), ``c.meanses#c.cses`` for the
interaction and ``_cons`` for the intercept. A column that is not a plain variable, a factor
level or an interaction of those (``np.log(x)``, ``I(x ** 2)``) keeps formulaic's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LEVEL = re.compile(r"(?P<var>[^\[]+)\[(?:T\.)?(?P<level>.*)\]\Z", re.DOTALL)
_C = re.compile(r"C\(\s*(?P<var>[A-Za-z_][A-Za-z0-9_]*)\s*(?:,.*)?\)\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class StataName:
    """Where one coefficient goes in Stata's table.

    Attributes
    ----------
    term : str
        The row label (``meanses``, ``c.meanses#c.cses``, ``_cons``) or, for factor levels, the
        header row shared by the term's levels (``sex``, ``sex#c.cses``).
    level : str or None
        The level's label under the header (``girl``; ``1 2`` for two factors), None for a
        coefficient on a row of its own.
    """

    term: str
    level: str | None = None


def _split(name: str) -> list[str]:
    """Split formulaic's interaction name at the ``:`` outside brackets and parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(name):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ":" and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts


def _factor(part: str) -> tuple[str, str] | None:
    """``C(sex)[T.girl]`` or ``sex[T.girl]`` -> ``("sex", "girl")``; None for anything else."""
    m = _LEVEL.match(part)
    if m is None:
        return None
    var = m["var"].strip()
    c = _C.match(var)
    if c is not None:
        var = c["var"]
    if not _NAME.match(var):
        return None
    return var, m["level"]


def _labelled(
    factor: tuple[str, str] | None, labels: Mapping[str, Mapping[Any, str]]
) -> tuple[str, str] | None:
    """A factor level shown by its value label (Stata's `.dta` labels), when it has one."""
    if factor is None or factor[0] not in labels:
        return factor
    var, level = factor
    for value, label in labels[var].items():
        text = str(value)
        if level == text or (
            isinstance(value, float) and value.is_integer() and level == str(int(value))
        ):
            return var, str(label)
    return factor


def stata_name(column: str, labels: Mapping[str, Mapping[Any, str]] | None = None) -> StataName:
    """The Stata name of one fixed-effects column (see the module docstring).

    ``labels`` (``{column: {value: label}}``, `tiers.read_data`'s ``attrs["value_labels"]``)
    shows factor levels by their value labels, as Stata does.
    """
    if column == "(Intercept)":
        return StataName("_cons")
    parts = _split(column)
    factors = [_labelled(_factor(p), labels or {}) for p in parts]
    if len(parts) == 1:
        f = factors[0]
        return StataName(column) if f is None else StataName(f[0], f[1])
    if not all(f is not None or _NAME.match(p) for p, f in zip(parts, factors, strict=True)):
        return StataName(column)
    term = "#".join(
        f[0] if f is not None else f"c.{p}" for p, f in zip(parts, factors, strict=True)
    )
    levels = [f[1] for f in factors if f is not None]
    return StataName(term, " ".join(levels) if levels else None)


def stata_effect(zname: str) -> str:
    """The Stata name of a random effect (``_cons``, ``cses``, ``2.grade``, ``c.a#c.b``)."""
    if zname == "(Intercept)":
        return "_cons"
    parts = _split(zname)
    factors = [_factor(p) for p in parts]
    if len(parts) == 1:
        f = factors[0]
        return zname if f is None else f"{f[1]}.{f[0]}"
    if not all(f is not None or _NAME.match(p) for p, f in zip(parts, factors, strict=True)):
        return zname
    return "#".join(
        f"{f[1]}.{f[0]}" if f is not None else f"c.{p}" for p, f in zip(parts, factors, strict=True)
    )
