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

from tiers.errors import FormulaError
from tiers.formula.lme4 import parse_lme4
from tiers.formula.stata import parse_stata
from tiers.formula.types import Formula


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
        return parse_lme4(text)
    if "||" in text:
        return parse_stata(text)
    raise FormulaError(
        f"cannot tell the syntax of {text!r}: write lme4's 'y ~ x + (1 | group)' or Stata's "
        "'y x || group:'"
    )
