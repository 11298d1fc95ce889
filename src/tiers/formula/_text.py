"""Text helpers shared by the two parsers: splitting outside parentheses, names, caret errors."""

from __future__ import annotations

import re

from tiers.errors import FormulaError

NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


def strip_spaces(text: str) -> str:
    return re.sub(r"\s+", "", text)


def caret(text: str, pos: int, message: str) -> FormulaError:
    """A FormulaError quoting the formula with a caret under position ``pos``."""
    return FormulaError(f"{message}\n  {text}\n  {' ' * max(pos, 0)}^")


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
    name = name.strip().strip("`")
    if not name or not NAME.match(name):
        raise caret(whole, pos, f"expected a column name for the {what}, got {name!r}")
    return name
