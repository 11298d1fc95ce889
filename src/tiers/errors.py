"""Errors and warnings raised by tiers.

One small hierarchy so callers can catch ``TiersError`` for anything the library refuses to do, and
the CLI can turn each into a one-line message with a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class TiersError(Exception):
    """Base class: tiers understood the request and refuses it for a stated reason."""


class FormulaError(TiersError, ValueError):
    """The model formula cannot be parsed, or names a term that cannot be built.

    The message quotes the formula and marks the position of the problem where one is known.
    """


class DataError(TiersError, ValueError):
    """The data cannot support the model.

    An unknown or non-numeric column, missing ids, too few groups, no rows left after dropping
    missing values, or a malformed file.
    """


class NestingError(TiersError, ValueError):
    """The grouping structure contradicts the declared model.

    Levels that are not nested, or two levels that partition the rows identically (variance
    components not identified).
    """


class ComparisonError(TiersError, ValueError):
    """Two fits cannot be compared as asked.

    For instance different rows, or REML fits with different fixed effects.
    """


class DesignError(TiersError, ValueError):
    """A simulation or study design is invalid (negative SD, zero units, too many rows, ...)."""


class StudyError(TiersError, ValueError):
    """A study request cannot be run.

    An unknown estimator, an id that is not a level, a model the design cannot support, or an output
    folder holding a different study.
    """


class OutputError(TiersError, OSError):
    """An output file or folder cannot be written (a bad path, a read-only folder, a full disk).

    Raised before the work when the path is bad; when a write fails midway no partial file is left.
    """


class TiersWarning(UserWarning):
    """Base class of the warnings tiers emits; each is also kept as text on the result."""


class ConvergenceWarning(TiersWarning):
    """The optimizer stopped without certifying a local optimum (gradient too large)."""


class SingularFitWarning(TiersWarning):
    """A variance component was estimated at zero (a boundary, or singular, fit)."""


class IdentificationWarning(TiersWarning):
    """A variance component is weakly or not identified by this design."""


class LinearProbabilityWarning(TiersWarning):
    """The response takes only the values 0 and 1, so a linear probability model is fitted.

    Fitted values can fall outside [0, 1] and the residuals are not normal; logistic mixed models
    (Stata's ``melogit``, lme4's ``glmer``) are planned.
    """


class SeparationWarning(TiersWarning):
    """A predictor separates a binary outcome (its GLMM coefficient diverges)."""


class InferenceError(TiersError, ValueError):
    """An inference cannot be computed for this fit as asked.

    For instance Kenward-Roger's method on a fit by ML (it is defined for REML), or on a design
    whose linked random effects are too many for its dense matrices.
    """
