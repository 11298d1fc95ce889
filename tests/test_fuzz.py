"""Property-based fuzzing of `tiers.fit`: odd data and random formulas in both syntaxes.

Every call either returns a result whose basic invariants hold (a finite criterion, every row used
or counted as dropped, one coefficient per name, theta within its bounds) or raises one of tiers'
own errors (`tiers.TiersError`), never anything else (issue 19, item 19). The examples are
derandomized so CI is reproducible; a longer random probe runs with
``TIERS_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` (new examples on every run).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiers
from tiers.errors import TiersError

#: A longer, randomised probe when set (CI runs the derandomized default).
PROBE = os.environ.get("TIERS_FUZZ_EXAMPLES")

FUZZ = settings(
    derandomize=PROBE is None,
    max_examples=int(PROBE or 500),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Group labels: unicode, numeric-looking, with leading zeros, empty-looking.
LABELS = ["a", "b", "école", "東京", "01", "1", "1.0", "2", " ", "NA", "x y"]
#: Pieces of formula that are not column names (syntax the parser must refuse or read).
JUNK = [
    "+",
    "|",
    "||",
    "(",
    ")",
    ":",
    "*",
    "/",
    "0",
    "1",
    "-1",
    "~",
    ",",
    "#",
    "C(",
    "I(x ** 2)",
    "log(x)",
    "np.exp(x)",
    "offset(x)",
    "`a b`",
    "nope",
    "R.g",
    "i.c",
    "c.x",
    "x##c",
    ", cov(un)",
    ", mle",
    ", noconstant",
    "é",
    "1e400",
]


@st.composite
def frames(draw: Any) -> pd.DataFrame:
    """A small frame: a response, grouping columns of odd dtypes, predictors of odd dtypes."""
    n = draw(st.one_of(st.integers(0, 6), st.integers(12, 60)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ngroups = draw(st.integers(1, 8))
    codes = rng.integers(0, ngroups, size=n)
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=8, max_size=8, unique=True))
    g_kind = draw(st.sampled_from(["int", "str", "category", "float", "object"]))
    if g_kind == "int":
        g: Any = codes
    elif g_kind == "str":
        g = np.array(labels, dtype=object)[codes]
    elif g_kind == "category":
        g = pd.Categorical(np.array(labels, dtype=object)[codes])
    elif g_kind == "float":
        g = codes.astype(float)
    else:
        g = np.array([1, "1", 2.5, None, "b", 3, "c", 4], dtype=object)[codes]
    y = rng.normal(size=n) + rng.normal(size=ngroups)[codes] if n else np.zeros(0)
    y_kind = draw(st.sampled_from(["float", "nan", "int", "bool", "const", "text"]))
    y_col: Any = y
    if y_kind == "nan" and n:
        y = y.copy()
        y[rng.random(n) < 0.2] = np.nan
        y_col = y
    elif y_kind == "int":
        y_col = pd.array(np.round(y * 3).astype(int), dtype="Int64")
    elif y_kind == "bool":
        y_col = y > 0
    elif y_kind == "const":
        y_col = np.full(n, 2.0)
    elif y_kind == "text":
        y_col = np.array(["1", "2", "x"] * n, dtype=object)[:n]
    x = rng.normal(size=n)
    x_kind = draw(st.sampled_from(["float", "nullable", "bool", "inf", "tiny"]))
    x_col: Any = x
    if x_kind == "nullable":
        ints = pd.array(np.round(x * 2).astype(int), dtype="Int64")
        if n:
            ints[rng.random(n) < 0.2] = pd.NA
        x_col = ints
    elif x_kind == "bool":
        x_col = x > 0
    elif x_kind == "inf" and n:
        x_col = x.copy()
        x_col[0] = np.inf
    elif x_kind == "tiny":
        x_col = x * 1e-12
    c = pd.Categorical(rng.choice(["lo", "mid", "hi"], size=n))
    frame = pd.DataFrame(
        {
            "y": y_col,
            "g": g,
            "h": rng.integers(0, 3, size=n),
            "x": x_col,
            "z": rng.normal(size=n),
            "c": c,
            "d": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 9, n), unit="D"),
            "s": np.array(labels, dtype=object)[rng.integers(0, 8, size=n)],
        }
    )
    return frame


COLUMNS = ["y", "g", "h", "x", "z", "c", "d", "s"]
#: Fixed-effect terms that can be fitted (in both syntaxes' spelling where they differ).
CLEAN_LME4 = ["x", "z", "c", "x:z", "x * c", "I(z ** 2)", "np.exp(z)", "C(h)", "s"]
CLEAN_STATA = ["x", "z", "i.c", "c.x#c.z", "i.h", "i.s"]
TOKENS = st.one_of(st.sampled_from(COLUMNS), st.sampled_from(JUNK))


@st.composite
def lme4_formulas(draw: Any) -> str:
    """``resp ~ terms + (effects | group)``, from column names and junk."""
    clean = draw(st.booleans())
    responses = ["y"] if clean else ["y", "x", "g", "c", "np.log(y)", "nope", ""]
    response = draw(st.sampled_from(responses))
    fixed = draw(st.lists(st.sampled_from(CLEAN_LME4) if clean else TOKENS, max_size=4))
    effects = draw(
        st.sampled_from(["1", "z", "1 + z", "0 + z"] if clean else ["x", "c", "", "1 +", "x + z"])
    )
    bar = draw(st.sampled_from(["|", "||"]))
    groups = ["g", "h", "g/h", "g:h", "s"] if clean else ["c", "x", "d", "", "g", "h:s"]
    group = draw(st.sampled_from(groups))
    random = [f"({effects} {bar} {group})"]
    if draw(st.booleans()):
        random.append(f"(1 | {draw(st.sampled_from(['g', 'h', 's']))})")
    pieces = fixed + random
    pieces = draw(st.permutations(pieces)) if draw(st.booleans()) else pieces
    return f"{response} ~ " + " + ".join(pieces)


@st.composite
def stata_formulas(draw: Any) -> str:
    """``depvar indepvars || level: slopes, options``, from column names and junk."""
    clean = draw(st.booleans())
    depvar = draw(st.sampled_from(["y"] if clean else ["y", "x", "g", "nope"]))
    indep = draw(st.lists(st.sampled_from(CLEAN_STATA) if clean else TOKENS, max_size=4))
    levels = []
    for _ in range(draw(st.integers(1, 2))):
        level = draw(st.sampled_from(["g", "h", "s"] if clean else ["_all", "c", "", "g"]))
        slopes = draw(
            st.lists(st.sampled_from(["z"] if clean else ["x", "R.g", "c", "i.c", ""]), max_size=1)
        )
        opts = draw(st.sampled_from(["", ", cov(un)", ", cov(ex)", ", noconstant", ", mle"]))
        levels.append(f"|| {level}: {' '.join(slopes)}{opts}")
    return " ".join([depvar, *indep, *levels])


def _check(formula: str, data: pd.DataFrame) -> None:
    """One call: a result that passes the invariants, or a TiersError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = tiers.fit(formula, data)
        except TiersError:
            return
    assert np.isfinite(res.criterion), formula
    assert res.nobs + res.n_dropped == len(data), formula
    assert len(res.beta) == len(res.xnames), formula
    assert np.all(np.isfinite(res.beta)), formula
    assert np.isfinite(res.sigma) and res.sigma > 0, formula
    engine = res.devfun
    assert np.all(res.theta >= engine.theta_lower - 1e-12), formula
    assert np.all(res.theta <= engine.theta_upper + 1e-12), formula


@FUZZ
@given(data=frames(), formula=lme4_formulas())
def test_fuzz_lme4_syntax(data: pd.DataFrame, formula: str) -> None:
    _check(formula, data)


@FUZZ
@given(data=frames(), formula=stata_formulas())
def test_fuzz_stata_syntax(data: pd.DataFrame, formula: str) -> None:
    _check(formula, data)


@settings(
    derandomize=PROBE is None, max_examples=2 * int(PROBE or 500), deadline=None, database=None
)
@given(text=st.lists(TOKENS, min_size=1, max_size=8).map(" ".join))
def test_fuzz_parser_raises_only_formula_errors(text: str) -> None:
    """Any string of tokens parses, or is refused with a FormulaError (never another exception)."""
    try:
        tiers.parse(text)
    except TiersError:
        pass
