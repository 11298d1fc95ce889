"""The parsed formula: `Formula` and its `RandomTerm` values (pure syntax, no data).

Both syntaxes produce a `Formula` whose fixed part is a formulaic right-hand side and whose random
part is a tuple of `RandomTerm`. Grouping factors are tuples of columns (their interaction), so
nesting written as ``a/b`` and Stata's implicit nesting both become ``("a", "b")``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from tiers.formula._text import BACKTICKED, NAME
from tiers.formula.residuals import ResidualStructure
from tiers.formula.weighting import VceSpec, WeightSpec

Syntax = Literal["lme4", "stata"]
Covariance = Literal["unstructured", "independent", "exchangeable", "identity"]
#: Denominator-df methods of the fixed effects' t and F tests (Stata's ``dfmethod()``).
DfMethod = Literal["satterthwaite", "kenward-roger"]
COVARIANCES: tuple[str, ...] = ("unstructured", "independent", "exchangeable", "identity")


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
        return re.sub(r"\s+", "", self.expr) in ("1", "1+0", "0+1")


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
    stddeviations : bool
        Stata's display option ``stddeviations``: show SDs and correlations rather than variances
        and covariances in Stata's layout.
    level : float or None
        Stata's ``level(#)`` as a fraction (``level(90)`` is 0.90), else None.
    residuals : ResidualStructure or None
        The residuals' structure within the innermost group (Stata's ``residuals()``, or
        ``tiers.fit(residuals=)``); None for independent residuals of one variance.
    dfmethod : {"satterthwaite", "kenward-roger"} or None
        Stata's ``dfmethod(satterthwaite)`` / ``dfmethod(kroger)``: the summary's fixed effects
        get t tests with these denominator df; None: normal (z) tests, Stata's default.
    notes : tuple of str
        How the text was read where it differs from what was written (R spellings: ``I(x^2)``
        read as ``I(x**2)``, ``factor(x)`` as ``C(x)``); shown with the fit's notes.
    weights : WeightSpec or None
        Weights written in the formula (Stata's ``[fw=w]``, ``[pw=w]``, ``pweight()``).
    vce : VceSpec or None
        Stata's ``vce()`` option.

    The response is a column name or, in lme4's syntax, an expression of columns evaluated as the
    fixed part's terms are (``np.log(Reaction)``, ``log(y + 1)``); see `response_column`.
    """

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    syntax: Syntax
    reml: bool | None = None
    stddeviations: bool = False
    level: float | None = None
    notes: tuple[str, ...] = ()
    residuals: ResidualStructure | None = None
    weights: WeightSpec | None = None
    vce: VceSpec | None = None
    dfmethod: DfMethod | None = None

    @property
    def response_column(self) -> str | None:
        """The response's column when the response is a plain column name, else None."""
        if BACKTICKED.match(self.response):  # `my y`
            return self.response[1:-1]
        return self.response if NAME.match(self.response) else None

    @property
    def group_columns(self) -> tuple[str, ...]:
        """Every column used to define a grouping factor, in first-use order."""
        seen: dict[str, None] = {}
        for term in self.random:
            for col in term.group:
                seen.setdefault(col, None)
        return tuple(seen)

    def with_residuals(self, residuals: ResidualStructure | None) -> Formula:
        """A copy with another residual structure (``text`` unchanged: it is not rendered)."""
        return dataclasses.replace(self, residuals=residuals)

    def with_random(self, random: tuple[RandomTerm, ...]) -> Formula:
        """A copy with other random terms; ``text`` is re-rendered in the same syntax."""
        from tiers.formula.render import render  # rendering needs the types: imported on use

        draft = dataclasses.replace(self, random=random)
        return dataclasses.replace(draft, text=render(draft))
