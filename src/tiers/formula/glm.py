"""The GLMM parts of a formula, read off before the mixed-model parser sees it.

lme4's ``cbind(successes, failures) ~ ...`` response and ``offset(expr)`` terms, and Stata's
``melogit``/``meprobit``/``mepoisson`` commands with their options ``or``, ``irr``,
``exposure(var)``, ``offset(var)``, ``binomial(var)``, ``intpoints(#)`` and ``laplace``, are taken
out of the text; what remains is an ordinary lme4 or Stata formula for `tiers.formula.parse.parse`.
The evaluation of the expressions against data happens later (`tiers.data.glm_response`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tiers.errors import FormulaError
from tiers.formula._text import caret, split_top

#: The links each GLM family accepts; the first is the default (canonical or customary).
LINKS: dict[str, tuple[str, ...]] = {
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log",),
}

#: Stata's GLMM commands: family and link.
COMMANDS: dict[str, tuple[str, str]] = {
    "melogit": ("binomial", "logit"),
    "meprobit": ("binomial", "probit"),
    "mecloglog": ("binomial", "cloglog"),
    "mepoisson": ("poisson", "log"),
}

_CALL = re.compile(r"^\s*(cbind|offset)\s*\((.*)\)\s*$", re.DOTALL)
_STATA_OPT = re.compile(
    r"(?<![A-Za-z0-9_.])(exposure|offset|binomial|intpoints|intp)\s*\(([^)]*)\)"
    r"|(?<![A-Za-z0-9_.(])(or|irr|laplace)(?![A-Za-z0-9_(])",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class GlmFormula:
    """A formula's GLMM parts and the plain mixed-model formula left after taking them out.

    Attributes
    ----------
    text : str
        The formula as written.
    base : str
        The formula for `tiers.formula.parse.parse`: response = the successes (or the outcome).
    failures : str or None
        lme4's second ``cbind`` column (an expression of columns), else None.
    offsets : tuple of str
        Expressions added to the linear predictor (``log(exposure)``).
    exposure : str or None
        Stata's ``exposure(var)``: ``log(var)`` is added to the linear predictor.
    trials : str or None
        Stata's ``binomial(var)``: the number of trials of each row.
    family, link : str or None
        From a Stata command (``melogit`` is binomial/logit), else None.
    nagq : int or None
        Stata's ``intpoints(#)`` (1 with ``laplace``), else None.
    exponentiate : bool
        Stata's ``or``/``irr``: report exponentiated coefficients.
    """

    text: str
    base: str
    failures: str | None = None
    offsets: tuple[str, ...] = ()
    exposure: str | None = None
    trials: str | None = None
    family: str | None = None
    link: str | None = None
    nagq: int | None = None
    exponentiate: bool = False


def read_glm(text: str) -> GlmFormula:
    """Take the GLMM parts out of ``text`` (lme4 or Stata syntax).

    Raises
    ------
    FormulaError
        A malformed ``cbind``/``offset``, or a Stata GLMM option with a bad argument.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty; write e.g. 'y ~ x + (1 | group)'")
    if "~" in text:
        return _lme4(text)
    return _stata(text)


def _lme4(text: str) -> GlmFormula:
    tilde = text.index("~")
    left, right = text[:tilde], text[tilde + 1 :]
    failures = None
    m = _CALL.match(left)
    if m and m.group(1) == "cbind":
        args = split_top(m.group(2), ",", offset=m.start(2), whole=text)
        if len(args) != 2 or not all(a.strip() for _, a in args):
            raise caret(text, m.start(2), "cbind() takes two columns: cbind(successes, failures)")
        left, failures = args[0][1].strip(), args[1][1].strip()
    kept, offsets = [], []
    for pos, piece in split_top(right, "+", offset=tilde + 1, whole=text):
        om = _CALL.match(piece)
        if om and om.group(1) == "offset":
            if not om.group(2).strip():
                raise caret(text, pos, "offset() needs an expression: offset(log(exposure))")
            offsets.append(om.group(2).strip())
        else:
            kept.append(piece.strip())
    if not kept:
        kept = ["1"]
    base = f"{left.strip()} ~ {' + '.join(kept)}"
    return GlmFormula(text, base, failures=failures, offsets=tuple(offsets))


def _stata(text: str) -> GlmFormula:
    words = text.split(None, 1)
    command = words[0].lower() if words else ""
    if command not in COMMANDS:
        if command in ("meglm", "mixed", "xtmixed", "xtmelogit", "xtlogit", "xtpoisson"):
            raise FormulaError(
                f"{command!r} is not supported as a command; write melogit, meprobit, mecloglog "
                "or mepoisson as the first word, or no command for a linear mixed model"
            )
        return GlmFormula(text, text)
    fam, link = COMMANDS[command]
    body = words[1] if len(words) > 1 else ""
    comma = body.rfind(",")
    head, opts = (body, "") if comma < 0 else (body[:comma], body[comma + 1 :])
    if comma >= 0 and "||" in opts:  # the comma belongs to an earlier level
        head, opts = body, ""
    found: dict[str, str] = {}

    def take(m: re.Match[str]) -> str:
        name = (m.group(1) or m.group(3)).lower()
        found["intpoints" if name == "intp" else name] = (m.group(2) or "").strip()
        return ""

    rest = _STATA_OPT.sub(take, opts).strip().strip(",").strip()
    if "or" in found and link != "logit" or "irr" in found and fam != "poisson":
        bad = "or" if "or" in found else "irr"
        raise FormulaError(
            f"option {bad!r} does not apply to {command}: 'or' (odds ratios) is for melogit, "
            "'irr' (incidence-rate ratios) for mepoisson"
        )
    if ("exposure" in found or "binomial" in found) and not all(
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", found[k])
        for k in ("exposure", "binomial")
        if k in found
    ):
        raise FormulaError("exposure() and binomial() take one variable name")
    nagq = None
    if "intpoints" in found:
        if not found["intpoints"].isdigit() or int(found["intpoints"]) < 1:
            raise FormulaError(
                f"intpoints() takes a positive whole number; got {found['intpoints']!r}"
            )
        nagq = int(found["intpoints"])
    if "laplace" in found:
        if nagq not in (None, 1):
            raise FormulaError("laplace and intpoints(#) contradict each other: keep one")
        nagq = 1
    base = head.strip() + (f", {rest}" if rest else "")
    return GlmFormula(
        text,
        base,
        offsets=(found["offset"],) if "offset" in found else (),
        exposure=found.get("exposure"),
        trials=found.get("binomial"),
        family=fam,
        link=link,
        nagq=nagq,
        exponentiate="or" in found or "irr" in found,
    )
