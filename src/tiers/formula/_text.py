"""Text helpers shared by the two parsers: splitting outside parentheses, names, caret errors."""

from __future__ import annotations

import re

from tiers.errors import FormulaError

NAME = re.compile(r"^(?:[^\W\d]|\.)[\w.]*$")  # unicode letters too (école)
BACKTICKED = re.compile(r"^`[^`|:]+`$")


def strip_spaces(text: str) -> str:
    return re.sub(r"\s+", "", text)


def caret(text: str, pos: int, message: str) -> FormulaError:
    """A FormulaError quoting the formula with a caret under position ``pos``."""
    shown = text.replace("\n", " ").replace("\t", " ").replace("\r", " ")  # one line, same columns
    return FormulaError(f"{message}\n  {shown}\n  {' ' * max(pos, 0)}^")


def split_top(
    text: str, sep: str, *, offset: int = 0, whole: str | None = None
) -> list[tuple[int, str]]:
    """Split ``text`` on ``sep`` outside parentheses; return (start position, piece) pairs."""
    whole = text if whole is None else whole
    depth = 0
    pieces: list[tuple[int, str]] = []
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise caret(whole, offset + i, "unbalanced ')' in formula")
        elif depth == 0 and text.startswith(sep, i):
            pieces.append((offset + start, text[start:i]))
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0:
        raise caret(whole, offset + len(text), "missing ')' in formula")
    pieces.append((offset + start, text[start:]))
    return pieces


def check_name(name: str, whole: str, pos: int, what: str) -> str:
    quoted = BACKTICKED.match(name.strip())  # `my g`: any name without a backtick, | or :
    name = name.strip().strip("`")
    if quoted and name.strip():
        return name
    if not name or not NAME.match(name):
        raise caret(whole, pos, f"expected a column name for the {what}, got {name!r}")
    return name


#: Terms that formulaic always accepts: plain names (or 0/1) joined by ``+``, ``*`` or ``:``. Most
#: formulas are of this kind; they skip formulaic, whose import costs 0.1-0.4 s on a first fit.
_PLAIN = re.compile(r"^\s*(?:[01]|[^\W\d][\w.]*)(?:\s*[-+*:]\s*(?:[01]|[^\W\d][\w.]*))*\s*$")

#: formulaic marks the position of a syntax error between these two characters.
_MARK = "\u29db"


def check_syntax(expr: str, whole: str, pos: int, what: str) -> None:
    """Raise a caret `FormulaError` when formulaic cannot parse ``expr`` (which starts at ``pos``).

    formulaic's own message (its operator names, its colour codes) is rewritten in tiers' words,
    with the formula quoted and the position of the problem marked in the whole formula.
    """
    if _PLAIN.match(expr):
        return
    from formulaic import Formula as _Formula
    from formulaic.errors import FormulaicError

    try:
        _Formula(expr)
    except FormulaicError as exc:
        text = str(exc)
        lines = text.split("\n")
        marked = lines[-1]
        at = marked.find(_MARK)
        reason = lines[0].strip().rstrip(".")
        if "insuffient arguments" in reason or "insufficient arguments" in reason:
            op = reason.split("`")[1] if "`" in reason else "+"
            reason = f"the operator '{op}' is missing a term on one side"
        elif "quote context" in reason or "matching context" in reason:
            reason = "unbalanced parenthesis or quote"
        elif "incorrectly used" in reason:
            reason = reason.replace("incorrectly used", "misplaced")
        reason = reason.replace("`", "'")
        raise caret(whole, pos + max(at, 0), f"cannot read the {what}: {reason}") from None
    except Exception as exc:  # formulaic raises plain exceptions for some inputs
        raise caret(whole, pos, f"cannot read the {what}: {exc}") from None
