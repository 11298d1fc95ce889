"""lme4's syntax: ``y ~ x + (1 | a/b) + (x || g) + (0 + x | g)``."""

from __future__ import annotations

import ast

from tiers.formula._text import BACKTICKED, NAME, caret, check_name, check_syntax, split_top
from tiers.formula.rspell import read_as, translate
from tiers.formula.types import Covariance, Formula, RandomTerm


def parse_lme4(text: str) -> Formula:
    """Parse ``response ~ fixed + (expr | group) ...``; see `tiers.formula.parse.parse`."""
    if text.count("~") > 1:
        raise caret(text, text.index("~", text.index("~") + 1), "more than one '~' in formula")
    _no_comment(text)
    tilde = text.index("~")
    notes: list[str] = []
    response = _response(text[:tilde], text, notes)
    fixed_parts: list[str] = []
    random: list[RandomTerm] = []
    for pos, piece in split_top(text[tilde + 1 :], "+", offset=tilde + 1, whole=text):
        chunk = piece.strip()
        lead = pos + len(piece) - len(piece.lstrip())
        if not chunk:
            raise caret(text, lead, "empty term (two '+' in a row, or a trailing '+')")
        if chunk.startswith("(") and chunk.endswith(")") and "|" in chunk:
            random.extend(_lme4_bar(chunk[1:-1], text, lead + 1, notes))
        elif "|" in chunk:
            raise caret(
                text, lead, f"a random-effects term must be in parentheses: write '({chunk})'"
            )
        else:
            fixed_parts.append(_read(chunk, text, lead, notes))
            check_syntax(fixed_parts[-1], text, lead, f"fixed term {chunk!r}")
    if not random:
        raise caret(
            text,
            len(text),
            "no random-effects term: add one such as '(1 | group)'; for a model without random "
            "effects use tiers.panel.pooled_ols",
        )
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    return Formula(text, response, fixed, tuple(random), "lme4", notes=tuple(notes))


def _no_comment(text: str) -> None:
    """Refuse R's ``#`` comments (outside quotes and backticks): a formula is one expression."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "`'\"":
            quote = ch
        elif ch == "#":
            raise caret(
                text,
                i,
                "'#' starts an R comment, which a formula cannot hold: remove the comment (in "
                "Stata's syntax, without '~', '#' is an interaction: a#b)",
            )


def _read(chunk: str, whole: str, pos: int, notes: list[str]) -> str:
    """A piece of formula with R spellings translated; the note, if any, appended to ``notes``."""
    out, reasons = translate(chunk, whole, pos)
    note = read_as(chunk, out, reasons)
    if note is not None and note not in notes:
        notes.append(note)
    return out.strip()


def _response(left: str, whole: str, notes: list[str]) -> str:
    """The response: a column name, or an expression of columns (``np.log(y)``, ``log(y + 1)``)."""
    name = left.strip()
    if BACKTICKED.match(name):  # kept quoted: `my y` is a column, not an expression
        return name
    if not name or NAME.match(name.strip("`")):
        return check_name(left, whole, 0, "response (left of '~')")
    lead = len(left) - len(left.lstrip())
    expr = _read(name, whole, lead, notes)
    try:
        ast.parse(expr, mode="eval")
    except SyntaxError:
        raise caret(
            whole,
            lead,
            f"cannot read the response {name!r}: write a column name or an expression of columns "
            "such as np.log(y) or log(y + 1)",
        ) from None
    return expr


def _lme4_bar(inner: str, whole: str, offset: int, notes: list[str]) -> list[RandomTerm]:
    double = "||" in inner
    bar = inner.index("||") if double else inner.index("|")
    expr = inner[:bar].strip()
    rhs = inner[bar + (2 if double else 1) :]
    if not expr:
        raise caret(whole, offset + bar, "missing effects left of '|': write '(1 | g)'")
    expr_pos = offset + len(inner[:bar]) - len(inner[:bar].lstrip())
    expr = _read(expr, whole, expr_pos, notes)
    check_syntax(expr, whole, expr_pos, "effects left of '|'")
    rhs_pos = offset + bar + (2 if double else 1)
    if not rhs.strip():
        raise caret(whole, rhs_pos, "missing grouping factor right of '|'")
    levels = [
        tuple(
            check_name(col, whole, rhs_pos + p, "grouping factor")
            for p, col in split_top(part, ":", offset=0)
        )
        for p, part in split_top(rhs, "/", offset=0)
    ]
    covariance: Covariance = "independent" if double else "unstructured"
    terms = []
    # lme4's expandSlash: a/b/c is (1|a) + (1|b:a) + (1|c:b:a); each factor nests in the last.
    prefix: tuple[str, ...] = ()
    for cols in levels:
        group = prefix + cols
        name = ":".join(reversed(group)) if len(levels) > 1 else ":".join(group)
        terms.append(RandomTerm(expr, group, name, covariance))
        prefix = group
    return terms
