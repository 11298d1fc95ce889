"""A `Formula` written back as text, in the syntax it was written in."""

from __future__ import annotations

import re

from tiers.formula.types import Formula


def render(formula: Formula) -> str:
    """Write a formula back out in its own syntax (used to propose corrected models)."""
    if formula.syntax == "stata":
        head = " ".join([formula.response, *_to_stata(formula.fixed)])
        levels = []
        for term in formula.random:
            if term.covariance == "identity" and len(term.group) == 1 and term.is_intercept_only:
                levels.append(f"|| _all: R.{term.group[0]}")
                continue
            slopes = _to_stata(term.expr)
            level = f"|| {term.group[-1]}:" + ("" if not slopes else " " + " ".join(slopes))
            opts = []
            if "0" in [t.strip() for t in term.expr.split("+")]:
                opts.append("noconstant")
            if slopes and term.covariance != "independent":
                opts.append(f"covariance({term.covariance})")
            levels.append(level + (", " + " ".join(opts) if opts else ""))
        return " ".join([head, *levels])
    fixed = "" if formula.fixed.strip() == "1" else formula.fixed
    bars = []
    for term in formula.random:
        sep = "||" if term.covariance == "independent" else "|"
        bars.append(f"({term.expr} {sep} {':'.join(term.group)})")
    rhs = " + ".join([p for p in (fixed, *bars) if p])
    return f"{formula.response} ~ {rhs}"


def _to_stata(rhs: str) -> list[str]:
    """Formulaic terms back to Stata's varlist notation (C(x) -> i.x, a:b -> a#b)."""
    out = []
    for term in rhs.split("+"):
        term = term.strip()
        if term in ("1", "0", ""):
            continue
        term = re.sub(r"C\(([^)]+)\)", r"i.\1", term).replace("*", "##").replace(":", "#")
        out.append(term)
    return out


def render_nested(formula: Formula, order: list[str]) -> str:
    """Render the nested intercept model with levels in ``order`` (outermost first).

    lme4 syntax uses the ``a/b/c`` shorthand; Stata syntax lists the levels outermost first.
    """
    if formula.syntax == "stata":
        fixed = _to_stata(formula.fixed)
        return " ".join([formula.response, *fixed, *(f"|| {name}:" for name in order)])
    rhs = "" if formula.fixed.strip() == "1" else formula.fixed + " + "
    return f"{formula.response} ~ {rhs}(1 | {'/'.join(order)})"
