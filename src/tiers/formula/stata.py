"""Stata's syntax: ``y x || dist: || school: x, covariance(unstructured) reml`` and ``|| _all: R.f``.

Levels are listed outermost first, each nested in the ones before it. Options follow Stata's
``mixed`` (see `tiers.formula.stata_options`): each level's own after its comma, the model's after
the comma of the last level; REML is the default (as lme4's and the seed's ``xtmixed``; Stata's
``mixed`` defaults to ML: write ``mle``).
"""

from __future__ import annotations

import re

from tiers.errors import FormulaError
from tiers.formula._text import caret, check_name, split_top
from tiers.formula.residuals import parse_residuals
from tiers.formula.stata_options import (
    GLOBAL,
    Option,
    classify,
    confidence,
    covariance,
    df_method,
    read_options,
)
from tiers.formula.stata_weights import split_weight, vce, weighting
from tiers.formula.types import Covariance, Formula, RandomTerm


def _stata_varlist(varlist: str, whole: str, offset: int) -> list[str]:
    """Stata factor-variable notation to formulaic terms (i.x, c.x, a#b, a##b)."""
    out = []
    for m in re.finditer(r"\S+", varlist):
        token = m.group(0)
        if token in ("if", "in"):
            raise caret(
                whole,
                offset + m.start(),
                f"Stata's '{token}' qualifier is not supported: select the rows in the data "
                "before fitting",
            )
        if token.startswith("["):
            raise caret(whole, offset + m.start(), "weights are not supported yet by tiers")
        parts = re.split(r"(##|#)", token)
        terms = []
        for part in parts:
            if part in ("#", "##"):
                terms.append(":" if part == "#" else "*")
                continue
            _no_operator(part, whole, offset + m.start())
            if part.lower().startswith("i."):
                terms.append(f"C({check_name(part[2:], whole, offset + m.start(), 'factor')})")
            elif part.lower().startswith("c."):
                terms.append(check_name(part[2:], whole, offset + m.start(), "variable"))
            else:
                terms.append(check_name(part, whole, offset + m.start(), "variable"))
        out.append("".join(terms))
    return out


#: Stata's time-series operators (lags, leads, differences, seasonal differences).
_TS_OPERATOR = re.compile(r"^(?:[LFDS]\d*|[LFDS]\(\S*\))\.", re.IGNORECASE)


def _no_operator(part: str, whole: str, pos: int) -> None:
    """Refuse Stata operators tiers does not read in a varlist: ``R.`` here, ``L.``/``F.``/``D.``."""
    if part[:2].upper() == "R.":
        raise caret(
            whole,
            pos,
            f"{part}: R. declares a crossed factor in the random part ('|| _all: {part}'); in the "
            f"fixed part write i.{part[2:]} for a factor variable",
        )
    if _TS_OPERATOR.match(part):
        raise caret(
            whole,
            pos,
            f"{part}: Stata's time-series operators (L. lag, F. lead, D. difference, S. seasonal "
            "difference) are not supported: create the lagged or differenced column in the data "
            "before fitting",
        )


def _split_comma(piece: str, pos: int, whole: str) -> tuple[str, str, int]:
    """An equation's body, the text of its options and where that text starts in ``whole``."""
    parts = split_top(piece, ",", offset=pos, whole=whole)
    if len(parts) > 2:
        raise caret(whole, parts[2][0] - 1, "a second comma: write all the options after one comma")
    if len(parts) == 1:
        return piece, "", pos + len(piece)
    return parts[0][1], parts[1][1], parts[1][0]


