"""R spellings in lme4-syntax formulas, read as tiers (formulaic) spells them, with a note.

lme4 users bring R's arithmetic and functions: ``I(Time^2)``, ``factor(x)``, ``sqrt(x)``,
``poly(x, 2, raw = TRUE)``. formulaic evaluates terms as Python, where ``^`` is a bitwise XOR and
``factor`` does not exist, so each is translated before formulaic sees it, and the formula's notes
say how it was read:

* ``^`` is a power: ``**`` (inside ``I()`` a power; between terms, ``(a + b)^2``, formulaic's ``**``
  crosses terms as R's ``^`` does);
* ``factor(x)``, ``as.factor(x)`` are ``C(x)``; ``sqrt``, ``log1p``, ``expm1`` are numpy's;
* ``TRUE``/``FALSE`` are ``True``/``False``.

R functions with no direct equivalent are refused with the tiers spelling (`R_ONLY`).
"""

from __future__ import annotations

import re

from tiers.formula._text import caret

#: R function -> the name formulaic knows it by.
RENAMED: dict[str, str] = {
    "factor": "C",
    "as.factor": "C",
    "sqrt": "np.sqrt",
    "log1p": "np.log1p",
    "expm1": "np.expm1",
}

#: R functions tiers cannot read as written, and what to write instead.
R_ONLY: dict[str, str] = {
    "relevel": "to choose the reference level write C(x, contr.treatment('level'))",
    "ordered": "write C(x) (an ordered factor's polynomial contrasts: C(x, contr.poly))",
    "as.numeric": "convert the column to numbers in the data before fitting",
    "as.integer": "convert the column to numbers in the data before fitting",
    "as.character": "write C(x) for a categorical variable",
    "interaction": "write a:b for the interaction of two factors",
    "ns": "write cr(x, df=3) (a natural cubic regression spline) or bs(x, df=3)",
    "offset": (
        "an offset belongs to a generalized linear mixed model: pass family='poisson' (or "
        "'binomial'); in a linear mixed model subtract the offset from the response: 'y - z ~ ...'"
    ),
    "cbind": "a two-column (binomial) response needs a logistic mixed model: pass "
    "family='binomial' (CLI: --family binomial)",
    "scale.default": "write scale(x)",
}

# an R-style name (letters, digits, '.', '_') followed by '(' and not part of a longer name
_CALL = re.compile(r"(?<![A-Za-z0-9_.])([A-Za-z.][A-Za-z0-9._]*)\s*\(")
_BOOL = re.compile(r"(?<![A-Za-z0-9_.])(TRUE|FALSE)(?![A-Za-z0-9_.])")


def _code_spans(text: str) -> list[tuple[int, int]]:
    """(start, stop) of the stretches of ``text`` outside string literals."""
    spans, start, quote, i = [], 0, "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote, start = "", i + 1
        elif ch in "'\"":
            spans.append((start, i))
            quote = ch
        i += 1
    if not quote:
        spans.append((start, len(text)))
    return spans


def translate(expr: str, whole: str, offset: int) -> tuple[str, list[str]]:
    """``expr`` with R spellings replaced by formulaic's, and what was replaced.

    Parameters
    ----------
    expr : str
        A term, a random-effects expression or the response, as written.
    whole, offset : str, int
        The whole formula and where ``expr`` starts in it (for the caret of an error).

    Returns
    -------
    str, list of str
        The translated text and the reasons (empty when nothing changed).

    Raises
    ------
    FormulaError
        An R function with no equivalent (`R_ONLY`), with the tiers spelling.
    """
    reasons: dict[str, None] = {}
    pieces: list[str] = []
    at = 0
    for start, stop in _code_spans(expr):
        pieces.append(expr[at:start])  # a string literal, unchanged
        pieces.append(_translate_code(expr[start:stop], whole, offset + start, reasons))
        at = stop
    pieces.append(expr[at:])
    return "".join(pieces), list(reasons)


def _translate_code(code: str, whole: str, offset: int, reasons: dict[str, None]) -> str:
    for m in _CALL.finditer(code):
        name = m.group(1)
        if name in R_ONLY:
            raise caret(whole, offset + m.start(1), f"{name}() is R's: {R_ONLY[name]}")
    if "^" in code:
        code = code.replace("^", "**")
        reasons["^ is a power in R formulas (** in Python, where ^ is a bitwise XOR)"] = None

    def rename(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in RENAMED:
            return m.group(0)
        reasons[f"R's {name}() is {RENAMED[name]}() in tiers' formulas"] = None
        return m.group(0).replace(name, RENAMED[name], 1)

    code = _CALL.sub(rename, code)
    if _BOOL.search(code):
        reasons["R's TRUE/FALSE are True/False"] = None
        code = _BOOL.sub(lambda m: m.group(1).capitalize(), code)
    return code


def read_as(original: str, translated: str, reasons: list[str]) -> str | None:
    """The note for one translated piece, e.g. ``I(Time^2) read as I(Time**2): ...``."""
    if not reasons:
        return None
    return f"{original.strip()} read as {translated.strip()}: {'; '.join(reasons)}"
