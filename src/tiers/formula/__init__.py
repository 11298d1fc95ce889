"""Model formulas: lme4's and Stata's syntax parsed into one `Formula` value (pure syntax, no data).

`types` (the values), `lme4` and `stata` (the two syntaxes; `stata_options` for the options of
Stata's ``mixed``, `rspell` for R spellings in lme4's), `parse` (which one a text is written in),
`render` (a formula written back as text).
"""

from tiers.formula.parse import parse
from tiers.formula.render import render, render_nested
from tiers.formula.types import COVARIANCES, Covariance, Formula, RandomTerm, Syntax

__all__ = [
    "COVARIANCES",
    "Covariance",
    "Formula",
    "RandomTerm",
    "Syntax",
    "parse",
    "render",
    "render_nested",
]