def parse_stata(text: str) -> Formula:
    """Parse ``depvar indepvars || level: [slopes] [, options] ...``; see `tiers.formula.parse.parse`."""
    pieces = split_top(text, "||")
    head_pos, head = pieces[0]
    head_main, head_opts, head_opts_pos = _split_comma(head, head_pos, text)
    head_main, obs_weight = split_weight(head_main, text, head_pos)
    tokens = head_main.split()
    if not tokens:
        raise caret(text, 0, "missing the dependent variable before '||'")
    response = check_name(tokens[0], text, head_pos, "dependent variable")
    first_space = head_main.index(tokens[0]) + len(tokens[0])
    fixed_terms = _stata_varlist(head_main[first_space:], text, head_pos + first_space)
    options = classify(read_options(head_opts, text, head_opts_pos), "fixed", None, text)
    fixed = " + ".join(["0" if "noconstant" in options else "1", *fixed_terms])
    model = {name: opt for name, opt in options.items() if name != "noconstant"}

    random: list[RandomTerm] = []
    level_weights: list[tuple[str, Option]] = []
    prefix: tuple[str, ...] = ()
    for k, (pos, piece) in enumerate(pieces[1:]):
        body, opts, opts_pos = _split_comma(piece, pos, text)
        if ":" not in body:
            lead = pos + len(body) - len(body.lstrip())
            raise caret(text, lead, f"a Stata level needs a colon: write '|| {body.strip()}:'")
        level, _, slopes = body.partition(":")
        level_pos = pos + len(body) - len(body.lstrip())
        level_name = check_name(level, text, level_pos, "level variable")
        last = k == len(pieces) - 2
        lopts = classify(
            read_options(opts, text, opts_pos), "last" if last else "level", level_name, text
        )
        for spec in GLOBAL:
            if spec.name in lopts:
                _no_conflict(model, spec.name, lopts[spec.name], text)
                model[spec.name] = lopts[spec.name]
        cov_opt = lopts.get("covariance")
        level_weights += [(level_name, lopts[w]) for w in ("pweight", "fweight") if w in lopts]
        if level_name == "_all":
            random.append(_crossed(slopes, lopts, text, pos))
            continue
        slope_terms = _stata_varlist(slopes, text, pos + len(level) + 1)
        intercept = "noconstant" not in lopts
        if not slope_terms and not intercept:
            raise caret(
                text,
                lopts["noconstant"].pos,
                f"level {level_name!r} has no effects: noconstant and no slopes (drop the level, "
                "or list the variables whose slopes vary over it before the comma)",
            )
        expr = " + ".join((["1"] if intercept else ["0"]) + slope_terms)
        cov: Covariance = covariance(cov_opt, text) if cov_opt else "independent"
        prefix = (*prefix, level_name)
        random.append(RandomTerm(expr, prefix, level_name, cov))
    if not random:
        raise caret(text, len(text), "no random-effects level after '||'")
    reml = True if "reml" in model else (False if "mle" in model else None)
    level_opt = model.get("level")
    resid_opt = model.get("residuals")
    residuals = None
    if resid_opt is not None:
        try:
            residuals = parse_residuals(resid_opt.value or "")
        except FormulaError as exc:
            raise caret(text, resid_opt.pos, str(exc)) from None
    df_opt = model.get("dfmethod")
    dfmethod = None
    if df_opt is not None:
        dfmethod = df_method(df_opt, text)
        if dfmethod == "kenward-roger" and reml is False:
            raise caret(
                text, df_opt.pos, f"{df_opt.written} needs REML estimation (as in Stata): drop mle"
            )
    return Formula(
        text,
        response,
        fixed,
        tuple(random),
        "stata",
        reml,
        stddeviations="stddeviations" in model,
        level=confidence(level_opt, text) if level_opt else None,
        residuals=residuals,
        weights=weighting(obs_weight, level_weights, model.get("pwscale"), text),
        vce=vce(model.get("vce"), text),
        dfmethod=dfmethod,
    )


def _no_conflict(model: dict[str, Option], name: str, opt: Option, text: str) -> None:
    """``reml`` with ``mle``, or ``variance`` with ``stddeviations``, contradict each other."""
    rivals = {
        "reml": "mle",
        "mle": "reml",
        "variance": "stddeviations",
        "stddeviations": "variance",
    }
    rival = rivals.get(name)
    if rival is not None and rival in model:
        raise caret(
            text, opt.pos, f"{opt.written} contradicts {model[rival].written}: choose one of them"
        )


def _crossed(slopes: str, lopts: dict[str, Option], text: str, pos: int) -> RandomTerm:
    """``|| _all: R.factor``: a crossed factor, identity covariance, outside the nesting."""
    raw = slopes.strip()
    if not raw[:2].upper() == "R.":
        raise caret(text, pos, "'|| _all:' takes a factor written as 'R.varname'")
    if "noconstant" in lopts:
        raise caret(text, lopts["noconstant"].pos, "noconstant does not apply to '|| _all: R.'")
    cov_opt = lopts.get("covariance")
    if cov_opt is not None and covariance(cov_opt, text) != "identity":
        raise caret(
            text,
            cov_opt.pos,
            "'|| _all: R.factor' is fitted with covariance(identity) (Stata's default for R.); "
            "other structures are not supported with R.",
        )
    name = check_name(raw[2:], text, pos, "factor")
    return RandomTerm("1", (name,), name, "identity")
