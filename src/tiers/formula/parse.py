"""Model formulas: lme4's and Stata's syntax, parsed into one `Formula` value.

Pure syntax, no data. Two spellings of the same model are accepted:

* lme4: ``perform ~ tutoring + (1 | dist_id/school_id/teach_id)``, also ``(1|a) + (1|a:b)``,
  ``(x | g)``, ``(x || g)``, ``(0 + x | g)``;
* Stata: ``perform tutoring || dist_id: || school_id: x, covariance(unstructured)``, levels listed
  outermost first, each nested in the ones before it; ``|| _all: R.factor`` for a crossed factor.

Both produce a `Formula` whose fixed part is a formulaic right-hand side and whose random part is a
tuple of `RandomTerm`. Grouping factors are tuples of columns (their interaction), so nesting written
as ``a/b`` and Stata's implicit nesting both become ``("a", "b")``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tiers.errors import FormulaError

Syntax = Literal["lme4", "stata"]
Covariance = Literal["unstructured", "independent", "exchangeable", "identity"]
COVARIANCES: tuple[str, ...] = ("unstructured", "independent", "exchangeable", "identity")

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


@dataclass(frozen=True, slots=True)
class RandomTerm:
    """One random-effects term: effects ``expr`` varying over the groups of ``group``.

    Attributes
    ----------
    expr : str
        The left-hand side as formulaic understands it, e.g. ``"1"``, ``"1 + x"``, ``"0 + x"``.
    group : tuple of str
        Columns whose interaction forms the grouping factor (``("batch", "cask")`` for
        ``batch:cask`` or for ``cask`` nested in ``batch``).
    name : str
        The factor's display name: lme4's (``"cask:batch"``) or Stata's (``"cask"``).
    covariance : str
        Structure of the term's covariance matrix: ``unstructured`` (lme4's ``|``), ``independent``
        (lme4's ``||``), ``exchangeable`` or ``identity``.
    """

    expr: str
    group: tuple[str, ...]
    name: str
    covariance: Covariance = "unstructured"

    @property
    def is_intercept_only(self) -> bool:
        """True for ``(1 | g)``: a scalar random intercept."""
        return _strip(self.expr) in ("1", "1+0", "0+1")


@dataclass(frozen=True, slots=True)
class Formula:
    """A parsed mixed-model formula.

    Attributes
    ----------
    text : str
        The formula as the user wrote it.
    response : str
        Name of the response column.
    fixed : str
        Right-hand side of the fixed part in formulaic syntax (``"1 + tutoring"``).
    random : tuple of RandomTerm
        The random-effects terms, in the order written.
    syntax : {"lme4", "stata"}
        Which syntax was used; output echoes it (e.g. when proposing a corrected model).
    reml : bool or None
        Estimation method requested inside the formula (Stata's ``, reml`` / ``, mle``), else None.
    """

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    syntax: Syntax
    reml: bool | None = None

    @property
    def group_columns(self) -> tuple[str, ...]:
        """Every column used to define a grouping factor, in first-use order."""
        seen: dict[str, None] = {}
        for term in self.random:
            for col in term.group:
                seen.setdefault(col, None)
        return tuple(seen)

    def with_random(self, random: tuple[RandomTerm, ...]) -> Formula:
        """A copy with other random terms; ``text`` is re-rendered in the same syntax."""
        draft = Formula(self.text, self.response, self.fixed, random, self.syntax, self.reml)
        return Formula(render(draft), self.response, self.fixed, random, self.syntax, self.reml)


def _strip(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _caret(text: str, pos: int, message: str) -> FormulaError:
    """A FormulaError quoting the formula with a caret under position ``pos``."""
    return FormulaError(f"{message}\n  {text}\n  {' ' * max(pos, 0)}^")


def _split_top(
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
                raise _caret(whole, offset + i, "unbalanced ')' in formula")
        elif depth == 0 and text.startswith(sep, i):
            pieces.append((offset + start, text[start:i]))
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0:
        raise _caret(whole, offset + len(text), "missing ')' in formula")
    pieces.append((offset + start, text[start:]))
    return pieces


def _check_name(name: str, whole: str, pos: int, what: str) -> str:
    name = name.strip().strip("`")
    if not name or not _NAME.match(name):
        raise _caret(whole, pos, f"expected a column name for the {what}, got {name!r}")
    return name


def parse(text: str) -> Formula:
    """Parse a formula in lme4's or Stata's syntax.

    Parameters
    ----------
    text : str
        ``"y ~ x + (1 | g)"`` (lme4) or ``"y x || g:"`` (Stata). A ``~`` means lme4 syntax.

    Returns
    -------
    Formula

    Raises
    ------
    FormulaError
        With the formula quoted and the position of the problem marked.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty; write e.g. 'y ~ x + (1 | group)'")
    if "~" in text:
        return _parse_lme4(text)
    if "||" in text:
        return _parse_stata(text)
    raise FormulaError(
        f"cannot tell the syntax of {text!r}: write lme4's 'y ~ x + (1 | group)' or Stata's "
        "'y x || group:'"
    )


# --------------------------------------------------------------------------------------- lme4 --


def _parse_lme4(text: str) -> Formula:
    if text.count("~") > 1:
        raise _caret(text, text.index("~", text.index("~") + 1), "more than one '~' in formula")
    tilde = text.index("~")
    response = _check_name(text[:tilde], text, 0, "response (left of '~')")
    fixed_parts: list[str] = []
    random: list[RandomTerm] = []
    for pos, piece in _split_top(text[tilde + 1 :], "+", offset=tilde + 1, whole=text):
        chunk = piece.strip()
        lead = pos + len(piece) - len(piece.lstrip())
        if not chunk:
            raise _caret(text, lead, "empty term (two '+' in a row, or a trailing '+')")
        if chunk.startswith("(") and chunk.endswith(")") and "|" in chunk:
            random.extend(_lme4_bar(chunk[1:-1], text, lead + 1))
        elif "|" in chunk:
            raise _caret(
                text, lead, f"a random-effects term must be in parentheses: write '({chunk})'"
            )
        else:
            fixed_parts.append(chunk)
    if not random:
        raise _caret(
            text,
            len(text),
            "no random-effects term: add one such as '(1 | group)'; for a model without random "
            "effects use tiers.panel.pooled_ols",
        )
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    return Formula(text, response, fixed, tuple(random), "lme4")


def _lme4_bar(inner: str, whole: str, offset: int) -> list[RandomTerm]:
    double = "||" in inner
    bar = inner.index("||") if double else inner.index("|")
    expr = inner[:bar].strip()
    rhs = inner[bar + (2 if double else 1) :]
    if not expr:
        raise _caret(whole, offset + bar, "missing effects left of '|': write '(1 | g)'")
    rhs_pos = offset + bar + (2 if double else 1)
    if not rhs.strip():
        raise _caret(whole, rhs_pos, "missing grouping factor right of '|'")
    levels = [
        tuple(
            _check_name(col, whole, rhs_pos + p, "grouping factor")
            for p, col in _split_top(part, ":", offset=0)
        )
        for p, part in _split_top(rhs, "/", offset=0)
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


# -------------------------------------------------------------------------------------- Stata --


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
                terms.append(f"C({_check_name(part[2:], whole, offset + m.start(), 'factor')})")
            elif part.lower().startswith("c."):
                terms.append(_check_name(part[2:], whole, offset + m.start(), "variable"))
            else:
                terms.append(_check_name(part, whole, offset + m.start(), "variable"))
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
    raise _caret(
        whole, pos, f"unknown covariance structure {value!r}; valid: {', '.join(COVARIANCES)}"
    )


def _parse_stata(text: str) -> Formula:
    pieces = _split_top(text, "||")
    head_pos, head = pieces[0]
    head_main, _, head_opts = head.partition(",")
    tokens = head_main.split()
    if not tokens:
        raise _caret(text, 0, "missing the dependent variable before '||'")
    response = _check_name(tokens[0], text, head_pos, "dependent variable")
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
            raise _caret(text, lead, f"a Stata level needs a colon: write '|| {body.strip()}:'")
        level, _, slopes = body.partition(":")
        level_pos = pos + len(body) - len(body.lstrip())
        level_name = _check_name(level, text, level_pos, "level variable")
        lopts = _stata_options(opts, text, pos + len(body))
        if level_name == "_all":
            # || _all: R.factor -- a crossed factor, identity covariance, outside the nesting.
            raw = slopes.strip()
            if not raw[:2].upper() == "R.":
                raise _caret(text, pos, "'|| _all:' takes a factor written as 'R.varname'")
            name = _check_name(raw[2:], text, pos, "factor")
            random.append(RandomTerm("1", (name,), name, "identity"))
            continue
        slope_terms = _stata_varlist(slopes, text, pos + len(level) + 1)
        intercept = "noconstant" not in lopts
        if not slope_terms and not intercept:
            raise _caret(
                text, pos, f"level {level_name!r} has no effects: noconstant and no slopes"
            )
        expr = " + ".join((["1"] if intercept else ["0"]) + slope_terms)
        default: Covariance = "independent"
        cov_key = next((k for k in lopts if len(k) >= 3 and "covariance".startswith(k)), None)
        cov = _stata_covariance(lopts[cov_key], text, pos) if cov_key else default
        prefix = (*prefix, level_name)
        random.append(RandomTerm(expr, prefix, level_name, cov))
    if not random:
        raise _caret(text, len(text), "no random-effects level after '||'")
    return Formula(text, response, fixed, tuple(random), "stata", reml)


# -------------------------------------------------------------------------------- rendering --


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
