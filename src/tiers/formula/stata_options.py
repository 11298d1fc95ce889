"""Options of Stata's ``mixed``: where each may be written, its abbreviations, and its value.

``mixed depvar indepvars [, fe_options] || level: [varlist] [, re_options] ... [, options]``: the
options of the whole model (``reml``, ``stddeviations``, ``level(90)``) share the comma of the last
random-effects equation with that equation's own options (``covariance(unstructured)``,
``noconstant``), so they are told apart by name. An option is matched as Stata matches it: any
abbreviation at least as long as its minimal one (``cov``, ``noc``, ``ml``, ``stddev``, ``l``).
Options tiers does not implement are refused by name, never ignored.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from tiers.errors import FormulaError
from tiers.formula._text import caret
from tiers.formula.types import Covariance, DfMethod

Place = Literal["fixed", "level", "last"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One option: its full name, the length of its minimal abbreviation, whether it takes a value."""

    name: str
    minimal: int
    takes_value: bool = False

    def matches(self, word: str) -> bool:
        """``word`` abbreviates this option (Stata's rule: at least the minimal abbreviation)."""
        return len(word) >= self.minimal and self.name.startswith(word)


@dataclass(frozen=True, slots=True)
class Option:
    """One option as written: its full name (or the word when unknown), value and position."""

    name: str
    written: str
    value: str | None
    pos: int


#: Options of one random-effects equation (Stata's re_options).
EQUATION = (
    Spec("covariance", 3, True),
    Spec("noconstant", 3),
    Spec("pweight", 2, True),
    Spec("fweight", 2, True),
)
#: Options of the whole model, written after the comma of the last equation. ``nolog`` only
#: silences Stata's iteration log, which tiers never prints.
GLOBAL = (
    Spec("reml", 4),
    Spec("mle", 2),
    Spec("variance", 3),
    Spec("stddeviations", 6),
    Spec("level", 1, True),
    Spec("nolog", 5),
    Spec("residuals", 3, True),
    Spec("vce", 3, True),
    Spec("pwscale", 7, True),
    Spec("dfmethod", 3, True),
)
#: Options of ``mixed`` that tiers does not implement yet, refused by name.
UNSUPPORTED = (
    Spec("dftable", 5, True),
    Spec("collinear", 3),
    Spec("noretable", 5),
    Spec("nofetable", 5),
    Spec("estmetric", 4),
    Spec("noheader", 6),
    Spec("nogroup", 4),
    Spec("nostderr", 5),
    Spec("emiterate", 6, True),
    Spec("emtolerance", 5, True),
    Spec("emonly", 6),
    Spec("emlog", 5),
    Spec("emdots", 5),
    Spec("matsqrt", 7),
    Spec("matlog", 6),
    Spec("small", 5),
    Spec("coeflegend", 10),
    Spec("iterate", 4, True),
    Spec("tolerance", 3, True),
    Spec("ltolerance", 4, True),
    Spec("nrtolerance", 5, True),
    Spec("nonrtolerance", 8),
    Spec("technique", 4, True),
    Spec("difficult", 3),
    Spec("from", 4, True),
    Spec("log", 3),
    Spec("trace", 5),
    Spec("offset", 3, True),
)
#: Covariance structures with Stata's minimal abbreviations (``ex`` as ``xtmixed`` had it).
VARTYPES: tuple[tuple[Covariance, int], ...] = (
    ("independent", 3),
    ("exchangeable", 2),
    ("identity", 2),
    ("unstructured", 2),
)

