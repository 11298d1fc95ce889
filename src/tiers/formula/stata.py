"""Stata's syntax: ``y x || dist: || school: x, covariance(unstructured)`` and ``|| _all: R.f``.

Levels are listed outermost first, each nested in the ones before it.
"""

from __future__ import annotations

import re

from tiers.formula._text import caret, check_name, split_top
from tiers.formula.types import COVARIANCES, Covariance, Formula, RandomTerm


def _stata_varlist(varlist: str, whole: str, offset: int) -> list[str]:
    """Stata factor-variable notation to formulaic terms (i.x, c.x, a#b, a##b)."""
    out = []
    for m in re.finditer(r"\S+", varlist):
        token = m.group(0)
        parts = re.split(r"(##|#)", token)
        terms = []
        for part in parts:
            if part in ("#", "##"):
                terms.append(":" if part == "#" else "*")
                continue
            if part.lower().startswith("i."):
                terms.append(f"C({check_name(part[2:], whole, offset + m.start(), 'factor')})")
            elif part.lower().startswith("c."):
                terms.append(check_name(part[2:], whole, offset + m.start(), "variable"))
            else:
                terms.append(check_name(part, whole, offset + m.start(), "variable"))
        out.append("".join(terms))
    return out


def _stata_options(opts: str, whole: str, offset: int) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in re.finditer(r"([A-Za-z]+)(?:\(([^)]*)\))?", opts):
        found[m.group(1).lower()] = (m.group(2) or "").strip().lower()
    return found


def _stata_covariance(value: str, whole: str, pos: int) -> Covariance:
    aliases = {"un": "unstructured", "ind": "independent", "ex": "exchangeable", "id": "identity"}
    for name in COVARIANCES:
        if value == name or (value and name.startswith(value) and len(value) >= 2):
            return name  # type: ignore[return-value]
    if value in aliases:
        return aliases[value]  # type: ignore[return-value]
    raise caret(
        whole, pos, f"unknown covariance structure {value!r}; valid: {', '.join(COVARIANCES)}"
    )


def parse_stata(text: str) -> Formula:
    """Parse ``depvar indepvars || level: [slopes] [, options] ...``; see `tiers.formula.parse.parse`."""
    pieces = split_top(text, "||")
    head_pos, head = pieces[0]
    head_main, _, head_opts = head.partition(",")
    tokens = head_main.split()
    if not tokens:
        raise caret(text, 0, "missing the dependent variable before '||'")
    response = check_name(tokens[0], text, head_pos, "dependent variable")
    first_space = head_main.index(tokens[0]) + len(tokens[0])
    fixed_terms = _stata_varlist(head_main[first_space:], text, head_pos + first_space)
    options = _stata_options(head_opts, text, head_pos + len(head_main))
    fixed = " + ".join(["0" if "noconstant" in options else "1", *fixed_terms])
    reml = True if "reml" in options else (False if ("mle" in options or "ml" in options) else None)

    random: list[RandomTerm] = []
    prefix: tuple[str, ...] = ()
    for pos, piece in pieces[1:]:
        body, _, opts = piece.partition(",")
        if ":" not in body:
            lead = pos + len(body) - len(body.lstrip())
            raise caret(text, lead, f"a Stata level needs a colon: write '|| {body.strip()}:'")
        level, _, slopes = body.partition(":")
        level_pos = pos + len(body) - len(body.lstrip())
        level_name = check_name(level, text, level_pos, "level variable")
        lopts = _stata_options(opts, text, pos + len(body))
        if level_name == "_all":
            # || _all: R.factor -- a crossed factor, identity covariance, outside the nesting.
            raw = slopes.strip()
            if not raw[:2].upper() == "R.":
                raise caret(text, pos, "'|| _all:' takes a factor written as 'R.varname'")
            name = check_name(raw[2:], text, pos, "factor")
            random.append(RandomTerm("1", (name,), name, "identity"))
            continue
        slope_terms = _stata_varlist(slopes, text, pos + len(level) + 1)
        intercept = "noconstant" not in lopts
        if not slope_terms and not intercept:
            raise caret(text, pos, f"level {level_name!r} has no effects: noconstant and no slopes")
        expr = " + ".join((["1"] if intercept else ["0"]) + slope_terms)
        default: Covariance = "independent"
        cov_key = next((k for k in lopts if len(k) >= 3 and "covariance".startswith(k)), None)
        cov = _stata_covariance(lopts[cov_key], text, pos) if cov_key else default
        prefix = (*prefix, level_name)
        random.append(RandomTerm(expr, prefix, level_name, cov))
    if not random:
        raise caret(text, len(text), "no random-effects level after '||'")
    return Formula(text, response, fixed, tuple(random), "stata", reml)
