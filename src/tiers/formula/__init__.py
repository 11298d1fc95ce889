"""Model formulas: lme4's and Stata's syntax parsed into one `Formula` value (pure syntax, no data)."""

from tiers.formula.parse import COVARIANCES, Covariance, Formula, RandomTerm, Syntax, parse, render

__all__ = ["COVARIANCES", "Covariance", "Formula", "RandomTerm", "Syntax", "parse", "render"]
