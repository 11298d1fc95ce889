"""Inference with a residual structure: which structures nest, for LR tests.

What a larger model's structure adds to a smaller one's (for LR tests).

Residual structures nest as special cases (each pair tested on the same residual groups):

* independent residuals of one variance are AR(1) with phi = 0, CAR(1) with phi -> 0,
  exchangeable with r = 0, unstructured with equal SDs and zero correlations, and any structure
  with its SD ratios at 1;
* a structure without ``by`` is the same structure with its SD ratios at 1;
* AR(1), Toeplitz, MA and exchangeable residuals over the occasions of ``time`` are unstructured
  ones; a Toeplitz (or MA) structure of a lower order is one of a higher order (the lag
  correlations, or the moving-average coefficients, beyond its order at 0, inside their range);
  an MA is a Toeplitz of the same or a higher order (the same lags, its correlations a subset).

Only CAR(1)'s phi = 0 lies on the boundary of its range (0 < phi < 1): AR(1)'s phi = 0, an
exchangeable r = 0 (its range is -1/(m-1) < r < 1) and SD ratios of 1 are inside theirs, so the
usual chi2 applies to them (Self and Liang 1987 for the boundary case).
"""

from __future__ import annotations

import dataclasses

from tiers.errors import ComparisonError
from tiers.formula.residuals import ResidualStructure
from tiers.inference.vctest import VarianceDifference
from tiers.results.result import FitResult


def _words(spec: ResidualStructure | None) -> str:
    return "independent residuals" if spec is None else f"{spec.describe()} residuals"


def _nested(s0: ResidualStructure | None, s1: ResidualStructure) -> bool:
    if s0 is None:
        return True
    if s0.by is not None and s0.by != s1.by:
        return False
    if s0.group != s1.group:
        return False
    if s0.kind == "independent":
        return s1.by == s0.by or s1.kind in ("unstructured", "banded") and s0.by == s1.time
    if s0.kind == s1.kind or (s0.kind, s1.kind) == ("ma", "toeplitz"):
        return s0.time == s1.time and s0.order <= s1.order
    return (
        s1.kind == "unstructured"
        and s0.kind in ("ar1", "exchangeable", "toeplitz", "ma", "banded")
        and s0.by is None
        and (s0.time in (None, s1.time))
    )


def with_residual_difference(
    var: VarianceDifference, m0: FitResult, m1: FitResult
) -> VarianceDifference:
    """``var`` with what m1's residual structure adds to m0's (parameters, boundary, words).

    Raises
    ------
    ComparisonError
        The structures do not nest, or their residual groups differ.
    """
    l0, l1 = m0.design.residuals, m1.design.residuals
    s0 = None if l0 is None else l0.spec
    s1 = None if l1 is None else l1.spec
    if s0 == s1:
        return var
    if (
        s1 is None
        or not _nested(s0, s1)
        or (l0 is not None and l1 is not None and (l0.group_name != l1.group_name))
    ):
        raise ComparisonError(
            f"the residual structures are not nested: {_words(s0)} is not a special case of "
            f"{_words(s1)} (same residual groups, the smaller model's structure obtained by "
            "fixing some of the larger one's parameters)"
        )
    n0 = 0 if l0 is None else l0.params.n_rho
    assert l1 is not None
    added = l1.params.n_rho - n0
    # a parameter added at a null value on its boundary (CAR(1)'s phi = 0)
    boundary = int(any(l1.params.boundary_null()) and (s0 is None or s0.kind == "independent"))
    words = f"{_words(s1)} in place of {_words(s0)} ({added} parameter(s)"
    words += ", CAR(1)'s phi tested at 0, on the boundary)" if boundary else ")"
    unknown = var.unknown
    if boundary and var.n_boundary:
        unknown = unknown or "a residual correlation and a variance on the boundary together"
    return dataclasses.replace(
        var,
        n_params=var.n_params + added,
        n_boundary=var.n_boundary + boundary,
        unknown=unknown,
        added=(*var.added, words),
    )