SUPPORTED = (
    "options of a level (after its comma): covariance(independent|exchangeable|identity|"
    "unstructured), noconstant, pweight(varname); options of the model (after the comma of the "
    "last level): reml, mle, variance, stddeviations, level(#), residuals(ar 1, t(time) | "
    "exchangeable | independent, by(stratum) | unstructured, t(time)), "
    "vce(oim|robust|cluster clustvar), pwscale(size|effective|gk), dfmethod(kroger|satterthwaite)"
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_options(text: str, whole: str, offset: int) -> list[Option]:
    """The options written in ``text`` (what follows a comma), each with its position in ``whole``."""
    out: list[Option] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        m = _WORD.match(text, i)
        if m is None:
            raise caret(
                whole,
                offset + i,
                f"expected an option after the comma, got {text[i:].split()[0]!r}",
            )
        j = m.end()
        value = None
        if j < len(text) and text[j] == "(":
            depth, k = 0, j
            while k < len(text):
                depth += {"(": 1, ")": -1}.get(text[k], 0)
                if depth == 0:
                    break
                k += 1
            value = text[j + 1 : k].strip()
            j = k + 1
        out.append(Option(m.group(0).lower(), text[i:j], value, offset + i))
        i = j
    return out


def _find(word: str, specs: tuple[Spec, ...]) -> Spec | None:
    return next((s for s in specs if s.matches(word)), None)


def classify(
    options: list[Option], place: Place, level: str | None, whole: str
) -> dict[str, Option]:
    """Check each option is one tiers supports where it is written; return them by full name.

    ``place`` is ``"fixed"`` (after the fixed part, before the first ``||``: ``noconstant``,
    and ``reml``/``mle`` as tiers has always accepted there), ``"level"`` (a level other than the
    last: its own options) or ``"last"`` (the last level: its own options and the model's).

    Raises
    ------
    FormulaError
        Naming the option and listing the supported ones; an option of the model written on
        another level, or a level's option written before the first ``||``, says where it goes.
    """
    where = f"after the comma of level {level!r}" if level else "after the fixed part"
    found: dict[str, Option] = {}
    for opt in options:
        eq, gl = _find(opt.name, EQUATION), _find(opt.name, GLOBAL)
        spec = eq or gl
        if spec is None:
            raise _unknown(opt, where, whole)
        if eq is not None and place == "fixed" and eq.name != "noconstant":
            raise caret(
                whole,
                opt.pos,
                f"{opt.written} is an option of a random-effects level: write it after that "
                "level's comma, e.g. '|| school: x, covariance(unstructured)'",
            )
        if gl is not None and place == "level":
            raise caret(
                whole,
                opt.pos,
                f"{opt.written} is an option of the whole model: write it after the comma of the "
                "last level (Stata's place for it)",
            )
        if gl is not None and place == "fixed" and gl.name not in ("reml", "mle"):
            raise caret(
                whole,
                opt.pos,
                f"{opt.written} is an option of the whole model: write it after the comma of the "
                "last level, e.g. 'y x || school:, stddeviations'",
            )
        if spec.takes_value and not opt.value:
            raise caret(whole, opt.pos, f"{spec.name}() needs a value, e.g. {_example(spec.name)}")
        if not spec.takes_value and opt.value is not None:
            raise caret(whole, opt.pos, f"{spec.name} takes no value: write '{spec.name}'")
        found[spec.name] = opt
    return found


def _example(name: str) -> str:
    return {
        "covariance": "covariance(unstructured)",
        "level": "level(90)",
        "residuals": "residuals(ar 1, t(time))",
    }.get(name, name)


def _unknown(opt: Option, where: str, whole: str) -> FormulaError:
    known = _find(opt.name, UNSUPPORTED)
    if known is not None:
        return caret(
            whole,
            opt.pos,
            f"Stata's option {opt.written} is not supported yet by tiers; supported: {SUPPORTED}",
        )
    names = [s.name for s in (*EQUATION, *GLOBAL)]
    close = difflib.get_close_matches(opt.name, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if opt.value is None and not close:
        hint = " (variables go before the comma: '|| level: x, options')"
    return caret(
        whole, opt.pos, f"unknown option {opt.written!r} {where}{hint}; supported: {SUPPORTED}"
    )


def covariance(opt: Option, whole: str) -> Covariance:
    """The structure named in ``covariance(...)``, abbreviated as Stata allows."""
    value = (opt.value or "").lower()
    for name, minimal in VARTYPES:
        if len(value) >= minimal and name.startswith(value):
            return name
    if value.startswith(("fixed", "pattern")):
        why = f"{opt.written} is not supported yet by tiers"
    else:
        why = f"unknown covariance structure {opt.value!r}"
    raise caret(
        whole,
        opt.pos,
        f"{why}; valid: unstructured, independent, exchangeable, identity (abbreviated as Stata "
        "allows: un, ind, ex, id)",
    )


def confidence(opt: Option, whole: str) -> float:
    """``level(#)`` as a fraction; Stata allows 10 to 99.99."""
    try:
        value = float(opt.value or "")
    except ValueError:
        value = float("nan")
    if not 10.0 <= value <= 99.99:
        raise caret(
            whole,
            opt.pos,
            f"level() takes a confidence level in percent between 10 and 99.99, got {opt.value!r}",
        )
    return value / 100.0


#: ``dfmethod()``'s methods tiers implements, with Stata's minimal abbreviations.
DFMETHODS: tuple[tuple[str, int, DfMethod], ...] = (
    ("kroger", 2, "kenward-roger"),
    ("satterthwaite", 3, "satterthwaite"),
)


def df_method(opt: Option, whole: str) -> DfMethod:
    """The method named in ``dfmethod(...)``: ``kroger`` or ``satterthwaite``."""
    value = (opt.value or "").lower().strip()
    for name, minimal, method in DFMETHODS:
        if len(value) >= minimal and name.startswith(value):
            return method
    known = ("residual", "repeated", "anova", "satterthwaite generalized")
    why = (
        f"{opt.written} is not supported by tiers"
        if any(k.startswith(value) for k in known) and value
        else f"unknown dfmethod {opt.value!r}"
    )
    raise caret(
        whole,
        opt.pos,
        f"{why}; valid: dfmethod(kroger) (Kenward-Roger) and dfmethod(satterthwaite)",
    )
